"""Hostile inputs (issue 14): every route gives the reference's numbers, NaN and
inf included, or the op refuses the input with a clear error before compiling.

Routes (`ROUTES`): the dense reference under `jax.jit` (the arbiter), plain
`jax.jit` of the op (the primitives' chunked lowering), the composite left to
XLA (its decomposition), `gshard_op.jit`'s default pipeline, and explicit
`gshard-chunk-softmax` (small uneven vocab chunks and token blocks),
`gshard-fuse-fwd-bwd` and, on 8 host devices (tests/conftest.py's),
`gshard-shard-vocab` on a vocab-sharded embedding.

Each route computes every output field and the gradients w.r.t. inputs and
embedding of `avg_xent + z_loss + sum(c * per_example_xent)`; `assert_same`
compares them with NaN where the reference has NaN, the same infinities, and
the finite values to float32 accuracy.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pass_testing import fast_xla

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ROUTES = ("reference", "plain", "composite", "default", "chunk", "fuse", "shard")
PIPELINES = {
    "chunk": "gshard-chunk-softmax{vocab-chunk=5 token-chunk=3}",
    "fuse": "gshard-fuse-fwd-bwd{token-chunk=3},gshard-chunk-softmax",
    "shard": "gshard-shard-vocab{vocab-chunk=3},gshard-chunk-softmax",
}
SHARD_DEVICES = 8


# --- the routes -----------------------------------------------------------------------------------

def _step(options: dict, implementation: str):
  """Every output field and the gradients of a loss using every differentiable
  per-token output, for `x[N, M]`, `e[V, M]`, labels, weights `w[N, 1]` and
  per-token coefficients `c[N]`."""
  from gshard_op import shared_embedding_softmax

  def outputs(x, e, ids, probs, w):
    return shared_embedding_softmax(x, e, w, ids, probs, implementation=implementation,
                                    **options)

  def loss(x, e, ids, probs, w, c):
    out = outputs(x, e, ids, probs, w)
    return out.avg_xent + out.z_loss + jnp.sum(c * out.per_example_xent)

  def step(x, e, ids, probs, w, c):
    return dict(outputs(x, e, ids, probs, w)), jax.grad(loss, (0, 1))(x, e, ids, probs, w, c)

  return step


def run_route(route: str, arrays: dict, options: dict):
  """`(outputs dict, (d_x, d_embedding))` of `route` as NumPy arrays."""
  import gshard_op
  args = [arrays[k] for k in ("x", "e", "ids", "probs", "w", "c")]
  if route == "reference":
    fn = jax.jit(_step(options, "reference"))
  elif route == "plain":
    fn = jax.jit(_step(options, "composite"))
  elif route == "composite":
    with gshard_op.lowering("composite"):
      compiled = jax.jit(_step(options, "composite")).lower(*args).compile()
    return jax.tree.map(np.asarray, compiled(*args))
  elif route == "default":
    fn = gshard_op.jit(_step(options, "composite"))
  else:
    fn = gshard_op.jit(_step(options, "composite"), pipeline=PIPELINES[route])
  return jax.tree.map(np.asarray, fn(*args))


def assert_same(actual, expected, what: str, rtol: float = 2e-5):
  """Same shape and dtype kind; NaN exactly where expected; the same
  infinities; finite values within `rtol` of the scale."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
  if np.issubdtype(expected.dtype, np.integer):
    np.testing.assert_array_equal(actual, expected, err_msg=what)
    return
  a, e = actual.astype(np.float64), expected.astype(np.float64)
  np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"{what}: NaN positions")
  inf = np.isinf(e)
  np.testing.assert_array_equal(np.isinf(a), inf, err_msg=f"{what}: inf positions")
  np.testing.assert_array_equal(a[inf], e[inf], err_msg=f"{what}: infinities")
  finite = np.isfinite(e)
  scale = float(np.max(np.abs(e[finite]), initial=0.0))
  np.testing.assert_allclose(a[finite], e[finite], rtol=rtol, atol=rtol * max(scale, 1e-30),
                             err_msg=what)


def assert_route_matches(result, want, route: str) -> None:
  out, (d_x, d_e) = result
  want_out, (want_dx, want_de) = want
  assert set(out) == set(want_out)
  for name in want_out:
    assert_same(out[name], want_out[name], f"{route}: {name}")
  assert_same(d_x, want_dx, f"{route}: d_inputs", rtol=1e-4)
  assert_same(d_e, want_de, f"{route}: d_embedding", rtol=1e-4)


