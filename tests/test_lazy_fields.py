"""The dense fields `logits` / `log_probs` are built only when read (issue 30, item 1).

In-process: eagerly, under `jax.jit` (no `[N, V]` matmul in the jaxpr unless a
dense field is read), through `jax.grad` / `jax.vmap`, and as a pytree. On 8
host CPU devices (tests/conftest.py's):
the issue's Explicit-mesh layout, tokens over both axes and the vocabulary over
"v", where building the dense logits was a `ShardingTypeError`: plain
`jax.jit` of `avg_xent` and its gradients equal float64, and no all-gather of
the `[V, M]` embedding is compiled.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import gshard_op
import numpy_reference as npref
from arrays import assert_close, make_arrays
from gshard_op.outputs import LazyField

N, M, V = 64, 16, 256  # V * M is no shape a token block has: an all-gather of it is the vocab's


def _call(case, x=None, e=None, **kw):
  return gshard_op.shared_embedding_softmax(
      case.inputs if x is None else x, case.embedding if e is None else e,
      case.class_weights, class_ids=case.class_ids, **kw)


def _dense_dots(jaxpr, num_classes: int) -> int:
  """Equations anywhere in `jaxpr` making a `[..., num_classes]` float array by a matmul."""
  count = 0
  for eqn in jaxpr.eqns:
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      count += _dense_dots(sub, num_classes)
    if eqn.primitive.name == "dot_general":
      shape = eqn.outvars[0].aval.shape
      count += len(shape) >= 2 and shape[-1] == num_classes and shape[-2] != num_classes
  return count


def test_eager_output_builds_nothing_dense_until_read(rng):
  case = make_arrays(rng, batch=(4, 6), in_features=8, num_classes=40)
  out = _call(case)
  for name in ("logits", "log_probs"):
    held = dict.__getitem__(out, name)
    assert isinstance(held, LazyField) and held.shape == (4, 6, 40), name
  assert "logits=float32[4, 6, 40]" in repr(out)  # repr reads no field
  assert isinstance(dict.__getitem__(out, "logits"), LazyField)
  logits = out.logits
  assert out["logits"] is logits and out.logits is logits  # built once
  assert not isinstance(dict.__getitem__(out, "logits"), LazyField)
  want = npref.forward(case.inputs, case.embedding, case.class_weights, class_ids=case.class_ids)
  assert_close(logits, want["logits"], np.float32, "logits")
  assert_close(out.log_probs, want["log_probs"], np.float32, "log_probs")
  assert_close(dict(out)["log_probs"], want["log_probs"], np.float32, "dict(out)")


@pytest.mark.parametrize("implementation", ["composite", "reference"])
def test_jit_traces_the_dense_logits_only_when_read(rng, implementation):
  case = make_arrays(rng, batch=(8,), in_features=8, num_classes=40)
  loss = lambda x, e: _call(case, x, e, implementation=implementation).avg_xent
  dense = lambda x, e: _call(case, x, e, implementation=implementation).log_probs.sum()
  args = (case.inputs, case.embedding)
  with gshard_op.lowering("composite"):
    unread = _dense_dots(jax.make_jaxpr(loss)(*args).jaxpr, 40)
    read = _dense_dots(jax.make_jaxpr(dense)(*args).jaxpr, 40)
    unread_grad = _dense_dots(jax.make_jaxpr(jax.grad(loss, (0, 1)))(*args).jaxpr, 40)
  assert read == unread + 1
  if implementation == "composite":  # the reference's own forward is dense
    assert unread == unread_grad == 0


def test_read_under_grad_vmap_and_returned_from_jit(rng):
  """A dense field read inside a transformation differentiates and batches as
  before; returning the whole output from `jax.jit` returns every field."""
  case = make_arrays(rng, batch=(8,), in_features=8, num_classes=40, weights="ones")
  x, e = case.inputs, case.embedding
  want = npref.forward(x, e, case.class_weights, class_ids=case.class_ids)

  out = jax.jit(lambda x, e: _call(case, x, e))(x, e)
  assert isinstance(out, gshard_op.SoftmaxOutput) and len(jax.tree.leaves(out)) == 10
  assert_close(out.logits, want["logits"], np.float32, "jit logits")

  c = rng.standard_normal((8, 40)).astype(np.float32)
  d_x = jax.jit(jax.grad(lambda x: jnp.sum(c * _call(case, x, e).log_probs)))(x)
  d_x_ref = jax.grad(lambda x: jnp.sum(c * _call(case, x, e, implementation="reference")
                                       .log_probs))(x)
  assert_close(d_x, d_x_ref, np.float32, "d_x of log_probs", kind="grads")

  batched = jax.vmap(lambda x: _call(case, x, e).logits)(jnp.stack([x, 2 * x]))
  assert_close(batched[0], want["logits"], np.float32, "vmap logits")


# --- 8 devices, Explicit axes ---------------------------------------------------------------

def _explicit_mesh_scenario() -> dict:
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

  rng = np.random.default_rng(30)
  x = rng.standard_normal((N, M)).astype(np.float32)
  e = rng.standard_normal((V, M)).astype(np.float32)
  ids = rng.integers(0, V, (N,)).astype(np.int32)
  w = rng.uniform(size=(N, 1)).astype(np.float32)
  mesh = jax.make_mesh((2, 4), ("d", "v"), axis_types=(AxisType.Explicit,) * 2)
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, NamedSharding(mesh, P(("d", "v"), None)))
    es = jax.device_put(e, NamedSharding(mesh, P("v", None)))
    loss = lambda x, e: gshard_op.shared_embedding_softmax(x, e, w, class_ids=ids).avg_xent
    step = jax.jit(jax.value_and_grad(loss, (0, 1)))
    value, (d_x, d_e) = step(xs, es)
    hlo = step.lower(xs, es).compile().as_text()
  gathers = [line.split("=")[1].split("all-gather")[0].strip()
             for line in hlo.splitlines() if " all-gather(" in line]
  ref = npref.forward(x, e, w, class_ids=ids)
  cot = npref.loss_cotangents("avg_xent", x, e, w, class_ids=ids)
  want_x, want_e = npref.backward(x, e, class_ids=ids, **cot)
  assert_close(value, ref["avg_xent"], np.float32, "avg_xent")
  assert_close(d_x, want_x, np.float32, "d_x", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_e", kind="grads")
  return {"gathers": gathers}


def test_explicit_mesh_avg_xent_on_plain_jit_without_a_vocab_gather(host_devices):
  """The issue's reproducer: `x` on P(("d", "v"), None), the embedding on
  P("v", None) of a (2, 4) Explicit mesh; `jax.jit` of `.avg_xent`."""
  gathers = _explicit_mesh_scenario()["gathers"]
  vocab = [g for g in gathers if f"[{V},{M}]" in g or f"[{V}," in g]
  assert not vocab, f"all-gathers of the vocabulary: {vocab}"
