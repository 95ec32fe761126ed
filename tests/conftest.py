"""Shared fixtures and helpers: random cases with per-case seeds, tolerances.

Every test draws its data from `rng`, a generator seeded from the test's own node
id, so each parametrized case gets fresh inputs that are nevertheless the same
on every run (a failure reproduces). Tolerances are per dtype (`TOLERANCES`) and
per kind of quantity (values or gradients); the absolute part is relative to the
largest magnitude of the expected array, so it fits tensors of any scale.
"""

from __future__ import annotations

import functools
import os
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import gshard_op  # noqa: E402
import numpy_reference as npref  # noqa: E402
from arrays import assert_close  # noqa: E402  (one closeness check: tests/arrays.py)
from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles: `ci` (the default) keeps property tests to a few
# examples, since each compiles several programs, and draws the same ones on
# every run (derandomized: a CI failure reproduces); `pytest
# --hypothesis-profile=thorough` (or HYPOTHESIS_PROFILE=thorough) draws many,
# freshly. Tests that pin `max_examples` in their own `@settings` keep it.
settings.register_profile("ci", max_examples=8, deadline=None, print_blob=True,
                          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=60, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The slow tier, which `make test-fast` (`pytest -m 'not slow'`) leaves out and
# `make test` runs: whole files or single tests (by function name, all their
# cases) that start subprocesses with many host devices, run the tools, the
# README's blocks or other frameworks (Keras, transformers): each took from
# seconds to over a minute on 2 cores.
SLOW_FILES = {"test_device_check.py", "test_hf.py", "test_keras.py", "test_multiprocess.py",
              "test_properties.py", "test_readme.py", "test_sharded_primitive.py",
              "test_tools.py"}
SLOW_TESTS = {
    "test_hardening.py": {"test_shard_route_matches_reference"},
    "test_partitioning.py": {"test_eight_host_devices",
                             "test_persistent_cache_hits_only_with_the_pointer_removed"},
    "test_shard_pass.py": {"test_sharded_step_matches_reference"},
}


def pytest_collection_modifyitems(config, items):
  for item in items:
    name = item.path.name
    if name in SLOW_FILES or getattr(item, "originalname", None) in SLOW_TESTS.get(name, ()):
      item.add_marker(pytest.mark.slow)


def seed_of(text: str) -> int:
  return zlib.crc32(text.encode())


@pytest.fixture
def rng(request) -> np.random.Generator:
  """A generator seeded from the test's node id: fresh per case, reproducible."""
  return np.random.default_rng(seed_of(request.node.nodeid))


def assert_argmax_ok(actual, logits64, *, tol: float, what: str):
  """`actual` indexes a maximal logit (up to `tol`, for float32 near-ties)."""
  actual = np.asarray(actual)
  flat = logits64.reshape(-1, logits64.shape[-1])
  idx = actual.reshape(-1)
  assert actual.shape == logits64.shape[:-1], f"{what}: shape {actual.shape}"
  assert np.all((idx >= 0) & (idx < flat.shape[-1])), f"{what}: index out of range: {idx}"
  picked = flat[np.arange(flat.shape[0]), idx]
  best = flat.max(axis=-1)
  bad = np.nonzero(picked < best - tol)[0]
  assert bad.size == 0, (f"{what}: tokens {bad.tolist()} picked {idx[bad].tolist()} "
                         f"but argmax is {flat[bad].argmax(-1).tolist()}")


def np_options(options: dict) -> npref.Options:
  return npref.Options(**options)


@functools.lru_cache(maxsize=None)
def _jitted(options_items: tuple, implementation: str, losses: tuple):
  """One jitted function: every output field and the gradients of `losses`."""
  options = dict(options_items)

  def output(x, e, w, ids, probs):
    return gshard_op.shared_embedding_softmax(
        x, e, w, ids, probs, implementation=implementation, **options)

  def loss(name, x, e, w, ids, probs, coeffs):
    return npref.loss_value(name, output(x, e, w, ids, probs), coeffs)

  def run(x, e, w, ids, probs, coeffs):
    grads = {name: jax.grad(functools.partial(loss, name), argnums=(0, 1))(
        x, e, w, ids, probs, coeffs) for name in losses}
    return output(x, e, w, ids, probs), grads

  return jax.jit(run)


def run_op(case, options: dict, implementation: str, coeffs: dict, losses=npref.LOSSES):
  coeffs = {k: jnp.asarray(v, jnp.float32) for k, v in coeffs.items()}
  fn = _jitted(tuple(sorted(options.items())), implementation, tuple(losses))
  out, grads = fn(case.inputs, case.embedding, case.class_weights, case.class_ids,
                  case.class_probabilities, coeffs)
  return jax.device_get(out), jax.device_get(grads)


# A float32 logit within this distance of the clip bound may land on either side
# of it in float32 and float64 (the gradient mask differs there).
KINK_MARGIN = 1e-5


def clip_kink_gap(case, opts: npref.Options) -> float:
  """The distance of the nearest capped logit to the clip bound (inf: no clip)."""
  if not opts.logits_abs_max:
    return float("inf")
  capped = npref.capped_logits(npref.raw_logits(case.inputs, case.embedding), opts)
  return float(np.min(np.abs(np.abs(capped) - opts.logits_abs_max), initial=np.inf))


def check_against_numpy(case, options: dict, implementation: str, rng, *,
                        losses=npref.LOSSES):
  """Every output field and every loss's gradients vs the float64 model."""
  dtype = case.inputs.dtype
  opts = np_options(options)
  if dtype == np.float32:
    assert clip_kink_gap(case, opts) > KINK_MARGIN, (
        "test data: a logit sits on the clip bound, where float32 and float64 may "
        "disagree on the gradient mask; pick other data")
  coeffs = npref.make_coefficients(rng, case.batch, case.num_classes)
  out, grads = run_op(case, options, implementation, coeffs, losses)
  expected = npref.forward(case.inputs, case.embedding, case.class_weights,
                           opts=opts, **case.labels())

  batch, v = case.batch, case.num_classes
  assert isinstance(out, gshard_op.SoftmaxOutput)
  shapes = dict(logits=batch + (v,), log_probs=batch + (v,), per_example_argmax=batch,
                per_example_xent=batch, per_example_weight=batch + (1,), total_xent=(),
                total_weight=(), avg_xent=(), avg_xent_weight=(), z_loss=())
  for name, shape in shapes.items():
    assert out[name].shape == shape, f"{name}: shape {out[name].shape} != {shape}"
  for name in ("logits", "log_probs", "per_example_xent"):
    assert out[name].dtype == dtype, f"{name}: dtype {out[name].dtype} != {dtype}"
  assert out["per_example_argmax"].dtype == np.int32
  for name in ("per_example_weight", "total_xent", "total_weight", "avg_xent", "avg_xent_weight",
               "z_loss"):  # the scalar losses are float32 whatever the inputs' dtype
    assert out[name].dtype == np.float32, f"{name}: dtype {out[name].dtype}"

  for name in ("logits", "log_probs", "per_example_xent", "total_xent", "total_weight",
               "avg_xent", "avg_xent_weight", "z_loss"):
    assert_close(out[name], expected[name], dtype, f"{implementation} {name}")
  np.testing.assert_array_equal(out["per_example_weight"], expected["per_example_weight"],
                                err_msg="per_example_weight")
  if not opts.z_loss_weight:
    assert float(out["z_loss"]) == 0.0
  argmax_tol = 1e-4 * max(1.0, float(np.abs(expected["logits"]).max()))
  if dtype != np.float32:
    argmax_tol = 3e-2 * max(1.0, float(np.abs(expected["logits"]).max()))
  assert_argmax_ok(out["per_example_argmax"], expected["logits"], tol=argmax_tol,
                   what=f"{implementation} per_example_argmax")

  for name in losses:
    want_x, want_e = npref.loss_grads(name, case.inputs, case.embedding, case.class_weights,
                                      opts=opts, coeffs=coeffs, **case.labels())
    got_x, got_e = grads[name]
    assert got_x.dtype == case.inputs.dtype and got_e.dtype == case.embedding.dtype
    assert_close(got_x, want_x, dtype, f"{implementation} d{name}/d_inputs", kind="grads")
    assert_close(got_e, want_e, dtype, f"{implementation} d{name}/d_embedding", kind="grads")
  return out, grads, expected


# --- no keras.json left in HOME (issue 30) -----------------------------------------------

def _keras_json() -> str:
  return os.path.join(os.path.expanduser("~"), ".keras", "keras.json")


def pytest_sessionstart(session):
  session.config._keras_json_before = os.path.exists(_keras_json())


def pytest_sessionfinish(session, exitstatus):
  """The suite fails when it leaves a keras.json naming tensorflow in a HOME that
  had none: something imported Keras on its default backend (run `make test`
  with an empty HOME to see it)."""
  path = _keras_json()
  if getattr(session.config, "_keras_json_before", True) or not os.path.exists(path):
    return
  with open(path) as f:
    if "tensorflow" in f.read():
      sys.stderr.write(f"\nthe test session left {path} naming tensorflow in a HOME that had "
                       "none: a test imported Keras without gshard_op.keras or a HOME of its "
                       "own\n")
      session.exitstatus = pytest.ExitCode.TESTS_FAILED