# --- the cases ------------------------------------------------------------------------------------

def _arrays(n=6, m=16, v=24, *, labels="ids", seed=0, positive_x=False):
  rng = np.random.default_rng(seed)
  if positive_x:
    x = rng.uniform(50.0, 100.0, (n, m))
  else:
    x = 2.0 * rng.standard_normal((n, m))
  ids = rng.integers(0, v, (n, 1)).astype(np.int32)
  probs = None
  if labels == "probs":
    probs = rng.dirichlet(np.ones(v), n).astype(np.float32)
    ids = None
  return dict(x=x.astype(np.float32), e=rng.standard_normal((v, m)).astype(np.float32),
              ids=ids, probs=probs, w=rng.uniform(0.5, 1.5, (n, 1)).astype(np.float32),
              c=rng.standard_normal(n).astype(np.float32))


def _neg_inf_chunk(**kw):
  """Classes 0..4 (the first vocab chunk of `PIPELINES["chunk"]`) have logit
  -inf for every token: inputs in [50, 100] against rows of -1e37 overflow
  (while their gradients, about 1e37 times a cotangent, do not)."""
  a = _arrays(positive_x=True, **kw)
  a["e"][:5] = -1e37
  return a


def _pos_inf_class(**kw):
  """Class 7 has logit +inf for every token."""
  a = _arrays(positive_x=True, **kw)
  a["e"][7] = 1e37
  return a


def _nan_rows(**kw):
  """Rows 9 and 3 of the embedding are NaN: every token's argmax is 3."""
  a = _arrays(**kw)
  a["e"][[9, 3]] = np.nan
  return a


SMOOTH_Z = dict(label_smoothing_prob=0.1, z_loss_weight=0.01)
CASES = {
    # name: (arrays factory, options)
    "empty_batch": (functools.partial(_arrays, n=0), {}),
    "empty_batch_probs_everything": (functools.partial(_arrays, n=0, labels="probs"),
                                     dict(SMOOTH_Z, soft_cap_logits=3.0, logits_abs_max=2.5)),
    "empty_batch_weight_denominator": (
        functools.partial(_arrays, n=0),
        dict(use_tgt_labels_size_as_loss_denominator=False, z_loss_weight=0.1)),
    "neg_inf_chunk": (_neg_inf_chunk, {}),
    "neg_inf_chunk_smoothing": (_neg_inf_chunk, SMOOTH_Z),
    "neg_inf_chunk_probs": (functools.partial(_neg_inf_chunk, labels="probs"), {}),
    "neg_inf_chunk_probs_smoothing": (functools.partial(_neg_inf_chunk, labels="probs"),
                                      SMOOTH_Z),
    "pos_inf_logit": (_pos_inf_class, {}),
    "pos_inf_logit_probs_smoothing": (functools.partial(_pos_inf_class, labels="probs"),
                                      SMOOTH_Z),
    # A cap well above the finite logits: only class 7 saturates (no ties).
    "pos_inf_logit_soft_cap": (_pos_inf_class, dict(soft_cap_logits=1000.0, z_loss_weight=0.01)),
    "nan_embedding_rows": (_nan_rows, {}),
    "nan_embedding_rows_clip": (_nan_rows, dict(logits_abs_max=2.0)),
}
LOCAL_ROUTES = tuple(r for r in ROUTES if r != "shard")


@functools.lru_cache(maxsize=None)
def case_arrays(name: str) -> dict:
  return CASES[name][0]()


@functools.lru_cache(maxsize=None)
def route_result(name: str, route: str):
  with fast_xla():  # the semantics under test are fixed before XLA optimizes
    return run_route(route, case_arrays(name), CASES[name][1])


def reference_result(name: str):
  """The outputs of the dense reference and the gradients of its
  `per_token_grad` (the gradient composite's decomposition). JAX's autodiff of
  the dense forward agrees with the latter on finite data
  (`test_reference_autodiff_agrees_with_the_gradient_decomposition`), not on
  the NaN pattern of NaN-poisoned gradients."""
  outputs, _ = route_result(name, "reference")
  _, grads = route_result(name, "composite")
  return outputs, grads


