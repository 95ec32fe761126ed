"""Matmul precision: the op's matmuls follow the caller, as a dense `jnp.dot`'s do.

`precision=` (or, when it is None, `jax.default_matmul_precision` where the op
is traced) fixes the precision of every `dot_general` of the op: the chunked
lowering of plain `jax.jit`, the composite's attribute (contract version 2)
and its decomposition, and what the passes emit from it. On an accelerator
an ignored precision makes the dense model and the op's model disagree
(bfloat16 passes on a TPU, TF32 on a GPU); the CPU computes float32 whatever
the attribute says, so the tests here check the IR, and the values only
against float64 at the tolerance dense XLA itself meets.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gshard_op
import numpy_reference as npref
from arrays import make_arrays
from conftest import np_options
from gshard_op import contract
from gshard_op.options import SoftmaxOptions
from jax.extend import core as jax_core

OPTIONS = dict(soft_cap_logits=4.0, z_loss_weight=1e-3, label_smoothing_prob=0.1)


def _case(rng):
  return make_arrays(rng, batch=(2, 8), in_features=16, num_classes=200)


def _step(case, **kwargs):
  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, case.class_weights,
                                             class_ids=case.class_ids, **OPTIONS, **kwargs)
    return out.avg_xent + out.z_loss + jnp.sum(out.per_example_xent ** 2)
  return jax.value_and_grad(loss, argnums=(0, 1))


def _dot_precisions(text: str) -> list[str]:
  """The precision of each `stablehlo.dot_general` ("unset" where none is written)."""
  found = []
  for line in text.splitlines():
    if "stablehlo.dot_general" in line:
      m = re.search(r"precision = \[(\w+), (\w+)\]", line)
      assert m is None or m[1] == m[2], line
      found.append(m[1] if m else "unset")
  assert found, "no dot_general at all"
  return found


ROUTES = {
    "plain jax.jit": lambda f: jax.jit(f),
    "default pipeline": lambda f: gshard_op.jit(f),
    "fused": lambda f: gshard_op.jit(f, pipeline="gshard-fuse-fwd-bwd,gshard-chunk-softmax"),
    "chunk only": lambda f: gshard_op.jit(
        f, pipeline="gshard-chunk-softmax{memory-budget-mib=0.001}"),
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("how", ["config", "argument"])
def test_every_dot_carries_highest(rng, route, how):
  case = _case(rng)
  if how == "config":
    with jax.default_matmul_precision("highest"):
      text = ROUTES[route](_step(case)).lower(case.inputs, case.embedding).as_text()
  else:
    text = ROUTES[route](_step(case, precision="highest")).lower(
        case.inputs, case.embedding).as_text()
  assert "stablehlo.composite" not in text
  assert set(_dot_precisions(text)) == {"HIGHEST"}, _dot_precisions(text)


@pytest.mark.parametrize("route", list(ROUTES))
def test_no_precision_asked_writes_none(rng, route):
  """Without asking, the op's dots carry what a dense `jnp.dot` under no
  setting carries (JAX writes DEFAULT; the old hand-built IR wrote nothing,
  which means the same)."""
  case = _case(rng)
  text = ROUTES[route](_step(case)).lower(case.inputs, case.embedding).as_text()
  dense = jax.jit(jnp.dot).lower(case.inputs, case.embedding.T).as_text()
  assert set(_dot_precisions(dense)) == {"DEFAULT"}
  assert set(_dot_precisions(text)) == set(_dot_precisions(dense))


def test_the_argument_wins_over_the_config(rng):
  case = _case(rng)
  with jax.default_matmul_precision("highest"):
    text = jax.jit(_step(case, precision="high")).lower(case.inputs, case.embedding).as_text()
  assert set(_dot_precisions(text)) == {"HIGH"}


def test_the_composite_records_the_traced_precision(rng):
  case = _case(rng)
  with gshard_op.lowering("composite"), jax.default_matmul_precision("tensorfloat32"):
    text = jax.jit(_step(case)).lower(case.inputs, case.embedding).as_text()
  composites = [l for l in text.splitlines() if "stablehlo.composite" in l]
  assert len(composites) == 2
  for line in composites:
    assert 'precision = "HIGH"' in line and f"version = {contract.VERSION} " in line, line
  # ... and its decomposition computes at that precision too.
  assert set(_dot_precisions(text)) == {"HIGH"}


@pytest.mark.parametrize("precision", ["bfloat16", "float32", None])
def test_values_are_as_close_to_float64_as_dense(rng, precision):
  """Under each setting the op's error against the float64 model is no larger
  than dense XLA's (at the same setting) plus float32 rounding."""
  case = _case(rng)
  ref = npref.forward(case.inputs, case.embedding, case.class_weights,
                      class_ids=case.class_ids, opts=np_options(OPTIONS))
  want = ref["avg_xent"] + ref["z_loss"] + np.sum(ref["per_example_xent"] ** 2)
  with jax.default_matmul_precision(precision):
    ours = float(jax.jit(_step(case))(case.inputs, case.embedding)[0])
    dense = float(jax.jit(_step(case, implementation="reference"))(
        case.inputs, case.embedding)[0])
  assert abs(ours - want) <= 2 * abs(dense - want) + 1e-5 * abs(want), (ours, dense, want)


