"""`tools/device_check.py` on this CPU: it says there is no accelerator, checks
the routes with the kernels in Pallas's interpreter, exits 0, and marks the
device's sections of its JSON unmeasured. Its benchmark worker and table, which
only a device runs in full, run here at a tiny shape so that a lent device's
minutes are not spent on a bug the CPU could have found.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "device_check.py")
UNMEASURED = "unmeasured: no accelerator"


@pytest.fixture(scope="module")
def device_check():
  """The tool as a module (importing it runs nothing)."""
  spec = importlib.util.spec_from_file_location("device_check", TOOL)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's answer")
def test_without_an_accelerator_exits_0_and_marks_the_device_unmeasured(tmp_path):
  proc = subprocess.run([sys.executable, TOOL, "--out", str(tmp_path)], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr[-4000:]}"
  assert proc.stdout.startswith("No accelerator: JAX's default backend is cpu")

  report = json.loads((tmp_path / "device_check.json").read_text())
  assert report["ok"] is True and report["failures"] == []
  assert report["accelerator"]["present"] is False
  assert report["accelerator"]["note"] == UNMEASURED
  assert report["environment"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  for section in ("accelerator_tests", "routes", "benchmark"):
    assert report[section] == {"status": "unmeasured", "note": UNMEASURED, "results": None}

  # The interpret-mode checks: every route in both dtypes, the kernels used
  # (not declined) on the Pallas route, each within tolerance of dense.
  rows = report["interpret_checks"]["results"]
  assert {(r["route"], r["dtype"]) for r in rows} == {
      (route, dtype) for route in ("plain jit", "default", "fused", "pallas")
      for dtype in ("float32", "bfloat16")}
  for r in rows:
    assert r["ok"] is True, r
    assert max(r["errors"].values()) <= r["tolerance"]
    assert r["kernels"] is (r["route"] == "pallas"), r

  table = (tmp_path / "device_check.md").read_text()
  assert table in proc.stdout
  assert "| pallas | 48x320x1000 | float32 | highest | yes |" in table
  assert table.count(UNMEASURED) >= 3


def test_benchmark_worker_and_table_at_a_tiny_shape(device_check, tmp_path):
  """The device's benchmark path: each candidate in a fresh process (the
  Pallas one in interpret mode here), ratios, and the table's rows."""
  deadline = time.monotonic() + 300
  results = device_check.benchmark([(64, 40, 300)], "interpret", 1, deadline)
  rows = {r["candidate"]: r for r in results[0]["rows"]}
  assert list(rows) == ["dense", "floor", "jit", "default", "pallas", "xla passes",
                        "pallas wide"]
  for name, r in rows.items():
    assert "error" not in r, (name, r)
    assert r["median_ms"] > 0 and len(r["times_ms"]) == 1 and r["temp_bytes"] is not None
    assert "peak_bytes" in r and "step_peak_bytes" in r  # None on the CPU, bytes on a device
  assert rows["dense"]["ratio_to_dense"] == 1.0
  assert any(p.startswith("gshard-pallas: platform=interpret") for p in rows["pallas"]["plans"])
  assert abs(rows["pallas"]["loss"] - rows["dense"]["loss"]) <= 1e-4 * abs(rows["dense"]["loss"])

  report = {"accelerator": {"present": True, "backend": "gpu", "device_kind": "test"},
            "environment": {"jax": jax.__version__},
            "interpret_checks": device_check.skipped("on the device"),
            "accelerator_tests": {"status": "passed", "note": "3 passed", "results": {}},
            "routes": {"status": "measured", "note": None, "results": []},
            "benchmark": {"status": "measured", "note": None, "results": results},
            "wall_s": 1.0}
  report["failures"] = device_check.failures_of(report)
  report["ok"] = not report["failures"]
  table = device_check.markdown(report)
  assert report["ok"], report["failures"]
  for name in rows:
    assert f"| 64x40x300 | {name} |" in table
  assert "Result: all checks passed" in table


def test_the_device_times_what_the_aot_matrix_compiled(device_check):
  """One list (tools/aot_targets.py): the benchmark's anchor shapes and its
  routes are the ones tools/aot_check.py compiles ahead of time, and the
  device is named by its matrix target."""
  aot_targets = device_check.aot_targets
  assert device_check.bench.parse_shapes(device_check.ANCHOR_SHAPES) == list(
      aot_targets.ANCHOR_SHAPES.values())
  candidates = device_check.bench_candidates("cuda")
  timed = {c["route"]: c for c in candidates if c.get("route")}
  assert set(timed) == {name for name, r in aot_targets.ROUTES.items() if not r.mesh}
  assert timed["pallas"]["pipeline"] == aot_targets.ROUTES["pallas"].pipeline_for("cuda")
  assert timed["gshard_op.jit"]["pipeline"] is None  # gshard_op.jit's own default
  assert (timed["jit"]["kind"], timed["reference"]["kind"]) == ("plain", "dense")
  kinds = {"NVIDIA H100 80GB HBM3": "h100", "NVIDIA A100-SXM4-80GB": "a100", "NVIDIA L4": "l4",
           "NVIDIA L40S": None, "TPU v5 lite": "tpu-v5e", "TPU v6 lite": "tpu-v6e", "cpu": None}
  assert {k: aot_targets.target_of_device_kind(k) for k in kinds} == kinds


@pytest.mark.parametrize("budget", ["0", "-5", "nan", "inf", "-inf", "soon"])
def test_budget_must_be_a_positive_finite_number(device_check, capsys, budget):
  with pytest.raises(SystemExit) as exit_info:
    device_check.main([f"--budget-s={budget}"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert f"--budget-s: must be a positive finite number of seconds, got '{budget}'" in err


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's interpret-mode checks")
def test_nothing_run_is_a_failure_not_a_pass(device_check, tmp_path, capsys):
  """A budget too small for any check: every route is skipped, and the tool
  says so and exits 1, never 'all checks passed'."""
  code = device_check.main(["--budget-s", "1e-6", "--out", str(tmp_path)])
  report = json.loads((tmp_path / "device_check.json").read_text())
  assert code == 1 and report["ok"] is False
  assert all(r["ok"] is None for r in report["interpret_checks"]["results"])
  assert report["failures"] == [
      "nothing ran: every check was skipped (is --budget-s too small?)"]
  out = capsys.readouterr().out
  assert "all checks passed" not in out and "Result: FAILED: nothing ran" in out
