"""`logit_scale`: Praxis's `M**-0.5` on the inputs (None), or a float on the float32 logits.

Every route against the float64 NumPy model (`numpy_reference`, which takes
the scale independently of the code under test), values and both gradients
of a loss mixing the mean and per-token fields: plain `jax.jit` (chunked
lowering, a tiny budget), the default pipeline, each named pass, the
composite that XLA inlines, the vocab-sharded route on 8 host devices
(tests/conftest.py's), and torch. bf16 inputs are compared
with float64 math of their bf16 values: with the scale on the float32 logits
nothing rounds it, so `avg_xent` (float32) is that math to 1e-5 relative,
where a scale rounded to bf16 (or inputs scaled in bf16) would be off by
about 1e-3.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

DEVICES = 8
SCALES = (1.0, 0.37)
OPTIONS = dict(z_loss_weight=0.1, label_smoothing_prob=0.1, soft_cap_logits=8.0)


def _routes():
  import jax

  import gshard_op

  def under(mode=None, **kw):
    def route(f):
      jitted = jax.jit(f)

      def run(*args):
        with gshard_op.lowering(mode, **kw):
          return jitted(*args)
      return run
    return route

  return {
      "plain jax.jit, tiny budget": under(memory_budget_mib=0.0005),
      "composite, XLA inlines": under("composite"),
      "default pipeline": lambda f: gshard_op.jit(f),
      "gshard-chunk-softmax": lambda f: gshard_op.jit(
          f, pipeline="gshard-chunk-softmax{vocab-chunk=16 token-chunk=8}"),
      "gshard-fuse-fwd-bwd": lambda f: gshard_op.jit(
          f, pipeline="gshard-fuse-fwd-bwd{token-chunk=8},gshard-chunk-softmax"),
      "gshard-inline": lambda f: gshard_op.jit(f, pipeline="gshard-inline"),
      "gshard-pallas{platform=interpret}": lambda f: gshard_op.jit(
          f, pipeline="gshard-pallas{platform=interpret block-tokens=8 block-vocab=16},"
                      "gshard-chunk-softmax"),
  }


ROUTES = ("plain jax.jit, tiny budget", "composite, XLA inlines", "default pipeline",
          "gshard-chunk-softmax", "gshard-fuse-fwd-bwd", "gshard-inline",
          "gshard-pallas{platform=interpret}")


def _case(rng, dtype, in_features=16, num_classes=40, batch=(3, 8)):
  """Inputs and embedding of std 0.5 (logits of a few units at scale 1),
  ids (some out of range), weights with zeros, per-token coefficients."""
  import jax.numpy as jnp
  x = (0.5 * rng.standard_normal(batch + (in_features,))).astype(np.float32)
  e = (0.5 * rng.standard_normal((num_classes, in_features))).astype(np.float32)
  ids = rng.integers(-2, num_classes, batch + (1,)).astype(np.int32)
  w = rng.uniform(0.5, 1.5, batch + (1,)).astype(np.float32)
  w[0, :2] = 0.0
  coeffs = rng.standard_normal(batch).astype(np.float32)
  return jnp.asarray(x, dtype), jnp.asarray(e, dtype), ids, w, coeffs


def _step(w, ids, coeffs, logit_scale, options=OPTIONS):
  import jax
  import jax.numpy as jnp

  import gshard_op

  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, w, ids, logit_scale=logit_scale, **options)
    total = out.avg_xent + out.z_loss + jnp.sum(coeffs * out.per_example_xent.astype(jnp.float32))
    return total, (out.avg_xent, out.per_example_xent)

  return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)


def _expected(x, e, w, ids, coeffs, logit_scale, options=OPTIONS):
  """float64 value, avg_xent and gradients of `_step`'s loss on x's and e's values."""
  import numpy_reference as npref
  opts = npref.Options(**options, logit_scale=logit_scale)
  x64, e64 = npref.as_f64(x), npref.as_f64(e)
  ref = npref.forward(x64, e64, w, ids, opts=opts)
  value = ref["avg_xent"] + ref["z_loss"] + np.sum(coeffs * ref["per_example_xent"])
  cot = npref.loss_cotangents("avg_xent_plus_z_loss", x64, e64, w, ids, opts=opts)
  cot["g_xent"] = cot["g_xent"] + coeffs
  d_x, d_e = npref.backward(x64, e64, ids, opts=opts, **cot)
  return value, ref["avg_xent"], d_x, d_e