@pytest.mark.parametrize("given, name", [
    ("highest", "HIGHEST"), ("HIGH", "HIGH"), ("float32", "HIGHEST"),
    ("tensorfloat32", "HIGH"), ("bfloat16", "DEFAULT"), (jax.lax.Precision.HIGH, "HIGH"),
    (None, None)])
def test_options_name_the_precision(given, name):
  assert SoftmaxOptions(precision=given).precision == name


@pytest.mark.parametrize("bad", ["fp8", "BF16_BF16_F32", 3, ("highest", "highest")])
def test_bad_precision_is_refused(bad):
  with pytest.raises(ValueError, match="precision must be a jax.lax.Precision"):
    SoftmaxOptions(precision=bad)


def test_a_dot_algorithm_preset_in_the_config_is_refused(rng):
  case = _case(rng)
  with jax.default_matmul_precision("BF16_BF16_F32"), pytest.raises(
      ValueError, match="jax_default_matmul_precision must be"):
    jax.jit(_step(case)).lower(case.inputs, case.embedding)


def test_layers_take_the_option():
  from flax import nnx
  layer = gshard_op.GShardSharedEmbeddingSoftmax(16, 32, precision="highest",
                                                 rngs=nnx.Rngs(0))
  assert layer.options.precision == "HIGHEST"
  x = jnp.ones((4, 16))
  text = jax.jit(lambda x: layer(x, jnp.ones((4, 1)), class_ids=jnp.zeros((4, 1), jnp.int32))
                 .avg_xent).lower(x).as_text()
  assert set(_dot_precisions(text)) == {"HIGHEST"}


# --- the Pallas kernels ----------------------------------------------------------------------

def _kernel_dot_precisions(jaxpr) -> list:
  """The precision of every dot_general inside the pallas_calls of `jaxpr`."""
  found = []

  def walk(j, inside):
    for eqn in j.eqns:
      if eqn.primitive.name == "dot_general" and inside:
        found.append(eqn.params["precision"])
      for sub in jax_core.jaxprs_in_params(eqn.params):
        walk(sub, inside or eqn.primitive.name == "pallas_call")

  walk(jaxpr.jaxpr, False)
  return found


@pytest.mark.parametrize("backend", ["interpret", "triton", "mosaic_tpu"])
@pytest.mark.parametrize("block_features", [0, 16])  # whole rows, or feature blocks
def test_every_kernel_dot_carries_the_precision(backend, block_features):
  from gshard_op import kernels
  n, m, v = 32, 48, 64
  cfg = kernels.KernelConfig(options=SoftmaxOptions(precision="highest"), logit_scale=m ** -0.5,
                             labels_are_ids=True,
                             block_sizes=kernels.BlockSizes(16, 16, block_features, block_features),
                             backend=backend)
  x, e = jnp.zeros((n, m)), jnp.zeros((v, m))
  ids, per_token = jnp.zeros((n,), jnp.int32), jnp.zeros((n,))
  fwd = jax.make_jaxpr(lambda x, e, ids: kernels.forward(x, e, ids, cfg=cfg))(x, e, ids)
  grad = jax.make_jaxpr(lambda *a: kernels.grad(*a, cfg=cfg))(
      x, e, ids, per_token, per_token, per_token, per_token)
  dots = _kernel_dot_precisions(fwd) + _kernel_dot_precisions(grad)
  assert len(dots) >= 3, dots
  highest = (jax.lax.Precision.HIGHEST,) * 2
  assert all(p == highest for p in dots), dots


def test_the_interpreted_kernels_compute_at_highest(rng):
  """`gshard-pallas{platform=interpret}` on a HIGHEST module: every dot of the
  spliced kernels says so (the GPU and TPU bodies are serialised; the test
  above reads their jaxprs)."""
  from gshard_op import passes
  case = _case(rng)
  with gshard_op.lowering("composite"):
    lowered = jax.jit(_step(case, precision="highest")).lower(case.inputs, case.embedding)
  module = lowered.compiler_ir("stablehlo")
  passes.run_pipeline(module, "gshard-pallas{platform=interpret}")
  text = str(module)
  assert "stablehlo.composite" not in text
  assert set(_dot_precisions(text)) == {"HIGHEST"}