def test_cases_are_what_they_claim():
  """The reference is non-finite where each case says, as the rules say: a
  zero target adds nothing, a label logit of -inf gives +inf, `lse = +inf`
  gives +inf unless the label's own logit is the +inf (NaN), NaN wins argmax."""
  labels = case_arrays("neg_inf_chunk")["ids"][:, 0]
  out, _ = reference_result("neg_inf_chunk")
  assert np.all(np.isneginf(out["logits"][:, :5])) and np.all(np.isfinite(out["logits"][:, 5:]))
  np.testing.assert_array_equal(np.isposinf(out["per_example_xent"]), labels < 5)
  assert np.all(np.isfinite(out["per_example_xent"][labels >= 5]))
  out, _ = reference_result("neg_inf_chunk_smoothing")
  assert np.all(np.isposinf(out["per_example_xent"]))  # every target > 0 meets a -inf
  labels = case_arrays("pos_inf_logit")["ids"][:, 0]
  out, _ = reference_result("pos_inf_logit")
  assert np.all(out["per_example_argmax"] == 7)
  np.testing.assert_array_equal(np.isnan(out["per_example_xent"]), labels == 7)
  assert np.all(np.isposinf(out["per_example_xent"][labels != 7]))
  out, _ = reference_result("pos_inf_logit_soft_cap")
  assert np.all(np.isfinite(out["per_example_xent"])) and np.all(out["logits"][:, 7] == 1000.0)
  assert np.all(out["per_example_argmax"] == 7)
  out, _ = reference_result("nan_embedding_rows")
  assert np.all(out["per_example_argmax"] == 3) and np.all(np.isnan(out["per_example_xent"]))
  out, grads = reference_result("empty_batch")
  assert out["per_example_xent"].shape == (0,) and np.isnan(out["avg_xent"])
  assert grads[0].shape == (0, 16) and np.all(grads[1] == 0)


@pytest.mark.parametrize("route", LOCAL_ROUTES[1:])
@pytest.mark.parametrize("name", list(CASES))
def test_route_matches_reference(name, route):
  assert_route_matches(route_result(name, route), reference_result(name), route)


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith(("empty", "neg_inf"))]
                         + ["pos_inf_logit_soft_cap"])
def test_reference_autodiff_agrees_with_the_gradient_decomposition(name):
  assert_route_matches(route_result(name, "reference"), reference_result(name), "reference")


def shard_route(name: str):
  """`(rewritten text, (outputs, (d_x, d_embedding)))` of the shard route: the
  embedding placed vocab-sharded on an 8-device "model" mesh."""
  import gshard_op
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  assert jax.device_count() == SHARD_DEVICES, jax.device_count()
  mesh = jax.make_mesh((SHARD_DEVICES,), ("model",), axis_types=(AxisType.Auto,))
  arrays, options = case_arrays(name), CASES[name][1]
  args = [arrays[k] for k in ("x", "e", "ids", "probs", "w", "c")]
  args[1] = jax.device_put(args[1], NamedSharding(mesh, P("model", None)))
  fn = gshard_op.jit(_step(options, "composite"), pipeline=PIPELINES["shard"])
  with fast_xla():  # as `route_result`: the semantics are fixed before XLA optimizes
    return fn.lower(*args).as_text(), jax.tree.map(np.asarray, fn(*args))


@pytest.mark.parametrize("name", list(CASES))
def test_shard_route_matches_reference(host_devices, name):
  text, outputs = shard_route(name)
  assert "stablehlo.composite" not in text
  assert text.count("gshard-shard-vocab: vocab over") >= 2, "the shard pass left a composite"
  assert_route_matches(outputs, reference_result(name), "shard")


# --- validation before compiling ------------------------------------------------------------------

def _op(**kw):
  from gshard_op import shared_embedding_softmax
  a = _arrays(n=4, m=8, v=10)
  return shared_embedding_softmax(a["x"], a["e"], a["w"], kw.pop("ids", a["ids"]), **kw)


@pytest.mark.parametrize("option", ["soft_cap_logits", "logits_abs_max", "z_loss_weight"])
@pytest.mark.parametrize("value", [1e39, 1e-46])
def test_option_not_representable_in_float32_is_refused(option, value):
  with pytest.raises(ValueError, match=re.escape(f"{option} = {value!r} is not representable")):
    _op(**{option: value})


def test_vocab_beyond_int32_is_refused_before_compiling():
  from gshard_op import shared_embedding_softmax
  x = jax.ShapeDtypeStruct((4, 8), jnp.float32)
  e = jax.ShapeDtypeStruct((2**31, 8), jnp.float32)
  ids = jax.ShapeDtypeStruct((4, 1), jnp.int32)
  with pytest.raises(ValueError, match=r"num_classes = 2147483648 exceeds 2\*\*31 - 1"):
    jax.eval_shape(lambda x, e, ids: shared_embedding_softmax(x, e, jnp.ones((4, 1)), ids),
                   x, e, ids)


