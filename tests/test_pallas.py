"""`gshard-pallas` and its Pallas kernels (`gshard_op/kernels/`).

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
kernels' too. Model widths (`M` = 2304, 3072, 5120) run with a few tokens and
classes, their features in blocks that do not divide `M`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxlib.mlir import ir

import gshard_op
import numpy_reference as npref
from gshard_op import kernels, passes
from arrays import assert_close, make_arrays
from conftest import KINK_MARGIN, assert_argmax_ok
from pass_testing import fast_xla
from gshard_op.lowering import lowering as lowering_mode
from gshard_op.kernels import BlockSizes
from gshard_op.options import SoftmaxOptions
from gshard_op.primitive import per_token_softmax
from gshard_op.passes import composites
from gshard_op.passes import pallas as pallas_pass
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
                             block_sizes=BlockSizes(block_tokens, block_vocab))
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


# in_features -> (block_features, block_grad_features, options, labels): blocks
# that leave a clamped last feature block (all but 5120's logits blocks).
WIDE = {
    2304: (512, 1024, {"label_smoothing_prob": 0.2}, "ids_out_of_range"),
    3072: (2048, 2048, {"soft_cap_logits": 3.0, "logits_abs_max": 2.5, "z_loss_weight": 0.2,
                        "label_smoothing_prob": 0.1}, "probs_unnormalized"),
    5120: (1024, 4096, {"soft_cap_logits": 3.0}, "ids"),
}


def _inputs_as_scaled(x, m: int) -> np.ndarray:
  """float64 inputs whose exact `* M**-0.5` is the rounded product the kernels
  use (`x * M**-0.5` in x's dtype, as `reference.scaled_inputs`). At these
  widths `M**-0.5` is inexact in bfloat16: from the unrounded inputs a logit
  within rounding of the clip bound may fall on the other side of it, and its
  gradient flip from 0 to 1."""
  return npref.as_f64(jnp.asarray(x) * jnp.asarray(m ** -0.5, x.dtype)) * float(m) ** 0.5


@pytest.mark.parametrize("m", sorted(WIDE))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernels_at_model_widths_match_float64_reference(m, dtype, rng):
  """Issue 21: any `in_features`, the features read a block at a time. 12
  tokens and 37 classes in blocks of 8 and 16 (clamped last blocks in every
  loop); the logits summed over feature blocks, the gradients' columns
  written a block at a time."""
  block_features, block_grad_features, options, labels = WIDE[m]
  n, v = 12, 37
  dtype = jnp.dtype(dtype)
  case = make_arrays(rng, (n,), m, v, labels=labels, weights="ones", dtype=dtype)
  cfg = kernels.KernelConfig(SoftmaxOptions(**options), m ** -0.5,
                             labels_are_ids=case.class_ids is not None,
                             block_sizes=BlockSizes(8, 16, block_features, block_grad_features))
  x, e, y = jnp.asarray(case.inputs), jnp.asarray(case.embedding), _kernel_labels(case)
  opts = npref.Options(**options)
  inputs = _inputs_as_scaled(case.inputs, m)
  logits = npref.final_logits(npref.raw_logits(inputs, case.embedding), opts)
  if opts.logits_abs_max:
    gap = np.min(np.abs(np.abs(npref.capped_logits(npref.raw_logits(inputs, case.embedding), opts))
                        - opts.logits_abs_max))
    assert gap > KINK_MARGIN, "test data: a logit on the clip bound; pick other data"

  xent, argmax, lse, lse_squared = jax.jit(functools.partial(kernels.forward, cfg=cfg))(x, e, y)
  ref = npref.forward(inputs, case.embedding, case.class_weights, opts=opts, **case.labels())
  assert_close(xent, ref["per_example_xent"], dtype, "per_example_xent")
  assert_close(lse, ref["logsumexp"], dtype, "logsumexp")
  assert_close(lse_squared, ref["logsumexp"] ** 2, dtype, "logsumexp_squared")
  # float32 sums in another order: near-ties may swap.
  assert_argmax_ok(argmax, logits, tol=1e-4 * max(1.0, float(np.abs(logits).max())),
                   what="per_example_argmax")

  g_xent, g_lse, g_lse_squared = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
  d_x, d_e = jax.jit(functools.partial(kernels.grad, cfg=cfg))(
      x, e, y, ref["logsumexp"].astype(np.float32), g_xent, g_lse, g_lse_squared)
  assert d_x.dtype == dtype and d_e.dtype == dtype
  want_x, want_e = npref.backward(
      inputs, case.embedding, opts=opts, g_xent=g_xent,
      g_lse=g_lse + 2.0 * ref["logsumexp"] * g_lse_squared, **case.labels())
  assert_close(d_x, want_x, dtype, "d_x", kind="grads")
  assert_close(d_e, want_e, dtype, "d_embedding", kind="grads")


def test_infinite_embedding_in_a_clamped_feature_block(rng):
  """A clamped last feature block zeroes the columns an earlier block covered
  in both operands: an infinite embedding entry there is counted once (an
  infinite logit), not again as `0 * inf = NaN`."""
  n, m, v = 8, 24, 16
  x = rng.standard_normal((n, m)).astype(np.float32)
  e = rng.standard_normal((v, m)).astype(np.float32)
  e[3, 10] = np.inf  # column 10: in both feature blocks of 16 (0..15 and 8..23)
  ids = np.arange(n, dtype=np.int32)
  cfg = kernels.KernelConfig(SoftmaxOptions(), m ** -0.5, labels_are_ids=True,
                             block_sizes=BlockSizes(8, 16, features=16))
  _, argmax, lse, _ = jax.jit(functools.partial(kernels.forward, cfg=cfg))(x, e, ids)
  z = npref.raw_logits(x, e)  # class 3: +inf or -inf, as x[:, 10]'s sign; no NaN
  assert not np.isnan(z).any() and np.isposinf(z).any() and np.isneginf(z).any()
  up = np.isposinf(z).any(axis=1)
  want = np.where(up, np.inf, npref.logsumexp(np.where(np.isposinf(z), 0.0, z)))
  lse = np.asarray(lse)
  np.testing.assert_array_equal(np.isposinf(lse), up)
  assert_close(lse[~up], want[~up], np.float32, "logsumexp")
  assert_argmax_ok(argmax, z, tol=1e-4 * float(np.abs(z[np.isfinite(z)]).max()),
                   what="per_example_argmax")


def _check_tpu_kernels_in_interpret_mode(rng, options: dict, n: int, m: int, v: int, labels: str,
                                         exact_argmax: bool, **blocks):
  """The `mosaic_tpu` forward and gradient kernels, run by Pallas's TPU
  interpreter, against the float64 model: values, argmax (exactly, or within
  a tolerance where logits may tie after rounding) and gradients."""
  from jax.experimental.pallas import tpu as pltpu
  case = make_arrays(rng, (n,), m, v, labels=labels, weights="ones")
  cfg = kernels.KernelConfig(SoftmaxOptions(**options), m ** -0.5,
                             labels_are_ids=case.class_ids is not None,
                             block_sizes=BlockSizes(8, 128, **blocks), backend="mosaic_tpu")
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
  if exact_argmax:
    np.testing.assert_array_equal(argmax, ref["per_example_argmax"])
  else:
    logits = npref.final_logits(npref.raw_logits(case.inputs, case.embedding), opts)
    assert_argmax_ok(argmax, logits, tol=1e-4 * float(np.abs(logits).max()), what="argmax")
  want_x, want_e = npref.backward(
      case.inputs, case.embedding, opts=opts, g_xent=g_xent,
      g_lse=g_lse + 2.0 * ref["logsumexp"] * g_lse_squared, **case.labels())
  assert_close(d_x, want_x, np.float32, "d_x", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_embedding", kind="grads")


@pytest.mark.parametrize("labels", ["ids_out_of_range", "probs_unnormalized"])
def test_tpu_kernels_in_tpu_interpret_mode(labels, rng):
  """The `mosaic_tpu` kernels (whole operands in VMEM, (8, 128) blocks) run by
  Pallas's TPU interpreter, which simulates the TPU's memories on the CPU.
  The last vocab block of 128 (V = 200) is clamped and masked."""
  _check_tpu_kernels_in_interpret_mode(
      rng, {"soft_cap_logits": 3.0, "logits_abs_max": 2.5, "label_smoothing_prob": 0.1},
      16, 128, 200, labels, exact_argmax=True)


def test_tpu_kernels_with_feature_blocks_in_tpu_interpret_mode(rng):
  """The `mosaic_tpu` kernels with blocked features: the logits over feature
  blocks of 256 (the last of M = 384 clamped to start at 128), the gradients'
  columns in blocks of 256, each through VMEM buffers of its own."""
  _check_tpu_kernels_in_interpret_mode(
      rng, {"soft_cap_logits": 3.0, "z_loss_weight": 0.1}, 16, 384, 200, "ids_out_of_range",
      exact_argmax=False, features=256, grad_features=256)


# --- the entry a JAX user calls: gshard_op.kernels.shared_embedding_softmax ----------------

# name: (options, label kind); N = 21, V = 37 in blocks of 8 x 16 leave clamped
# last blocks in every loop.
ENTRY_CASES = {
    "ids": ({"soft_cap_logits": 3.0, "label_smoothing_prob": 0.1}, "ids_out_of_range"),
    "probs_entropy": ({"logits_abs_max": 2.5, "temperature": 0.7, "with_entropy": True},
                      "probs_unnormalized"),
    "logit_scale_ids_entropy": ({"logit_scale": 0.3, "with_entropy": True}, "ids"),
}


def _per_token_loss(fn, coeffs):
  """`x, e -> sum_k coeffs[k] * results[k]` over the differentiable results
  (the argmax, an integer, is left out) and the results themselves."""
  def loss(x, e):
    results = fn(x, e)
    floats = results[:1] + results[2:]
    return sum(jnp.sum(c * r) for c, r in zip(coeffs, floats)), results
  return loss


@pytest.mark.parametrize("name", sorted(ENTRY_CASES))
def test_entry_values_and_grads_match_the_dense_op(name, rng):
  """`jax.value_and_grad` through the entry's `custom_vjp` (the gradient
  kernels) against the same of `reference.per_token_forward` (the dense op,
  differentiated by JAX), float32 at a tight tolerance: every result, the
  argmax exactly, `d_x` and `d_embedding`."""
  from gshard_op import reference
  options, labels = ENTRY_CASES[name]
  opts = SoftmaxOptions(**options)
  n, v = 21, 37
  case = make_arrays(rng, (n,), M, v, labels=labels, weights="ones")
  x, e, y = jnp.asarray(case.inputs), jnp.asarray(case.embedding), _kernel_labels(case)
  coeffs = [jnp.asarray(rng.standard_normal(n), jnp.float32) for _ in range(4)]
  blocks = BlockSizes(tokens=8, vocab=16)

  got_fn = _per_token_loss(lambda x, e: kernels.shared_embedding_softmax(
      x, e, y, options=opts, block_sizes=blocks), coeffs)
  want_fn = _per_token_loss(lambda x, e: reference.per_token_forward(
      x, e, y, opts.with_default_precision()), coeffs)
  (got_loss, got), got_grads = jax.jit(jax.value_and_grad(got_fn, (0, 1), has_aux=True))(x, e)
  (want_loss, want), want_grads = jax.jit(jax.value_and_grad(want_fn, (0, 1), has_aux=True))(
      x, e)

  assert len(got) == len(want) == 4 + opts.with_entropy
  np.testing.assert_array_equal(got[1], want[1], err_msg="per_example_argmax")
  # The xent and the entropy are differences of terms as large as the lse.
  atol = 2e-6 * max(1.0, float(np.abs(want[2]).max()))
  for what, a, b in zip(("xent", "lse", "lse_squared", "entropy"), got[:1] + got[2:],
                        want[:1] + want[2:]):
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=atol, err_msg=what)
  np.testing.assert_allclose(got_loss, want_loss, rtol=2e-6, atol=2e-6)
  for what, a, b in zip(("d_x", "d_embedding"), got_grads, want_grads):
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6, err_msg=what)


def test_entry_default_blocks_and_backends():
  """Without `block_sizes` the entry takes the backend's defaults, no larger
  than the shapes (on Triton powers of two); the Triton and Mosaic entries
  lower to their custom calls (no device needed to lower)."""
  assert BlockSizes.get_default("interpret", 21, 37, 16) == BlockSizes(21, 37, 16, 16)
  assert BlockSizes.get_default("triton", 200, 3001, 24) == BlockSizes(64, 64, 16, 16)
  assert BlockSizes.get_default("mosaic_tpu", 4096, 32000, 2304) == BlockSizes(128, 512, 2304,
                                                                                2304)
  x, e = jnp.ones((21, M)), jnp.ones((37, M))
  ids = jnp.arange(21, dtype=jnp.int32)
  xent, argmax, lse, _ = kernels.shared_embedding_softmax(x, e, ids)
  np.testing.assert_allclose(lse, np.log(37.0) + 4.0, rtol=1e-6)  # every logit 16 / 4
  np.testing.assert_allclose(xent, np.log(37.0), rtol=1e-6)
  np.testing.assert_array_equal(argmax, np.zeros(21))
  s = jax.ShapeDtypeStruct
  for backend, platform, target in (("triton", "cuda", "__gpu$xla.gpu.triton"),
                                    ("mosaic_tpu", "tpu", "tpu_custom_call")):
    fn = jax.jit(jax.grad(lambda x, e, ids: kernels.shared_embedding_softmax(
        x, e, ids, backend=backend)[0].sum(), (0, 1)))
    exported = jax.export.export(fn, platforms=[platform], disabled_checks=[
        jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(
        s((64, 32), jnp.bfloat16), s((256, 32), jnp.bfloat16), s((64,), jnp.int32))
    assert len(re.findall(rf"custom_call @{re.escape(target)}\(", exported.mlir_module())) == 3


@pytest.mark.parametrize("make,error,message", [
    (lambda: BlockSizes(0, 16), ValueError, "block sizes must be positive"),
    (lambda: BlockSizes(8, -16), ValueError, "block sizes must be positive"),
    (lambda: BlockSizes(8, 16, features=-1), ValueError, "feature blocks must be >= 0"),
    (lambda: BlockSizes(8, 16, grad_features=-8), ValueError, "feature blocks must be >= 0"),
    (lambda: kernels.shared_embedding_softmax(
        jnp.ones((21, M)), jnp.ones((37, M)), jnp.zeros((21,), jnp.int32),
        block_sizes=BlockSizes(32, 16)), ValueError, "blocks 32 x 16 exceed N=21, V=37"),
    (lambda: kernels.shared_embedding_softmax(
        jnp.ones((21, M)), jnp.ones((37, M)), jnp.zeros((21,), jnp.int32),
        block_sizes=BlockSizes(8, 16, features=32)), ValueError, r"feature blocks \(32, 16\) exceed M=16"),
    (lambda: kernels.shared_embedding_softmax(
        jnp.ones((21, M)), jnp.ones((37, M)), jnp.zeros((21,), jnp.int32), backend="cuda"),
     ValueError, "backend must be one of"),
    (lambda: kernels.shared_embedding_softmax(
        jnp.ones((21, M)), jnp.ones((37, M)), jnp.zeros((21, 1), jnp.int32)),
     TypeError, r"expected x\[N, M\], embedding\[V, M\] and labels as int ids\[N\]"),
    (lambda: kernels.shared_embedding_softmax(
        jnp.ones((21, M)), jnp.ones((37, 8)), jnp.zeros((21, 37))),
     TypeError, r"got x\[21, 16\], embedding\[37, 8\] and labels\[21, 37\] of float32"),
    (lambda: kernels.KernelConfig(SoftmaxOptions(), 0.25, True, (8, 16)), TypeError,
     "block_sizes must be a BlockSizes"),
    (lambda: kernels.KernelConfig(SoftmaxOptions(logit_scale=2.0), 0.25, True, BlockSizes(8, 16)),
     ValueError, "disagrees with the options"),
])
def test_entry_rejects_bad_block_sizes_and_operands(make, error, message):
  with pytest.raises(error, match=message):
    make()


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
  """A fresh copy of the module: JAX caches lowerings and hands out the same
  live module for the same function and shapes, which an earlier test may
  have rewritten already."""
  with lowering_mode("composite"):
    live = jax.jit(fn).lower(*specs).compiler_ir("stablehlo")
  return ir.Module.parse(str(live), context=live.context)


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
    ("cuda", "__gpu$xla.gpu.triton", jnp.float32, 24, "ids"),  # M not a power of two
    ("cuda", "__gpu$xla.gpu.triton", jnp.bfloat16, 2304, "ids"),  # Gemma's width
    ("cuda", "__gpu$xla.gpu.triton", jnp.bfloat16, 1000, "probs"),  # clamped feature blocks
    ("tpu", "tpu_custom_call", jnp.float32, 128, "ids"),
    ("tpu", "tpu_custom_call", jnp.bfloat16, 2304, "ids"),
])
def test_cross_lowering(platform, target, dtype, m, labels):
  module = _composite_module(_step, *_specs(32, m, 200, dtype, labels))
  passes.run_pipeline(module, f"gshard-pallas{{platform={platform}}}")
  text = str(module)
  assert "stablehlo.composite" not in text
  # One custom call for the forward kernel and two for the gradient's.
  assert len(re.findall(rf"stablehlo.custom_call @{re.escape(target)}\(", text)) == 3
  assert re.search(rf'gshard.plan = "gshard-pallas: platform={platform} ', text)


def test_unsuitable_shapes_are_left_for_later_passes(caplog):
  """Triton's dots are at least 16 wide: N = 8 tokens stay a composite for the
  chunk pass after it, each decline says why, and the module still computes the
  reference."""
  module = _composite_module(_step, *_specs(8, 24, 50, jnp.float32))
  with caplog.at_level(logging.WARNING, logger="gshard.passes"):
    passes.run_pipeline(module, "gshard-pallas{platform=cuda}")
  assert len(re.findall(r"stablehlo.composite", str(module))) == 2
  declines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gshard-pallas")]
  assert len(declines) == 2, declines
  for line in declines:
    assert "N=8 or V=50 below the Triton minimum block of 16" in line
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
    ("gshard-pallas{platform=cuda block-features=24}",
     "block-features must be 0 or a power of two"),
    ("gshard-pallas{platform=cuda block-grad-features=8}",
     "block-grad-features must be 0 or a power of two >= 16"),
    ("gshard-pallas{block-vocab=-1}", "must be >= 0"),
    ("gshard-pallas{block-features=-1}", "block-features must be >= 0"),
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
    assert pipeline.replace(
        f"gshard-pallas{{platform={platform} max-grad-column-blocks=1}},", "") == cpu
    names = [p.name if isinstance(p, passes.ModulePass) else p
             for p in passes.parse_pipeline(pipeline)]
    assert names.index("gshard-shard-vocab") < names.index("gshard-pallas") \
        < names.index("gshard-fuse-fwd-bwd")


def _cuda_shared_and_registers(blocks, itemsize):
  """The shared memory and register tiles of `passes/pallas.py`'s cuda
  estimate, written out: two stages of the `[T, K]`, `[C, K]` and `[C or T, F]`
  dot operands plus the `[T, C]` cotangent; three float32 `[T, C]` tiles and
  the float32 `[C or T, F]` accumulator."""
  t, c, k, f = dataclasses.astuple(blocks)
  return (2 * ((t + c) * k + max(t, c) * f) + t * c) * itemsize, 4 * (3 * t * c + max(t, c) * f)


def test_blocks_fit_on_chip():
  """cuda blocks are powers of two no larger than N, V, M; cuda and tpu blocks
  shrink to fit on chip, tpu blocks stay in (8, 128) tiles."""
  module, site = _site(n=48, m=1024, v=100, dtype=jnp.bfloat16)
  with site.op.context:
    blocks = pallas_pass.PallasPass(platform="cuda").blocks(site)
    assert pallas_pass.PallasPass(platform="cuda").unsuitable(site, blocks) is None
  assert all(b & (b - 1) == 0 and b >= 16 for b in dataclasses.astuple(blocks))
  assert blocks.tokens <= 48 and blocks.vocab <= 100 and blocks.grad_features <= 1024
  shared, registers = _cuda_shared_and_registers(blocks, 2)
  assert shared <= 160 * 2**10 and registers <= 128 * 2**10

  module, site = _site(n=4096, m=8192, v=32768, dtype=jnp.bfloat16)
  tpu = pallas_pass.PallasPass(platform="tpu")
  with site.op.context:
    blocks = tpu.blocks(site)
    assert tpu.unsuitable(site, blocks) is None
  # Any TPU (16 MiB of scoped VMEM): 512 classes halve to 256, then (a tie) to
  # 128; whole rows of 8192 features do not fit (Mosaic needs 19 MiB for them
  # at these blocks, compiled for a v5e: tests/aot), so the features halve.
  assert blocks == BlockSizes(128, 128, 4096, 4096)
  assert pallas_pass.on_chip_bytes("tpu", site, blocks)["vmem"] <= 16 * 2**20
  # A v5e's 64 MiB limit keeps whole rows and 256 classes.
  v5e = pallas_pass.PallasPass(platform="tpu", tpu_chip="v5e")
  with site.op.context:
    blocks = v5e.blocks(site)
    assert v5e.unsuitable(site, blocks) is None
  assert blocks == BlockSizes(128, 256, 8192, 8192)
  assert pallas_pass.on_chip_bytes("tpu", site, blocks)["vmem"] <= 64 * 2**20


def test_tpu_chip_option():
  """`tpu-chip` names a generation (its VMEM limit reaches the kernels' plan)
  and needs platform=tpu; device kinds map to chips, unknown ones to any TPU."""
  assert pallas_pass.tpu_chip_of("TPU v5 lite") == "v5e"
  assert pallas_pass.tpu_chip_of("TPU v4") == "v4"
  assert pallas_pass.tpu_chip_of("TPU v99") == ""
  with pytest.raises(ValueError, match="tpu-chip must be one of v4, v5e"):
    passes.parse_pipeline("gshard-pallas{platform=tpu tpu-chip=v3}")
  with pytest.raises(ValueError, match="needs platform=tpu"):
    passes.parse_pipeline("gshard-pallas{platform=cuda tpu-chip=v5e}")
  pipeline = default_pipeline(64.0, platform="tpu", device_kind="TPU v6 lite")
  assert "gshard-pallas{platform=tpu max-grad-column-blocks=1 tpu-chip=v6e}" in pipeline
  assert "tpu-chip" not in default_pipeline(64.0, platform="tpu")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("m", [16, 24, 2304, 3072, 5120, 8192])
def test_cuda_takes_any_width_within_shared_memory(m, dtype):
  """Issue 21: on a GPU the features are always blocked, so no width is
  refused and no tile grows with M: shared memory stays under 160 KiB of an
  H100's 228, register tiles under 128 KiB; the gradients' column block is
  not cut below 256 while smaller token or class blocks would do."""
  module, site = _site(n=8192, m=m, v=256000, dtype=dtype)
  cuda = pallas_pass.PallasPass(platform="cuda")
  with site.op.context:
    blocks = cuda.blocks(site)
    assert cuda.unsuitable(site, blocks) is None
  t, c, k, f = dataclasses.astuple(blocks)
  assert all(b & (b - 1) == 0 and 16 <= b for b in (t, c, k, f)), blocks
  assert k <= min(m, 64) and f <= m and (f >= 256 or f == _floor_pow2(m)), blocks
  shared, registers = _cuda_shared_and_registers(blocks, jnp.dtype(dtype).itemsize)
  assert shared <= 160 * 2**10 and registers <= 128 * 2**10, (blocks, shared, registers)
  assert pallas_pass.on_chip_bytes("cuda", site, blocks) == {"shared": shared,
                                                             "registers": registers}


def _floor_pow2(n):
  return 1 << (n.bit_length() - 1)


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


# --- on a GPU or TPU (`pytest -m accelerator`, run by tools/device_check.py) ------------

ON_DEVICE = {"gpu": "cuda", "tpu": "tpu"}.get(jax.default_backend())
needs_accelerator = pytest.mark.skipif(ON_DEVICE is None, reason="needs a GPU or a TPU")


@pytest.mark.accelerator
@needs_accelerator
@pytest.mark.parametrize("m", [24, 1000, 2304])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_kernels_on_the_accelerator_match_float64_reference(m, dtype, rng):
  """The kernels compiled for this device (Triton on a GPU, Mosaic on a TPU),
  with the blocks `gshard-pallas` picks for it, on a training step with every
  option but the clip: value, argmax and both gradients against the float64
  reference; N, V and M leave clamped last blocks in every loop. float32 is
  checked at bfloat16's tolerance: a device's dots at DEFAULT precision are
  TF32 on a GPU, bfloat16 passes on a TPU (issue 21's first item makes the
  precision a choice)."""
  options = {"soft_cap_logits": 3.0, "z_loss_weight": 0.2, "label_smoothing_prob": 0.1,
             "use_tgt_labels_size_as_loss_denominator": False}
  n, v = 200, 3001
  dtype = jnp.dtype(dtype)
  case = make_arrays(rng, (n,), m, v, labels="ids_out_of_range", dtype=dtype)
  coeffs = rng.standard_normal((n,)).astype(np.float32)

  def loss(x, e, w, ids):
    out = gshard_op.shared_embedding_softmax(x, e, w, class_ids=ids, **options)
    return jnp.sum(coeffs * out.per_example_xent) + out.z_loss, out.per_example_argmax

  step = gshard_op.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
                       pipeline=f"gshard-pallas{{platform={ON_DEVICE}}}")
  args = (case.inputs, case.embedding, case.class_weights, case.class_ids)
  text = step.lower(*args).as_text()
  assert "stablehlo.composite" not in text  # no fallback: both composites are kernels
  assert re.search(r"call @gshard\.pallas_grad_\w+", text)

  (value, argmax), (d_x, d_e) = step(*args)
  opts = npref.Options(**options)
  inputs = _inputs_as_scaled(case.inputs, m)
  tol = "bfloat16"  # DEFAULT precision on the device, see above
  ref = npref.forward(inputs, case.embedding, case.class_weights, opts=opts, **case.labels())
  assert_close(value, np.sum(coeffs * ref["per_example_xent"]) + ref["z_loss"], tol, "loss")
  logits = npref.final_logits(npref.raw_logits(inputs, case.embedding), opts)
  assert_argmax_ok(argmax, logits, tol=1e-2 * max(1.0, float(np.abs(logits).max())),
                   what="per_example_argmax")
  w, den = ref["per_example_weight"][..., 0], ref["avg_xent_weight"]
  want_x, want_e = npref.backward(
      inputs, case.embedding, opts=opts, g_xent=coeffs,
      g_lse=opts.z_loss_weight * 2.0 * ref["logsumexp"] * w / den, **case.labels())
  assert_close(d_x, want_x, tol, "d_x", kind="grads")
  assert_close(d_e, want_e, tol, "d_embedding", kind="grads")


@pytest.mark.accelerator
@needs_accelerator
@pytest.mark.parametrize("m,dtype", [(2304, jnp.bfloat16), (8192, jnp.float32)])
def test_kernels_compile_at_model_widths_on_the_accelerator(m, dtype):
  """The device's compiler accepts the kernels at a model's shape (8192 tokens,
  256000 classes): the blocks `gshard-pallas` picks fit its shared memory or
  VMEM (Triton reports running out of shared memory only when it compiles).
  Compiled, not run: nothing of that size is allocated."""
  module_specs = _specs(8192, m, 256000, dtype)
  step = gshard_op.jit(_step, pipeline=f"gshard-pallas{{platform={ON_DEVICE}}}")
  lowered = step.lower(*module_specs)
  assert "stablehlo.composite" not in lowered.as_text()
  lowered.compile()


def test_default_pipeline_leaves_split_widths_to_the_fused_passes(caplog):
  """At Gemma's shape (8192 x 2304 x 256000, bf16) the cuda gradient kernels
  split in_features into column blocks, each recomputing the logits: the
  default pipeline's kernel pass says so; so does the fused sweep, whose
  float32 [256000, 2304] d_embedding accumulator (2.3 GB) exceeds the budget
  for a bf16 embedding (issue 27), and the chunked rewrite takes the step;
  `gshard-pallas{platform=cuda}` named by hand still takes it (the lit test
  pallas-cuda-gemma.mlir)."""
  import os

  from jax._src.interpreters import mlir as jax_mlir

  path = os.path.join(os.path.dirname(__file__), "lit", "pallas-cuda-gemma.mlir")
  with open(path) as f:
    text = f.read()
  with jax_mlir.make_ir_context():
    module = ir.Module.parse(text)
    with caplog.at_level(logging.WARNING, logger="gshard.passes"):
      passes.run_pipeline(module, default_pipeline(64.0, platform="cuda"))
    rewritten = str(module)
  declines = [r.getMessage() for r in caplog.records if "gshard-pallas" in r.getMessage()]
  assert len(declines) == 2 and all(
      re.search(r"split in_features 2304 into 9 column blocks", d) for d in declines), declines
  assert any("d_embedding accumulator (2250 MiB) exceeds memory-budget-mib=64" in r.getMessage()
             for r in caplog.records if "gshard-fuse-fwd-bwd" in r.getMessage())
  assert "stablehlo.composite" not in rewritten and "gshard-fuse-fwd-bwd" not in rewritten
  assert 'gshard.plan = "gshard-chunk-softmax' in rewritten
  assert "256000x2304xf32" not in rewritten  # no float32 [V, M] buffer
  assert "__gpu$xla.gpu.triton" not in rewritten