# --- every route, float32 and bf16 ----------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("logit_scale", SCALES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_route_equals_float64(rng, route, logit_scale, dtype):
  import jax.numpy as jnp

  from arrays import assert_close
  x, e, ids, w, coeffs = _case(rng, jnp.dtype(dtype))
  (value, (avg_xent, xent)), (d_x, d_e) = _routes()[route](
      _step(w, ids, coeffs, logit_scale))(x, e)
  want_value, want_avg, want_dx, want_de = _expected(x, e, w, ids, coeffs, logit_scale)

  assert avg_xent.dtype == jnp.float32 and value.dtype == jnp.float32
  assert xent.dtype == x.dtype and d_x.dtype == x.dtype and d_e.dtype == e.dtype
  # The bf16 values are exact inputs of float32 math (products of two bf16
  # numbers are exact in float32) and nothing rounds the scale, so avg_xent is
  # float32-accurate either way.
  np.testing.assert_allclose(float(avg_xent), want_avg, rtol=1e-5, err_msg="avg_xent")
  # The per-token xent is returned in bf16: the loss mixing it is accurate to
  # bf16 roundings of its terms.
  atol = 0.0 if dtype == "float32" else 2.0**-8 * float(np.sum(np.abs(coeffs) * 10.0))
  np.testing.assert_allclose(float(value), want_value, rtol=1e-5, atol=atol, err_msg="loss")
  # bf16 gradients: the logits' cotangent and the results are rounded to bf16.
  assert_close(d_x, want_dx, x.dtype, "d_x", kind="grads")
  assert_close(d_e, want_de, x.dtype, "d_e", kind="grads")


@pytest.mark.parametrize("route", ["plain jax.jit, tiny budget", "default pipeline",
                                   "gshard-pallas{platform=interpret}"])
def test_bf16_at_m_128_the_scale_is_not_rounded(rng, route):
  """M = 128, bf16 inputs, a scale bf16 cannot hold: `avg_xent` is float32
  math of the bf16 inputs with the exact scale (1e-5), where the same math
  with the scale rounded to bf16 is off by over 1e-4 (so the test can tell)."""
  import jax.numpy as jnp
  x, e, ids, w, coeffs = _case(rng, jnp.bfloat16, in_features=128, num_classes=48, batch=(16,))
  x = (x * 8).astype(jnp.bfloat16)  # logits of a few units at this scale
  scale = 1.01 * 128 ** -0.5
  (_, (avg_xent, _)), _ = _routes()[route](_step(w, ids, coeffs, scale, options={}))(x, e)
  want = _expected(x, e, w, ids, coeffs, scale, options={})[1]
  rounded = _expected(x, e, w, ids, coeffs, float(jnp.asarray(scale, jnp.bfloat16)),
                      options={})[1]
  assert abs(rounded - want) / abs(want) > 1e-4, (rounded, want)
  assert avg_xent.dtype == jnp.float32
  np.testing.assert_allclose(float(avg_xent), want, rtol=1e-5)


def test_none_is_praxis_and_unchanged(rng):
  """`logit_scale=None` is the default, and differs from `M**-0.5` on the
  logits only by the inputs' rounding (none in float32)."""
  import jax.numpy as jnp

  import gshard_op
  x, e, ids, w, _ = _case(rng, jnp.float32)
  outs = [gshard_op.shared_embedding_softmax(x, e, w, ids, **kw).per_example_xent
          for kw in ({}, {"logit_scale": None}, {"logit_scale": 16 ** -0.5})]
  np.testing.assert_array_equal(outs[0], outs[1])
  np.testing.assert_allclose(outs[2], outs[0], rtol=1e-6, atol=1e-6)


# --- options, composite attributes, contract -----------------------------------------------

@pytest.mark.parametrize("bad, error, match", [
    (0.0, ValueError, "logit_scale must be finite and > 0"),
    (-1.0, ValueError, "logit_scale must be finite and > 0"),
    (float("inf"), ValueError, "logit_scale must be finite"),
    (float("nan"), ValueError, "logit_scale must be finite"),
    (1e39, ValueError, "not representable in float32"),
    (1e-46, ValueError, "not representable in float32"),
    (True, TypeError, "logit_scale must be a Python float"),
    ("1.0", TypeError, "logit_scale must be a Python float"),
])
def test_bad_logit_scale_is_refused(bad, error, match):
  from gshard_op.options import SoftmaxOptions
  with pytest.raises(error, match=match):
    SoftmaxOptions(logit_scale=bad)


def test_options_and_keyword_together_are_refused(rng):
  import jax.numpy as jnp

  import gshard_op
  x, e, ids, w, _ = _case(rng, jnp.float32)
  with pytest.raises(ValueError, match="both given"):
    gshard_op.shared_embedding_softmax(x, e, w, ids, logit_scale=1.0,
                                       options=gshard_op.SoftmaxOptions())


