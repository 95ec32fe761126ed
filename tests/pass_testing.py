"""Helpers shared by the pass tests (and the sharded scenarios they launch).

No jax import at module level: `shard_cases.py` must set XLA_FLAGS before jax
starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import numpy as np


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
  """`|a - e| <= atol_rel * max|e| + rtol * |e|`; integers must be equal."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
  assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
  if np.issubdtype(expected.dtype, np.integer):
    np.testing.assert_array_equal(actual, expected, err_msg=what)
    return
  actual, expected = actual.astype(np.float64), expected.astype(np.float64)
  assert np.all(np.isfinite(actual)), f"{what}: non-finite values {actual}"
  scale = float(np.max(np.abs(expected))) if expected.size else 0.0
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=max(atol_rel * scale, 1e-30),
                             err_msg=what)
