"""Helpers shared by the pass tests (and the sharded scenarios they run).

No jax import at module level: importing this module starts nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import numpy as np

import arrays


@contextlib.contextmanager
def fast_xla():
  """XLA with most optimizations off (`jax_disable_most_optimizations`).

  The rewrite under test happens before XLA; XLA's own optimizations only
  cost compile time here (about 3x), so numeric comparisons compile without
  them. Tests of the compiled artefact itself (memory) keep XLA's defaults.
  """
  import jax
  old = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", old)


def with_fast_xla(test):
  @functools.wraps(test)
  def wrapper(*args, **kwargs):
    with fast_xla():
      return test(*args, **kwargs)
  return wrapper


@dataclasses.dataclass(frozen=True)
class Config:
  """One option set of the op and the kind of labels and weights to draw."""

  options: dict
  labels: str = "ids"          # ids | ids_out_of_range | probs | probs_unnormalized
  weights: str = "with_zeros"  # ones | with_zeros


def to_numpy(tree):
  import jax
  return jax.tree.map(np.asarray, tree)


def assert_close(actual, expected, *, rtol, atol_rel, what):
  """`arrays.assert_close` with explicit tolerances, for a rewritten program
  against the same program unrewritten: the dtypes must also match and every
  value must be finite."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
  assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
  assert np.all(np.isfinite(actual)), f"{what}: non-finite values {actual}"
  arrays.assert_close(actual, expected, what=what, rtol=rtol, atol_rel=atol_rel,
                      atol_floor=1e-30)


def host_devices_env(devices: int) -> dict:
  """The environment for a subprocess whose JAX sees `devices` CPU devices
  (XLA's host device count is fixed when JAX initialises): the processes of
  a distributed job, or a test whose point is a fresh process."""
  import os
  flags = os.environ.get("XLA_FLAGS", "")
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip()}


def run_results_script(argv, *, devices: int, cwd: str, timeout: float = 600) -> dict:
  """Runs `python *argv` with `devices` host CPU devices; returns the JSON of
  its last `RESULTS {json}` line, failing with its output if there is none.
  For the tests whose point is a fresh process (a persistent cache shared by
  processes); a multi-device test otherwise runs in the pytest process, which
  has 8 host devices (tests/conftest.py)."""
  import json
  import subprocess
  import sys
  proc = subprocess.run([sys.executable, *argv], env=host_devices_env(devices), cwd=cwd,
                        capture_output=True, text=True, timeout=timeout)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")]
  assert proc.returncode == 0 and lines, (
      f"subprocess failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
  return json.loads(lines[-1][len("RESULTS "):])