def _composite_text(logit_scale, rng):
  import jax
  import jax.numpy as jnp

  import gshard_op
  x, e, ids, w, coeffs = _case(rng, jnp.float32)
  with gshard_op.lowering("composite"):
    return jax.jit(_step(w, ids, coeffs, logit_scale)).lower(x, e).as_text()


@pytest.mark.parametrize("logit_scale, attrs", [
    (None, "logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, "
           "precision = \"DEFAULT\", scales_logits = false"),
    (0.37, "logit_scale = 3.700000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, "
           "precision = \"DEFAULT\", scales_logits = true"),
])
def test_the_composites_record_the_scale_and_where_it_applies(rng, logit_scale, attrs):
  from gshard_op import contract
  lines = [l for l in _composite_text(logit_scale, rng).splitlines()
           if "stablehlo.composite" in l]
  assert len(lines) == 2 and contract.VERSION == 5
  for line in lines:
    assert attrs in line and "version = 5 : i32" in line, line


@pytest.mark.parametrize("pass_name", ["gshard-chunk-softmax", "gshard-fuse-fwd-bwd",
                                       "gshard-inline"])
@pytest.mark.parametrize("value, match", [("0.000000e+00", "logit_scale must be finite and > 0"),
                                          ("0x7FF0000000000000", "logit_scale must be finite")])
def test_a_bad_scale_on_the_logits_is_a_pass_error(rng, pass_name, value, match):
  from jax._src.interpreters import mlir as jax_mlir
  from jaxlib.mlir import ir

  from gshard_op import passes
  text = _composite_text(0.37, rng)
  assert text.count("logit_scale = 3.700000e-01") == 2
  with jax_mlir.make_ir_context():
    module = ir.Module.parse(text.replace("logit_scale = 3.700000e-01", f"logit_scale = {value}"))
  with pytest.raises(passes.PassError, match=match):
    passes.run_pipeline(module, pass_name)


def test_kernel_config_checks_the_scale_against_the_options():
  from gshard_op.options import SoftmaxOptions
  from gshard_op import kernels
  options = SoftmaxOptions(logit_scale=2.0)
  blocks = kernels.BlockSizes(8, 16)
  kernels.KernelConfig(options=options, logit_scale=2.0, labels_are_ids=True, block_sizes=blocks)
  with pytest.raises(ValueError, match="disagrees with the options"):
    kernels.KernelConfig(options=options, logit_scale=0.25, labels_are_ids=True,
                         block_sizes=blocks)


# --- the layers ----------------------------------------------------------------------------

def test_nnx_layer_takes_the_scale(rng):
  import jax.numpy as jnp
  from flax import nnx

  import numpy_reference as npref
  from gshard_op.nnx import GShardSharedEmbeddingSoftmax
  layer = GShardSharedEmbeddingSoftmax(16, 40, logit_scale=1.0, rngs=nnx.Rngs(0))
  assert layer.options.logit_scale == 1.0
  x, _, ids, w, _ = _case(rng, jnp.float32)
  out = layer(x, w, class_ids=ids)
  e = np.asarray(layer.embedding[...])
  ref = npref.forward(x, e, w, ids, opts=npref.Options(logit_scale=1.0))
  np.testing.assert_allclose(out.avg_xent, ref["avg_xent"], rtol=1e-5)
  np.testing.assert_allclose(layer.get_logits(x), npref.raw_logits(x, e, 1.0), rtol=1e-5,
                             atol=1e-5)


def test_keras_layer_takes_and_serialises_the_scale(rng):
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import jax.numpy as jnp

  import numpy_reference as npref
  from gshard_op.keras import GShardSharedEmbeddingSoftmax
  layer = GShardSharedEmbeddingSoftmax(16, 40, logit_scale=1.0)
  again = GShardSharedEmbeddingSoftmax.from_config(layer.get_config())
  assert again.options == layer.options and layer.options.logit_scale == 1.0
  x, _, ids, w, _ = _case(rng, jnp.float32)
  out = layer(x, w, class_ids=ids)
  ref = npref.forward(x, np.asarray(layer.embeddings.value), w, ids,
                      opts=npref.Options(logit_scale=1.0))
  np.testing.assert_allclose(out["avg_xent"], ref["avg_xent"], rtol=1e-5)


# --- torch ---------------------------------------------------------------------------------