def _ids_case():
  """Ids 2**32 + 3 and friends against V = 10: out of range, not 3."""
  a = _arrays(n=4, m=8, v=10)
  wide = np.array([[2**32 + 3], [1], [-(2**32) + 2], [2**40]], np.int64)
  narrow = np.array([[-1], [1], [-1], [-1]], np.int32)
  return a, wide, narrow


def test_int64_ids_beyond_int32_are_out_of_range_with_x64_off():
  from gshard_op import shared_embedding_softmax
  assert not jax.config.jax_enable_x64
  a, wide, narrow = _ids_case()
  for implementation in ("reference", "composite"):
    got = shared_embedding_softmax(a["x"], a["e"], a["w"], wide, implementation=implementation)
    want = shared_embedding_softmax(a["x"], a["e"], a["w"], narrow,
                                    implementation=implementation)
    assert_same(got.per_example_xent, want.per_example_xent, implementation)
    assert float(got.per_example_xent[0]) == 0.0  # zero target: zero cross-entropy


X64_SCRIPT = """
import jax, numpy as np, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from gshard_op import shared_embedding_softmax
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 8)).astype(np.float32)
e = rng.standard_normal((10, 8)).astype(np.float32)
w = np.ones((4, 1), np.float32)
narrow = shared_embedding_softmax(x, e, w, np.array([[-1], [1], [-1], [-1]], np.int32))
for dtype in (np.int64, np.uint64):
  ids = np.array([[2**32 + 3], [1], [2**33], [2**63 + 5 if dtype == np.uint64 else -2**40]],
                 dtype)
  for form in (ids, jnp.asarray(ids)):
    for f in (shared_embedding_softmax, jax.jit(shared_embedding_softmax)):
      got = f(x, e, w, form)
      assert got.per_example_xent.dtype == np.float32
      np.testing.assert_array_equal(np.asarray(got.per_example_xent),
                                    np.asarray(narrow.per_example_xent))
      assert float(got.per_example_xent[0]) == 0.0
print("OK")
"""


