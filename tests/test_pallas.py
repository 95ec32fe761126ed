"""`gshard-pallas` and its Pallas kernels (`passes/pallas_kernels.py`).

On this CPU the kernels run in Pallas's interpreter: the forward and both
gradient kernels are compared with the float64 NumPy reference over the option
matrix (soft cap, clip, z-loss and arbitrary cotangents, label smoothing, ids in
and out of range, probabilities, blocks that do and do not divide N and V,
float32 and bfloat16 operands), and the pass under `gshard_op.jit` on a
value-and-grad. The Mosaic TPU variant (operands in HBM, blocks copied through
VMEM) runs in Pallas's TPU interpreter. The GPU (Triton) and TPU (Mosaic)
lowerings are produced here too (`jax.export` needs no device to lower a
kernel) and checked for their custom calls; `tests/lit/pallas-*.mlir` check the
same through `gshard-opt`.

Shapes are small (Pallas's interpreter is slow) and `M = 16`, so the logit
scale `M**-0.5 = 1/4` is exact in bfloat16 and the reference's argmax is the
kernels' too.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxlib.mlir import ir

import gshard_op
import numpy_reference as npref
from gshard_op import passes
from arrays import assert_close, make_arrays
from pass_testing import fast_xla
from gshard_op.lowering import lowering as lowering_mode
from gshard_op.options import SoftmaxOptions
from gshard_op.primitive import per_token_softmax
from gshard_op.passes import composites
from gshard_op.passes import pallas as pallas_pass
from gshard_op.passes import pallas_kernels as kernels
from gshard_op.passes.pipelines import default_pipeline

M = 16

# name: (options, label kind)
CONFIGS = {
    "plain": ({}, "ids"),
    "soft_cap": ({"soft_cap_logits": 2.0}, "ids"),
    "abs_clip": ({"logits_abs_max": 1.5}, "ids"),
    "cap_clip_z_loss": ({"soft_cap_logits": 3.0, "logits_abs_max": 2.0, "z_loss_weight": 0.3},
                        "ids"),
    "smoothing_out_of_range": ({"label_smoothing_prob": 0.2}, "ids_out_of_range"),
    "probs": ({}, "probs"),
    "everything_unnormalized_probs": ({"soft_cap_logits": 3.0, "logits_abs_max": 2.5,
                                       "z_loss_weight": 0.2, "label_smoothing_prob": 0.1},
                                      "probs_unnormalized"),
}
# (N, V, block_tokens, block_vocab): ragged last blocks in both loops, or none.
SHAPES = {"ragged": (21, 37, 8, 16), "even": (16, 32, 8, 16)}
CASES = ([(c, "float32", "ragged") for c in CONFIGS]
         + [("plain", "float32", "even"), ("everything_unnormalized_probs", "float32", "even")]
         + [(c, "bfloat16", "ragged") for c in ("plain", "cap_clip_z_loss",
                                                  "everything_unnormalized_probs")])


def _kernel_labels(case):
  if case.class_ids is not None:
    return jnp.asarray(case.class_ids[..., 0], jnp.int32)
  return jnp.asarray(case.class_probabilities)


@pytest.mark.parametrize("config,dtype,shape", CASES)
def test_kernels_match_float64_reference(config, dtype, shape, rng):
  options, labels = CONFIGS[config]
  n, v, block_tokens, block_vocab = SHAPES[shape]
  dtype = jnp.dtype(dtype)
  case = make_arrays(rng, (n,), M, v, labels=labels, weights="ones", dtype=dtype)
  cfg = kernels.KernelConfig(SoftmaxOptions(**options), M ** -0.5,
                             labels_are_ids=case.class_ids is not None,
                             block_tokens=block_tokens, block_vocab=block_vocab)
  x, e, y = jnp.asarray(case.inputs), jnp.asarray(case.embedding), _kernel_labels(case)
  opts = npref.Options(**options)

  xent, argmax, lse, lse_squared = jax.jit(functools.partial(kernels.forward, cfg=cfg))(x, e, y)
  ref = npref.forward(case.inputs, case.embedding, case.class_weights, opts=opts, **case.labels())
  assert_close(xent, ref["per_example_xent"], dtype, "per_example_xent")
  assert_close(lse, ref["logsumexp"], dtype, "logsumexp")
  assert_close(lse_squared, ref["logsumexp"] ** 2, dtype, "logsumexp_squared")
  assert argmax.dtype == jnp.int32
  np.testing.assert_array_equal(argmax, ref["per_example_argmax"], err_msg="per_example_argmax")

  # Arbitrary cotangents of all three differentiable results (the z-loss
  # reaches the gradient as the cotangent of the squared logsumexp).
  g_xent, g_lse, g_lse_squared = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
  saved_lse = ref["logsumexp"].astype(np.float32)
  d_x, d_e = jax.jit(functools.partial(kernels.grad, cfg=cfg))(
      x, e, y, saved_lse, g_xent, g_lse, g_lse_squared)
  assert d_x.dtype == dtype and d_e.dtype == dtype
  want_x, want_e = npref.backward(
      case.inputs, case.embedding, opts=opts, g_xent=g_xent,
      g_lse=g_lse + 2.0 * ref["logsumexp"] * g_lse_squared, **case.labels())
  assert_close(d_x, want_x, dtype, "d_x", kind="grads")
  assert_close(d_e, want_e, dtype, "d_embedding", kind="grads")


@pytest.mark.parametrize("labels", ["ids_out_of_range", "probs_unnormalized"])
def test_tpu_kernels_in_tpu_interpret_mode(labels, rng):
  """The `mosaic_tpu` kernels (whole operands in VMEM, (8, 128) blocks) run by
  Pallas's TPU interpreter, which simulates the TPU's memories on the CPU."""
  from jax.experimental.pallas import tpu as pltpu
  options = {"soft_cap_logits": 3.0, "logits_abs_max": 2.5, "label_smoothing_prob": 0.1}
  n, m, v = 16, 128, 200  # the last vocab block of 128 is clamped and masked
  case = make_arrays(rng, (n,), m, v, labels=labels, weights="ones")
  cfg = kernels.KernelConfig(SoftmaxOptions(**options), m ** -0.5,
                             labels_are_ids=case.class_ids is not None,
                             block_tokens=8, block_vocab=128, backend="mosaic_tpu")
  x, e, y = jnp.asarray(case.inputs), jnp.asarray(case.embedding), _kernel_labels(case)
  opts = npref.Options(**options)
  ref = npref.forward(case.inputs, case.embedding, case.class_weights, opts=opts, **case.labels())
  g_xent, g_lse, g_lse_squared = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
  with pltpu.force_tpu_interpret_mode():
    xent, argmax, lse, _ = jax.jit(functools.partial(kernels.forward, cfg=cfg))(x, e, y)
    d_x, d_e = jax.jit(functools.partial(kernels.grad, cfg=cfg))(
        x, e, y, ref["logsumexp"].astype(np.float32), g_xent, g_lse, g_lse_squared)
  assert_close(xent, ref["per_example_xent"], np.float32, "per_example_xent")
  assert_close(lse, ref["logsumexp"], np.float32, "logsumexp")
  np.testing.assert_array_equal(argmax, ref["per_example_argmax"])
  want_x, want_e = npref.backward(
      case.inputs, case.embedding, opts=opts, g_xent=g_xent,
      g_lse=g_lse + 2.0 * ref["logsumexp"] * g_lse_squared, **case.labels())
  assert_close(d_x, want_x, np.float32, "d_x", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_embedding", kind="grads")


def test_pass_under_jit_matches_reference(rng):
  """The pass in `gshard_op.jit` on a training step: both composites become
  calls of the spliced kernels, and values and gradients are the reference's."""
  options = {"soft_cap_logits": 3.0, "z_loss_weight": 0.2, "label_smoothing_prob": 0.1,
             "use_tgt_labels_size_as_loss_denominator": False}
  case = make_arrays(rng, (3, 7), M, 37, labels="ids_out_of_range")
  coeffs = rng.standard_normal((3, 7)).astype(np.float32)

  def loss(x, e, w, ids):
    out = gshard_op.shared_embedding_softmax(x, e, w, class_ids=ids, **options)
    return jnp.sum(coeffs * out.per_example_xent) + out.z_loss, out.per_example_argmax

  step = gshard_op.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
                       pipeline="gshard-pallas{block-tokens=8 block-vocab=16}")
  args = (case.inputs, case.embedding, case.class_weights, case.class_ids)
  text = step.lower(*args).as_text()
  assert "stablehlo.composite" not in text
  assert re.search(r"call @gshard\.pallas_forward_\w+", text)
  assert re.search(r"call @gshard\.pallas_grad_\w+", text)
  assert "tensor<21x37xf32>" not in text  # no [N, V] logits outside the kernels' blocks

  (value, argmax), (d_x, d_e) = step(*args)
  opts = npref.Options(**options)
  ref = npref.forward(case.inputs, case.embedding, case.class_weights, opts=opts, **case.labels())
  assert_close(value, np.sum(coeffs * ref["per_example_xent"]) + ref["z_loss"], np.float32, "loss")
  np.testing.assert_array_equal(argmax, ref["per_example_argmax"])
  w, den = ref["per_example_weight"][..., 0], ref["avg_xent_weight"]
  want_x, want_e = npref.backward(
      case.inputs, case.embedding, opts=opts, g_xent=coeffs,
      g_lse=opts.z_loss_weight * 2.0 * ref["logsumexp"] * w / den, **case.labels())
  assert_close(d_x, want_x, np.float32, "d_x", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_embedding", kind="grads")


@pytest.mark.parametrize("name", [
    "empty_batch", "neg_inf_chunk_smoothing", "pos_inf_logit_probs_smoothing",
    "pos_inf_logit_soft_cap", "nan_embedding_rows_clip"])
def test_hostile_inputs_give_the_reference_answer(name, monkeypatch):
  """Issue 14's cases (`test_hardening.py`) on one more route: -inf and +inf
  logits, NaN embedding rows, an empty batch (left to the decomposition). Vocab
  blocks of 5 put the -inf classes 0..4 in a block of their own. Which of the
  soft-capped logits saturate to exactly the cap (argmax ties) depends on XLA's
  tanh, so both sides run with the same XLA flags."""
  import test_hardening as hardening
  monkeypatch.setitem(hardening.PIPELINES, "pallas", "gshard-pallas{block-tokens=4 block-vocab=5}")
  arrays, options = hardening.case_arrays(name), hardening.CASES[name][1]
  with fast_xla():  # one set of XLA flags for both sides: the same tanh
    result = hardening.run_route("pallas", arrays, options)
    # `hardening.reference_result`: dense outputs, the gradient decomposition's gradients.
    want = (hardening.run_route("reference", arrays, options)[0],
            hardening.run_route("composite", arrays, options)[1])
  hardening.assert_route_matches(result, want, "pallas")


# --- cross-lowering: the module the pass leaves for a GPU or a TPU ------------------------


def _composite_module(fn, *specs):
  with lowering_mode("composite"):
    return jax.jit(fn).lower(*specs).compiler_ir("stablehlo")


def _step(x, e, w, labels):
  key = "class_ids" if labels.dtype == jnp.int32 else "class_probabilities"
  def loss(x, e):
    return gshard_op.shared_embedding_softmax(x, e, w, **{key: labels},
                                              z_loss_weight=0.1).avg_xent
  return jax.value_and_grad(loss, argnums=(0, 1))(x, e)


def _specs(n, m, v, dtype, labels="ids"):
  s = jax.ShapeDtypeStruct
  y = s((n, 1), jnp.int32) if labels == "ids" else s((n, v), jnp.float32)
  return s((n, m), dtype), s((v, m), dtype), s((n, 1), jnp.float32), y


@pytest.mark.parametrize("platform,target,dtype,m,labels", [
    ("cuda", "__gpu$xla.gpu.triton", jnp.bfloat16, 32, "ids"),
    ("cuda", "__gpu$xla.gpu.triton", jnp.float32, 32, "probs"),
    ("tpu", "tpu_custom_call", jnp.float32, 128, "ids"),
])
def test_cross_lowering(platform, target, dtype, m, labels):
  module = _composite_module(_step, *_specs(32, m, 200, dtype, labels))
  passes.run_pipeline(module, f"gshard-pallas{{platform={platform}}}")
  text = str(module)
  assert "stablehlo.composite" not in text
  # One custom call for the forward kernel and two for the gradient's.
  assert len(re.findall(rf"stablehlo.custom_call @{re.escape(target)}\(", text)) == 3
  assert re.search(rf'gshard.plan = "gshard-pallas: platform={platform} ', text)


def test_unsuitable_shapes_are_left_for_later_passes():
  """Triton needs power-of-two arrays: M = 24 stays a composite for the chunk
  pass after it, and the module still computes the reference."""
  module = _composite_module(_step, *_specs(32, 24, 50, jnp.float32))
  passes.run_pipeline(module, "gshard-pallas{platform=cuda}")
  assert len(re.findall(r"stablehlo.composite", str(module))) == 2
  passes.run_pipeline(module, "gshard-chunk-softmax")
  assert "stablehlo.composite" not in str(module)


def test_kernel_spliced_once_per_signature():
  """Two forward composites with one signature call one spliced function."""
  def two(x, e, ids):
    opts = SoftmaxOptions()
    return per_token_softmax(x, e, ids, opts)[0] + per_token_softmax(2 * x, e, ids, opts)[0]

  s = jax.ShapeDtypeStruct
  module = _composite_module(two, s((16, M), jnp.float32), s((32, M), jnp.float32),
                             s((16,), jnp.int32))
  passes.run_pipeline(module, "gshard-pallas{platform=cuda}")
  text = str(module)
  callees = re.findall(r"call @(gshard\.pallas_forward_\w+)\(", text)
  assert len(callees) == 2 and callees[0] == callees[1]
  assert len(re.findall(r"func.func private @gshard\.pallas_forward_\w+\(", text)) == 1


@pytest.mark.parametrize("pipeline,message", [
    ("gshard-pallas{platform=rocm}", "platform must be one of interpret, cuda, tpu"),
    ("gshard-pallas{platform=cuda block-tokens=24}", "power of two"),
    ("gshard-pallas{block-vocab=-1}", "must be >= 0"),
])
def test_bad_options(pipeline, message):
  with pytest.raises(passes.PipelineError, match=message):
    passes.parse_pipeline(pipeline)


def test_default_pipeline_uses_kernels_on_gpu_and_tpu_only():
  cpu = default_pipeline(64.0, platform="cpu")
  assert "gshard-pallas" not in cpu
  assert default_pipeline(64.0) == cpu  # this machine's backend is the CPU
  for platform in ("cuda", "tpu"):
    pipeline = default_pipeline(64.0, platform=platform)
    assert pipeline.replace(f"gshard-pallas{{platform={platform}}},", "") == cpu
    names = [p.name if isinstance(p, passes.ModulePass) else p
             for p in passes.parse_pipeline(pipeline)]
    assert names.index("gshard-shard-vocab") < names.index("gshard-pallas") \
        < names.index("gshard-fuse-fwd-bwd")


def test_blocks_fit_on_chip():
  """cuda blocks are powers of two no larger than N, V; cuda and tpu blocks
  shrink to fit on chip, tpu blocks stay in (8, 128) tiles."""
  module, site = _site(n=48, m=1024, v=100, dtype=jnp.bfloat16)
  with site.op.context:
    t, c = pallas_pass.PallasPass(platform="cuda").blocks(site)
    assert pallas_pass.PallasPass(platform="cuda").unsuitable(site, (t, c)) is None
  assert t & (t - 1) == 0 and c & (c - 1) == 0 and t <= 48 and c <= 100
  assert (t + c) * 1024 * 2 + 3 * t * c * 4 <= pallas_pass.ON_CHIP_BYTES["cuda"]

  module, site = _site(n=4096, m=8192, v=32768, dtype=jnp.bfloat16)
  tpu = pallas_pass.PallasPass(platform="tpu")
  with site.op.context:
    t, c = tpu.blocks(site)
    assert tpu.unsuitable(site, (t, c)) is None
  assert (t, c) == (128, 128)  # 512 classes halve to 256, then (a tie) to 128
  assert pallas_pass.on_chip_bytes("tpu", site, t, c) <= pallas_pass.ON_CHIP_BYTES["tpu"]


def _site(n, m, v, dtype):
  """`(module, site)` of one forward composite (the module owns the site's op)."""
  s = jax.ShapeDtypeStruct
  module = _composite_module(lambda x, e, ids: per_token_softmax(x, e, ids, SoftmaxOptions()),
                             s((n, m), dtype), s((v, m), dtype), s((n,), jnp.int32))
  with module.context, ir.Location.unknown():
    return module, composites.match(composites.find(module.operation)[0])


def test_driver_rejects_bad_platform_with_status_2(capsys):
  from gshard_op.passes import driver
  status = driver.main(["/nonexistent/input.mlir", "--pass-pipeline=gshard-pallas{platform=gpu}"])
  err = capsys.readouterr().err
  assert status == 2
  assert "platform must be one of interpret, cuda, tpu, got 'gpu'" in err