@pytest.mark.parametrize("logit_scale", SCALES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_values_and_gradients(rng, logit_scale, dtype):
  torch = pytest.importorskip("torch")
  import gshard_op.torch as gt
  from arrays import assert_close
  x, e, ids, w, coeffs = _case(rng, np.float32)
  tdtype = getattr(torch, dtype)
  xt = torch.tensor(np.asarray(x)).to(tdtype).requires_grad_()
  et = torch.tensor(np.asarray(e)).to(tdtype).requires_grad_()
  out = gt.shared_embedding_softmax(xt, et, torch.tensor(w), torch.tensor(ids),
                                    logit_scale=logit_scale,
                                    use_tgt_labels_size_as_loss_denominator=True, **OPTIONS)
  loss = out["avg_xent"] + out["z_loss"] + (torch.tensor(coeffs) * out["per_example_xent"]).sum()
  loss.backward()
  x_vals, e_vals = xt.detach().float().numpy(), et.detach().float().numpy()
  want_value, want_avg, want_dx, want_de = _expected(x_vals, e_vals, w, ids, coeffs, logit_scale)
  assert out["avg_xent"].dtype == out["total_xent"].dtype == torch.float32
  np.testing.assert_allclose(out["avg_xent"].item(), want_avg, rtol=1e-5)
  np.testing.assert_allclose(loss.item(), want_value, rtol=1e-5 if dtype == "float32" else 1e-2)
  np_dtype = np.float32 if dtype == "float32" else "bfloat16"
  assert_close(xt.grad.float().numpy(), want_dx, np_dtype, "d_x", kind="grads")
  assert_close(et.grad.float().numpy(), want_de, np_dtype, "d_e", kind="grads")


def test_torch_layer_and_reductions_are_float32(rng):
  torch = pytest.importorskip("torch")
  import gshard_op.torch as gt
  x, e, ids, _, _ = _case(rng, np.float32)
  layer = gt.GShardSharedEmbeddingSoftmax(16, 40, logit_scale=1.0, dtype=torch.bfloat16)
  assert layer.options.logit_scale == 1.0
  xt = torch.tensor(np.asarray(x)).to(torch.bfloat16)
  target = torch.tensor(ids[..., 0]).long().clamp(min=0)
  out = layer(xt, None, class_ids=target)
  assert out["avg_xent"].dtype == torch.float32
  for reduction in ("mean", "sum"):
    loss = gt.cross_entropy(xt, layer.embedding, target, reduction=reduction)
    assert loss.dtype == torch.float32, reduction
  assert gt.cross_entropy(xt, layer.embedding, target, reduction="none").dtype == torch.bfloat16


# --- vocab-sharded, on 8 host devices ------------------------------------------------------

SHARDED = {  # name: (Explicit axes?, the step's jit)
    "auto_plain_jit": (False, "jax"),
    "auto_gshard_jit": (False, "gshard"),
    "explicit_plain_jit": (True, "jax"),
}


def _sharded_scenario(name, logit_scale, rng):
  import contextlib

  import jax
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  import gshard_op
  from arrays import assert_close
  explicit, jit = SHARDED[name]
  x, e, ids, w, coeffs = _case(rng, np.float32, num_classes=64, batch=(4, 6))
  step = (jax.jit if jit == "jax" else gshard_op.jit)(_step(w, ids, coeffs, logit_scale))
  axes = (AxisType.Explicit if explicit else AxisType.Auto,)
  mesh = jax.make_mesh((DEVICES,), ("model",), axis_types=axes)
  with jax.set_mesh(mesh) if explicit else contextlib.nullcontext():
    e_sharded = jax.device_put(e, NamedSharding(mesh, P("model", None)))
    (value, (avg_xent, _)), (d_x, d_e) = step(x, e_sharded)
    hlo = step.lower(x, e_sharded).compile().as_text()
  assert "all-gather" not in hlo and "all-reduce" in hlo, "not vocab-sharded"
  want_value, want_avg, want_dx, want_de = _expected(x, e, w, ids, coeffs, logit_scale)
  np.testing.assert_allclose(float(avg_xent), want_avg, rtol=1e-5, err_msg="avg_xent")
  np.testing.assert_allclose(float(value), want_value, rtol=1e-5, err_msg="loss")
  assert_close(np.asarray(d_x), want_dx, np.float32, "d_x", kind="grads")
  assert_close(np.asarray(d_e), want_de, np.float32, "d_e", kind="grads")


@pytest.mark.parametrize("logit_scale", SCALES)
@pytest.mark.parametrize("name", list(SHARDED))
def test_vocab_sharded(host_devices, name, logit_scale):
  from conftest import seed_of
  key = f"{name}-{logit_scale}"
  _sharded_scenario(name, logit_scale, np.random.default_rng(seed_of("logit_scale::" + key)))