def test_int64_and_uint64_ids_beyond_int32_are_out_of_range_with_x64_on():
  # A fresh process: x64 mode is process-wide, and this one runs with it off.
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
  proc = subprocess.run([sys.executable, "-c", X64_SCRIPT], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize("budget", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["gshard-chunk-softmax", "gshard-fuse-fwd-bwd",
                                  "gshard-shard-vocab"])
def test_non_finite_memory_budget_is_refused_by_the_pipeline(name, budget):
  from gshard_op import passes
  with pytest.raises(ValueError, match="memory-budget-mib must be finite and > 0"):
    passes.parse_pipeline(f"{name}{{memory-budget-mib={budget}}}")


@pytest.mark.parametrize("budget", [math.nan, math.inf])
def test_non_finite_memory_budget_is_refused_by_jit(budget):
  import gshard_op
  a = _arrays(n=4, m=8, v=10)
  with pytest.raises(ValueError, match="memory.budget.mib"):
    gshard_op.jit(_step({}, "composite"), memory_budget_mib=budget)(
        a["x"], a["e"], a["ids"], None, a["w"], a["c"])


@pytest.mark.parametrize("budget", ["nan", "inf"])
def test_non_finite_memory_budget_is_a_usage_error_of_gshard_opt(tmp_path, budget):
  # A fresh process: the command line tool's exit status and stderr are the point.
  path = tmp_path / "empty.mlir"
  path.write_text("module {}\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
  proc = subprocess.run(
      [sys.executable, "-m", "gshard_op.passes.driver", str(path),
       f"--pass-pipeline=gshard-chunk-softmax{{memory-budget-mib={budget}}}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, (proc.returncode, proc.stderr)
  assert "memory-budget-mib must be finite" in proc.stderr


# --- composites that break the contract -----------------------------------------------------------

def _composite_module(*, attributes: str | None = None, logit_scale: str = "2.500000e-01",
                      n: int = 8, m: int = 16, v: int = 50, version: int = 1) -> str:
  """A forward composite of contract `version` (1 by default: the passes still
  read it), with the given attributes."""
  attrs = attributes or (
      "label_smoothing_prob = 0.000000e+00 : f64, "
      f"logit_scale = {logit_scale} : f64, logits_abs_max = 0.000000e+00 : f64, "
      "soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, "
      "z_loss_weight = 0.000000e+00 : f64")
  types = f"tensor<{n}x{m}xf32>, tensor<{v}x{m}xf32>, tensor<{n}xi32>"
  results = f"tensor<{n}xf32>, tensor<{n}xi32>, tensor<{n}xf32>, tensor<{n}xf32>"
  return f"""module {{
  func.func public @main(%x: tensor<{n}x{m}xf32>, %e: tensor<{v}x{m}xf32>, %l: tensor<{n}xi32>)
      -> tensor<{n}xf32> {{
    %r:4 = stablehlo.composite "gshard.shared_embedding_softmax" %x, %e, %l {{
        composite_attributes = {{{attrs}}}, decomposition = @decomp, version = {version} : i32}}
      : ({types}) -> ({results})
    return %r#0 : tensor<{n}xf32>
  }}
  func.func private @decomp(%x: tensor<{n}x{m}xf32>, %e: tensor<{v}x{m}xf32>,
                            %l: tensor<{n}xi32>) -> ({results}) {{
    %z = stablehlo.constant dense<0.0> : tensor<{n}xf32>
    %i = stablehlo.constant dense<0> : tensor<{n}xi32>
    return %z, %i, %z, %z : {results}
  }}
}}"""


def _rewrite_fails(text: str, match: str) -> None:
  from gshard_op import passes
  from jax._src.interpreters import mlir as jax_mlir
  from jaxlib.mlir import ir
  with jax_mlir.make_ir_context():
    module = ir.Module.parse(text)
    for name in ("gshard-chunk-softmax", "gshard-inline"):
      with pytest.raises(passes.PassError, match=match):
        passes.run_pipeline(module, name)
    assert "stablehlo.composite" in str(module)  # left as it was


def test_well_formed_composite_is_rewritten():
  """The module the failing cases below break is rewritten as it stands."""
  from gshard_op import passes
  from jax._src.interpreters import mlir as jax_mlir
  from jaxlib.mlir import ir
  with jax_mlir.make_ir_context():
    module = ir.Module.parse(_composite_module())
    passes.run_pipeline(module, "gshard-chunk-softmax")
    assert "stablehlo.composite" not in str(module)


@pytest.mark.parametrize("key, value, expected", [
    ("soft_cap_logits", "1 : i32", "an f64 float"),
    ("logit_scale", "\"0.25\"", "an f64 float"),
    ("use_tgt_labels_size_as_loss_denominator", "1.0 : f64", "a bool"),
])
def test_attribute_of_the_wrong_type_is_named(key, value, expected):
  good = dict(label_smoothing_prob="0.0 : f64", logit_scale="0.25 : f64",
              logits_abs_max="0.0 : f64", soft_cap_logits="0.0 : f64",
              use_tgt_labels_size_as_loss_denominator="true", z_loss_weight="0.0 : f64")
  good[key] = value
  attributes = ", ".join(f"{k} = {v}" for k, v in good.items())
  _rewrite_fails(_composite_module(attributes=attributes),
                 rf"composite attribute '{key}' must be {expected}, got ")


_V2_ATTRIBUTES = ("label_smoothing_prob = 0.0 : f64, logit_scale = 0.25 : f64, "
                  "logits_abs_max = 0.0 : f64, soft_cap_logits = 0.0 : f64, "
                  "use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.0 : f64")


@pytest.mark.parametrize("precision, match", [
    (None, r"composite_attributes lacks 'precision' \(a string\)"),
    ("1 : i32", r"composite attribute 'precision' must be a string"),
    ('"FASTEST"', r"bad composite_attributes: precision must be a jax.lax.Precision"),
])
def test_version_2_needs_a_precision_the_passes_know(precision, match):
  attributes = _V2_ATTRIBUTES + ("" if precision is None else f", precision = {precision}")
  _rewrite_fails(_composite_module(attributes=attributes, version=2), match)


def test_logit_scale_other_than_the_decompositions_is_refused():
  _rewrite_fails(_composite_module(logit_scale="3.000000e-01"),
                 r"logit_scale = 0\.3 disagrees with in_features\*\*-0\.5 = 0\.25 \(M = 16\)")


def test_vocab_beyond_int32_in_a_composite_is_refused():
  _rewrite_fails(_composite_module(v=2**31),
                 r"V=2147483648 classes must be at most 2\*\*31 - 1")

