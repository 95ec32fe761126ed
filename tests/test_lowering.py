"""The chunked lowering: what every `jax.jit` gets, with no gshard pass run.

(a) values and gradients of every field equal the float64 NumPy model, with
    budgets small enough for several vocab chunks and token blocks (uneven);
(b) the compiled program has no `[tokens, classes]` tensor and a fraction of
    dense XLA's temp memory: under `jax.jit`, and in an `nnx.jit` training step
    with optax at N=1024, M=64, V=32768, whose loss curve equals the reference's;
(c) the route and budget are part of JAX's trace context: a change retraces,
    `gshard_op.lowering("composite")` gives the composites back (for
    `jax.export` and `gshard-opt`), and bad settings are rejected;
(d) vmap, remat, bf16 and Explicit-mesh shardings work on this route too.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gshard_op
import numpy_reference as npref
from arrays import OPTION_SETS, assert_close, make_arrays
from conftest import check_against_numpy, np_options

# 2**-8 MiB: 256 elements for each of the loop body's float32 [T, C] buffers: 128-class chunks
# of 2-token blocks; V = 300 and N = 15 split unevenly both ways.
TINY_BUDGET = 2.0**-8


def _loss_fn(case, options, implementation="composite"):
  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, case.class_weights, case.class_ids,
                                             case.class_probabilities,
                                             implementation=implementation, **options)
    return out.avg_xent + out.z_loss
  return loss


def _plans(text: str) -> list[str]:
  return re.findall(r'gshard\.plan = "([^"]*)"', text)


# --- (a) numerics ---------------------------------------------------------------------

@pytest.mark.parametrize("labels", ["ids_out_of_range", "probs"])
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_chunked_route_matches_numpy(option_set, labels, rng):
  case = make_arrays(rng, batch=(3, 5), in_features=8, num_classes=300, labels=labels)
  with gshard_op.lowering(memory_budget_mib=TINY_BUDGET):
    check_against_numpy(case, OPTION_SETS[option_set], "composite", rng)
    text = jax.jit(jax.grad(_loss_fn(case, OPTION_SETS[option_set]), (0, 1))).lower(
        case.inputs, case.embedding).as_text()
  assert "stablehlo.composite" not in text
  plans = _plans(text)
  assert plans and all(p == "gshard-lowering: token_chunk=2 vocab_chunk=128" for p in plans), plans


# --- (b) memory -------------------------------------------------------------------------

def _temp_bytes(compiled) -> int:
  return compiled.memory_analysis().temp_size_in_bytes


def _has_tensor(hlo_text: str, *dims: int) -> bool:
  return re.search(rf"\[{','.join(map(str, dims))}\]", hlo_text) is not None


def test_plain_jax_jit_has_no_logits_tensor(rng):
  # [N, V] float32 is 128 MiB, over the CPU's default 64 MiB budget
  n, m, v = 1024, 16, 32768
  case = make_arrays(rng, batch=(n,), in_features=m, num_classes=v)
  ours = jax.jit(jax.value_and_grad(_loss_fn(case, {}), (0, 1))).lower(
      case.inputs, case.embedding).compile()
  dense = jax.jit(jax.value_and_grad(_loss_fn(case, {}, "reference"), (0, 1))).lower(
      case.inputs, case.embedding).compile()
  assert _has_tensor(dense.as_text(), n, v)
  assert not _has_tensor(ours.as_text(), n, v)
  assert _temp_bytes(ours) * 8 <= _temp_bytes(dense), (_temp_bytes(ours), _temp_bytes(dense))
  value, grads = ours(case.inputs, case.embedding)
  want = npref.loss_grads("avg_xent", case.inputs, case.embedding, case.class_weights,
                          opts=np_options({}), **case.labels())
  want_value = npref.forward(case.inputs, case.embedding, case.class_weights,
                             opts=np_options({}), **case.labels())["avg_xent"]
  assert_close(value, want_value, np.float32, "avg_xent")
  assert_close(grads[0], want[0], np.float32, "d_inputs", kind="grads")
  assert_close(grads[1], want[1], np.float32, "d_embedding", kind="grads")


class TinyLM(nnx.Module):
  """Token lookup in the shared embedding, one MLP block, the shared softmax."""

  def __init__(self, vocab: int, width: int, *, implementation: str, rngs: nnx.Rngs):
    self.softmax = gshard_op.GShardSharedEmbeddingSoftmax(
        width, vocab, z_loss_weight=1e-4, implementation=implementation, rngs=rngs)
    self.mlp = nnx.Linear(width, width, rngs=rngs)

  def __call__(self, ids, targets, weights):
    x = self.softmax.emb_lookup(ids)
    x = x + jax.nn.gelu(self.mlp(x))
    out = self.softmax(x, weights[..., None], class_ids=targets[..., None])
    return out.avg_xent + out.z_loss


def _train(implementation: str, ids, steps: int, jit=nnx.jit):
  model = TinyLM(32768, 64, implementation=implementation, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @jit
  def step(model, optimizer, ids, targets, weights):
    loss, grads = nnx.value_and_grad(lambda m: m(ids, targets, weights))(model)
    optimizer.update(model, grads)
    return loss

  args = (ids[:, :-1], ids[:, 1:], jnp.ones(ids[:, 1:].shape, jnp.float32))
  compiled = step.lower(model, optimizer, *args).compile()
  losses = [float(step(model, optimizer, *args)) for _ in range(steps)]
  return losses, compiled


@pytest.fixture(scope="module")
def nnx_runs():
  ids = jnp.asarray(np.random.default_rng(3).integers(0, 32768, (8, 129)), jnp.int32)
  return {impl: _train(impl, ids, 10) for impl in ("composite", "reference")}


def test_nnx_jit_step_has_no_logits_tensor(nnx_runs):
  ours, dense = nnx_runs["composite"][1], nnx_runs["reference"][1]
  assert _has_tensor(dense.as_text(), 1024, 32768)
  assert not _has_tensor(ours.as_text(), 1024, 32768)
  assert not _has_tensor(ours.as_text(), 8, 128, 32768)
  assert _temp_bytes(ours) * 8 <= _temp_bytes(dense), (_temp_bytes(ours), _temp_bytes(dense))


def test_nnx_jit_step_loss_curve_equals_reference(nnx_runs):
  ours, dense = nnx_runs["composite"][0], nnx_runs["reference"][0]
  np.testing.assert_allclose(ours, dense, rtol=1e-4)
  assert ours[-1] < ours[0] - 1.0  # it trains


# --- (c) the route as configuration -------------------------------------------------------

def test_route_is_part_of_the_trace_context(rng):
  case = make_arrays(rng, batch=(6,), in_features=8, num_classes=19)
  f = jax.jit(_loss_fn(case, {}))
  chunked = f.lower(case.inputs, case.embedding).as_text()
  with gshard_op.lowering("composite"):
    composite = f.lower(case.inputs, case.embedding).as_text()
  assert "stablehlo.composite" not in chunked and _plans(chunked)
  assert "stablehlo.composite" in composite and not _plans(composite)
  with gshard_op.lowering(memory_budget_mib=2.0**-10):  # 64 elements: 3-token blocks
    small = f.lower(case.inputs, case.embedding).as_text()
  assert _plans(small) != _plans(chunked)
  # the parameter JAX caches on is visible in the jaxpr
  with gshard_op.lowering("composite", memory_budget_mib=3.0):
    jaxpr = str(jax.make_jaxpr(_loss_fn(case, {}))(case.inputs, case.embedding))
  assert "Lowering(mode='composite', memory_budget_mib=3.0)" in jaxpr
  # process-wide, through jax.config
  jax.config.update("gshard_op_lowering", "composite")
  try:
    assert "stablehlo.composite" in f.lower(case.inputs, case.embedding).as_text()
  finally:
    jax.config.update("gshard_op_lowering", "chunked")
  assert f.lower(case.inputs, case.embedding).as_text() == chunked


def test_export_carries_composites_on_request(rng):
  case = make_arrays(rng, batch=(6,), in_features=8, num_classes=19)
  shapes = (jax.ShapeDtypeStruct(case.inputs.shape, case.inputs.dtype),
            jax.ShapeDtypeStruct(case.embedding.shape, case.embedding.dtype))
  f = jax.jit(jax.value_and_grad(_loss_fn(case, {}), (0, 1)))
  with gshard_op.lowering("composite"):
    exported = jax.export.export(f)(*shapes)
  text = exported.mlir_module()
  assert text.count('stablehlo.composite "gshard.shared_embedding_softmax') == 2
  round_trip = jax.export.deserialize(exported.serialize())
  assert_close(round_trip.call(case.inputs, case.embedding)[0],
               f(case.inputs, case.embedding)[0], np.float32, "exported loss")
  assert "stablehlo.composite" not in jax.export.export(f)(*shapes).mlir_module()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "64", True])
def test_bad_budget_is_rejected(bad):
  with pytest.raises(ValueError, match="memory_budget_mib"):
    with gshard_op.lowering(memory_budget_mib=bad):
      pass
  with pytest.raises(ValueError):
    jax.config.update("gshard_op_memory_budget_mib", bad)


def test_bad_mode_is_rejected():
  with pytest.raises(ValueError, match="chunked"):
    with gshard_op.lowering("fused"):
      pass


# --- (d) transformations on this route ------------------------------------------------------

def test_vmap_and_remat(rng):
  case = make_arrays(rng, batch=(5,), in_features=8, num_classes=300)
  options = OPTION_SETS["everything"]
  xs = jnp.stack([case.inputs, 2 * case.inputs, -case.inputs])
  loss, ref = _loss_fn(case, options), _loss_fn(case, options, "reference")
  with gshard_op.lowering(memory_budget_mib=TINY_BUDGET):
    got = jax.jit(jax.vmap(jax.value_and_grad(loss, (0, 1)), in_axes=(0, None)))(
        xs, case.embedding)
    remat = jax.jit(jax.value_and_grad(jax.checkpoint(loss), (0, 1)))(
        case.inputs, case.embedding)
  want = jax.jit(jax.vmap(jax.value_and_grad(ref, (0, 1)), in_axes=(0, None)))(
      xs, case.embedding)
  for a, b, what in zip(jax.tree.leaves(got), jax.tree.leaves(want), ("value", "dx", "de")):
    assert_close(a, b, np.float32, f"vmap {what}", kind="grads")
  for a, b, what in zip(jax.tree.leaves(remat), jax.tree.leaves(jax.tree.map(lambda t: t[0], want)),
                        ("value", "dx", "de")):
    assert_close(a, b, np.float32, f"remat {what}", kind="grads")


def test_bfloat16(rng):
  # No clip: bf16 logits near the clip bound fall on either side of it.
  case = make_arrays(rng, batch=(3, 5), in_features=8, num_classes=300, dtype=jnp.bfloat16)
  with gshard_op.lowering(memory_budget_mib=TINY_BUDGET):
    check_against_numpy(case, dict(soft_cap_logits=3.0, z_loss_weight=0.1,
                                   label_smoothing_prob=0.1), "composite", rng)


@pytest.mark.parametrize("route", ["chunked", "composite"])
def test_forward_mode_and_second_derivatives(route, rng):
  """jvp, linearize and hessian (forward over reverse) equal JAX's own
  derivatives of the dense reference: the tangent is evaluated densely and
  transposes to the gradient primitive."""
  case = make_arrays(rng, batch=(2, 3), in_features=4, num_classes=300, labels="probs")
  options = OPTION_SETS["everything"]
  c = jnp.asarray(rng.standard_normal(case.batch), jnp.float32)

  def loss_fn(implementation):
    def loss(x, e):
      out = gshard_op.shared_embedding_softmax(
          x, e, case.class_weights, class_probabilities=case.class_probabilities,
          implementation=implementation, **options)
      return out.avg_xent + out.z_loss + jnp.sum(c * out.per_example_xent)
    return loss

  ours, ref = loss_fn("composite"), loss_fn("reference")
  x, e = case.inputs, case.embedding
  t_x = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  t_e = jnp.asarray(rng.standard_normal(e.shape), jnp.float32)
  with gshard_op.lowering(route, memory_budget_mib=TINY_BUDGET):
    value, tangent = jax.jit(lambda x, e: jax.jvp(ours, (x, e), (t_x, t_e)))(x, e)
    _, linear = jax.linearize(ours, x, e)
    hessian = jax.jit(jax.hessian(ours))(x, e)
  want_value, want_tangent = jax.jvp(ref, (x, e), (t_x, t_e))
  assert_close(value, want_value, np.float32, "jvp primal")
  assert_close(tangent, want_tangent, np.float32, "jvp tangent", kind="grads")
  assert_close(linear(t_x, t_e), want_tangent, np.float32, "linearize", kind="grads")
  assert_close(hessian, jax.hessian(ref)(x, e), np.float32, "hessian", kind="grads")
