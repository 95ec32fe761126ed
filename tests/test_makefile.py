"""The Makefile's install stamp follows `TORCH`: `make test TORCH=...` on an
existing .venv reinstalls with the new torch instead of ignoring it.

Side-effect free: `make -n` (print, run nothing) with the checkout's Makefile in
an empty folder, where a fake `.venv` stands in for an installed one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _dry_run(folder, *args) -> str:
  # Under `make test` (CI) this runs inside make: a sub-make would inherit
  # MAKEFLAGS and print "Entering directory" lines, so it gets neither.
  env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
  proc = subprocess.run(["make", "--no-print-directory", "-n", "-f",
                         os.path.join(ROOT, "Makefile"), "pytest", *args],
                        cwd=folder, capture_output=True, text=True, timeout=60, env=env)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


def _install_as_the_dry_run_says(folder, out: str) -> None:
  """Makes the stamps a real install would leave: the torch record that the
  dry run names, then `.venv/.installed`, newer than both prerequisites."""
  (record,) = re.findall(r"> (\.venv/\.torch-\d+)$", out, re.M)
  (folder / ".venv").mkdir(exist_ok=True)
  for stale in (folder / ".venv").glob(".torch-*"):
    stale.unlink()
  (folder / record).write_text("")
  (folder / ".venv" / ".installed").write_text("")
  os.utime(folder / "pyproject.toml", (1, 1))
  os.utime(folder / record, (2, 2))


def test_a_different_torch_reinstalls(tmp_path):
  (tmp_path / "pyproject.toml").write_text("")
  first = _dry_run(tmp_path)
  assert "-m venv .venv" in first and "'torch==" in first  # fresh: the default torch
  _install_as_the_dry_run_says(tmp_path, first)
  assert _dry_run(tmp_path).split("\n")[:-1] == [".venv/bin/python -m pytest -q tests"]

  other = _dry_run(tmp_path, "TORCH=torch==9.9 --index-url https://example.invalid")
  assert "-m venv .venv" in other
  assert "pip install --quiet torch==9.9 --index-url https://example.invalid" in other
  assert "'torch==2" not in other                     # TORCH replaces the default step
  assert "-m venv .venv" in _dry_run(tmp_path, "TORCH_VERSION=9.9.9")

  # Installed with TORCH=x, the default on the next plain `make` reinstalls too.
  _install_as_the_dry_run_says(tmp_path, _dry_run(tmp_path, "TORCH=x"))
  assert "pip install" not in _dry_run(tmp_path, "TORCH=x")
  assert "-m venv .venv" in _dry_run(tmp_path)
