"""The three primitives, their lowerings, and how they differentiate.

`per_token_softmax(x, embedding, labels, options)` is differentiable in both
modes through three primitives:

* `shared_embedding_softmax_p`: `(x[N,M], embedding[V,M], labels) ->
  (per_example_xent[N] f32, per_example_argmax[N] i32, logsumexp[N] f32,
  logsumexp_squared[N] f32)`;
* `shared_embedding_softmax_tangent_p`: `(x, embedding, labels, logsumexp,
  t_x, t_embedding) -> tangents of (xent, logsumexp, logsumexp_squared)`,
  linear in `t_x`, `t_embedding`: the forward's JVP (a `custom_jvp`);
* `shared_embedding_softmax_grad_p`: `(x, embedding, labels, logsumexp,
  g_xent, g_lse, g_lse_squared) -> (d_x[N,M], d_embedding[V,M])`, the
  tangent's transpose: reverse mode is the JVP, linearised and transposed.

Forward mode (`jax.jvp`, `jax.linearize`, `jacfwd`) evaluates the tangent
densely through the reference, as do second derivatives (the gradient's JVP);
reverse mode never builds `[N, V]` on the chunked route.

`labels` is either class ids `[N]` (int32) or class probabilities `[N,V]`
(float). All three primitives carry the static `options` and a `lowering`
(`gshard_op/lowering.py`), read when they are bound, which picks the route:

* `chunked`: the loops of `gshard-chunk-softmax` (`gshard_op/chunked.py`),
  lowered in place by the rule with `mlir.lower_fun`, so any `jax.jit`
  compiles the `[N, V]`-free form; on a
  program XLA partitions, through `custom_partitioning`
  (`gshard_op/partitioning.py`), so a vocab-sharded embedding gets the
  per-device loops of `gshard-shard-vocab` on any mesh;
* `composite`: one `stablehlo.composite` each (`jax.lax.composite`) whose
  decomposition is the dense reference of `gshard_op/reference.py`, for the
  whole-module passes; see `gshard_op/contract.py` and `docs/contract.md`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jaxlib.mlir import ir

from gshard_op import contract, partitioning, reference
from gshard_op import lowering as lowering_lib
from gshard_op.lowering import Lowering
from gshard_op.options import SoftmaxOptions


def _check_operands(x, embedding, labels) -> None:
  """Shape and dtype checks shared by both abstract evaluations."""
  if x.ndim != 2 or embedding.ndim != 2 or x.shape[1] != embedding.shape[1]:
    raise TypeError(f"expected x[N, M] and embedding[V, M], got x{list(x.shape)} "
                    f"and embedding{list(embedding.shape)}")
  for name, a in (("x", x), ("embedding", embedding)):
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise TypeError(f"{name} must be floating point, got {a.dtype}")
  n, v = x.shape[0], embedding.shape[0]
  if jnp.issubdtype(labels.dtype, jnp.integer):
    expected = (n,)
  elif jnp.issubdtype(labels.dtype, jnp.floating):
    expected = (n, v)
  else:
    raise TypeError(f"labels must be integer ids or float probabilities, got {labels.dtype}")
  if labels.shape != expected:
    raise TypeError(f"labels of dtype {labels.dtype} must have shape {list(expected)}, "
                    f"got {list(labels.shape)}")


def _token_aval(x, dtype):
  """An `[N]` aval, sharded like x's token dimension (for Explicit meshes)."""
  sharding = getattr(x, "sharding", None)
  if sharding is not None and getattr(sharding, "spec", None) is not None:
    spec = jax.sharding.PartitionSpec(*sharding.spec[:1])
    return ShapedArray((x.shape[0],), dtype, sharding=sharding.update(spec=spec))
  return ShapedArray((x.shape[0],), dtype)


def _jit_impl(prim: Primitive):
  """Eager evaluation: the primitive alone, compiled once per signature."""
  return jax.jit(prim.bind, static_argnames=("options", "lowering"))


def _map_over_batch(prim, args, dims, **params):
  """Batching fallback: one primitive per batch element, in a `lax.map`."""
  mapped = [jnp.moveaxis(a, d, 0) for a, d in zip(args, dims) if d is not None]

  def one(slices):
    it = iter(slices)
    return prim.bind(*(next(it) if d is not None else a
                       for a, d in zip(args, dims)), **params)

  outs = lax.map(one, mapped)
  return outs, (0,) * len(outs)


# --- lowering ------------------------------------------------------------------

def composite_attributes(options: SoftmaxOptions, in_features: int) -> dict:
  """Every option, plus the logit scale in force, as the composite's
  attributes: `SoftmaxOptions.to_attributes`, the one options <-> attributes
  pair (the passes read them back with `from_attributes`)."""
  return options.to_attributes(in_features)


def _composite(name: str, decomposition, options: SoftmaxOptions, *args):
  """`stablehlo.composite name(args)`, decomposing into the dense reference."""
  def dense(*operands, **attributes):
    del attributes  # the same options, as the composite's attributes
    return decomposition(*operands, opts=options)

  op = lax.composite(dense, name, version=contract.VERSION)
  return op(*args, **composite_attributes(options, in_features=args[0].shape[1]))


def _explicit_layout(x_aval, embedding_aval):
  """The layout of an Explicit mesh that shards the vocab, read from the avals
  with `gshard-shard-vocab`'s rule; None where the embedding's vocab is not
  sharded over Explicit axes, or its model dimension is, or the shards do not
  divide V (the partitioner then decides: `gshard_op/partitioning.py`)."""
  from gshard_op import sharded  # deferred, as in _chunked

  emb_sharding = embedding_aval.sharding
  mesh = getattr(emb_sharding, "mesh", None)
  if mesh is None or getattr(emb_sharding, "spec", None) is None or mesh.empty:
    return None
  vocab = partitioning.spec_axes(emb_sharding, 0)
  explicit = dict(zip(mesh.axis_names, mesh.axis_types))
  if (not vocab or any(explicit[a] != jax.sharding.AxisType.Explicit for a in vocab)
      or partitioning.spec_axes(emb_sharding, 1)):
    return None
  tokens = ()
  if getattr(x_aval.sharding, "spec", None) is not None:
    tokens = partitioning.spec_axes(x_aval.sharding, 0)
  try:
    return sharded.vocab_layout(
        sharded.Mesh.of_axes(mesh.shape), num_tokens=x_aval.shape[0],
        num_classes=embedding_aval.shape[0], vocab_axes=vocab, token_axes=tokens)
  except sharded.Unsupported:
    return None


def _chunked(ctx: mlir.LoweringRuleContext, prim: Primitive, *args, options: SoftmaxOptions,
             lowering: Lowering):
  """The chunked programs, lowered at the point JAX lowers the primitive:

  * inside a partitioned program (`lowering.shard`), this device's loops on
    its blocks plus the collectives that combine them (`sharded.body`);
  * under an Explicit mesh that shards the vocab, the same per-device body in
    a manual computation, as `gshard-shard-vocab` emits it;
  * in any other program XLA partitions, a custom-partitioning call that
    leads back to the first case once the shardings are known;
  * otherwise (one device, `shard_map` bodies, `jax.export`), the loops of
    `gshard-chunk-softmax` (`chunked.forward` / `chunked.grad`) on the whole
    operands.
  """
  # Deferred: only a lowering needs the programs (and the MLIR bindings).
  from gshard_op import chunked, sharded
  from gshard_op.ir.manual import emit_manual
  from gshard_op.ir.splice import spec_of, tagging_new_loops
  from gshard_op.online_softmax import Spec

  is_grad = prim is shared_embedding_softmax_grad_p
  (n, m), v = ctx.avals_in[0].shape, ctx.avals_in[1].shape[0]
  spec = Spec.of(options, m, v, labels_are_ids=jnp.issubdtype(ctx.avals_in[2].dtype, jnp.integer))

  def plan(devices: int, n_local: int, v_local: int) -> chunked.ChunkPlan:
    """Each device's loops get its share of the budget."""
    return chunked.plan_chunks(
        n_local, v_local,
        memory_budget_mib=lowering.budget_for(ctx.module_context.platforms) / devices)

  def lower(fn, *static):
    return mlir.lower_fun(functools.partial(fn, *static), multiple_results=True)

  if lowering.shard is not None:
    layout = lowering.shard.layout()
    spec = dataclasses.replace(spec, num_classes=v * layout.vocab_shards)
    chunks = plan(layout.mesh.device_ids.size, n, v)
    return lower(sharded.body, spec, lowering.shard, is_grad, chunks)(ctx, *args)
  layout = _explicit_layout(ctx.avals_in[0], ctx.avals_in[1])
  if layout is not None:
    n_local, v_local = n // layout.token_shards, v // layout.vocab_shards
    chunks = plan(layout.mesh.device_ids.size, n_local, v_local)
    label_mass = None
    if not spec.labels_are_ids:
      labels = ShapedArray(ctx.avals_in[2].shape, ctx.avals_in[2].dtype)
      label_mass = lower(lambda l: [spec.label_mass(l)])(
          ctx.replace(avals_in=[labels], avals_out=[ShapedArray((n,), jnp.float32)]), args[2])[0]

    def body(local: list) -> list:
      local_in = [ShapedArray(t.shape, t.dtype) for t in map(spec_of, local)]
      local_out = [ShapedArray((n_local, m), ctx.avals_out[0].dtype),
                   ShapedArray((v_local, m), ctx.avals_out[1].dtype)] if is_grad else [
                       ShapedArray((n_local,), aval.dtype) for aval in ctx.avals_out]
      return lower(sharded.body, spec, layout.spec(), is_grad, chunks)(
          ctx.replace(avals_in=local_in, avals_out=local_out), *local)

    result_types = [mlir.aval_to_ir_type(ctx.module_context, aval) for aval in ctx.avals_out]
    return emit_manual(layout, is_grad, spec.labels_are_ids, args, label_mass, result_types,
                       body, tag="gshard-shard-vocab")
  if partitioning.applies(ctx):
    return partitioning.lower(ctx, prim, args, is_grad=is_grad, options=options,
                              lowering=lowering)
  chunks = plan(1, n, v)
  program = chunked.grad if is_grad else chunked.forward
  with tagging_new_loops(ir.InsertionPoint.current.block,
                         f"gshard-lowering: {chunks.attribute()}"):
    return lower(program, spec, chunks)(ctx, *args)


def _lowering_rule(name: str, decomposition, prim: Primitive):
  composite = mlir.lower_fun(
      lambda *args, options, lowering: _composite(name, decomposition, options, *args),
      multiple_results=True)

  def rule(ctx, *args, options: SoftmaxOptions, lowering: Lowering):
    if lowering.mode == "composite":
      return composite(ctx, *args, options=options, lowering=lowering)
    return _chunked(ctx, prim, *args, options=options, lowering=lowering)

  return rule


# --- forward -------------------------------------------------------------------

shared_embedding_softmax_p = Primitive("gshard_shared_embedding_softmax")
shared_embedding_softmax_p.multiple_results = True
shared_embedding_softmax_p.def_impl(_jit_impl(shared_embedding_softmax_p))


def _forward_abstract_eval(x, embedding, labels, *, options, lowering):
  del lowering
  _check_operands(x, embedding, labels)
  f32 = _token_aval(x, np.float32)
  return (f32, _token_aval(x, np.int32), f32, f32) + ((f32,) if options.with_entropy else ())


def _forward_batch_rule(args, dims, **params):
  x, embedding, labels = args
  x_dim, emb_dim, labels_dim = dims
  if emb_dim is not None:
    return _map_over_batch(shared_embedding_softmax_p, args, dims, **params)
  # Per-token results of an unbatched embedding: fold the batch into the tokens.
  size = x.shape[x_dim] if x_dim is not None else labels.shape[labels_dim]
  x = batching.bdim_at_front(x, x_dim, size)
  labels = batching.bdim_at_front(labels, labels_dim, size)
  outs = shared_embedding_softmax_p.bind(
      x.reshape(-1, x.shape[-1]), embedding, labels.reshape(-1, *labels.shape[2:]), **params)
  return [o.reshape(size, -1) for o in outs], (0,) * len(outs)


shared_embedding_softmax_p.def_abstract_eval(_forward_abstract_eval)
mlir.register_lowering(shared_embedding_softmax_p, _lowering_rule(
    contract.FORWARD, reference.per_token_forward, shared_embedding_softmax_p))
batching.primitive_batchers[shared_embedding_softmax_p] = _forward_batch_rule
partitioning.needs_devices(shared_embedding_softmax_p)


# --- gradient ------------------------------------------------------------------

shared_embedding_softmax_grad_p = Primitive("gshard_shared_embedding_softmax_grad")
shared_embedding_softmax_grad_p.multiple_results = True
shared_embedding_softmax_grad_p.def_impl(_jit_impl(shared_embedding_softmax_grad_p))


def _grad_abstract_eval(x, embedding, labels, *per_token, options, lowering):
  del lowering
  _check_operands(x, embedding, labels)
  names = contract.grad_operands(options.with_entropy)[3:]
  if len(per_token) != len(names):
    raise TypeError(f"the gradient takes {', '.join(names)}; got {len(per_token)} of them")
  for name, a in zip(names, per_token):
    if a.shape != (x.shape[0],) or a.dtype != np.float32:
      raise TypeError(f"{name} must be float32[{x.shape[0]}], got {a.dtype}{list(a.shape)}")
  return (ShapedArray(x.shape, x.dtype, sharding=x.sharding),
          ShapedArray(embedding.shape, embedding.dtype, sharding=embedding.sharding))


def _grad_batch_rule(args, dims, **params):
  # d_embedding is per batch element even when the embedding is not batched,
  # so tokens cannot simply be folded together: map over the batch.
  return _map_over_batch(shared_embedding_softmax_grad_p, args, dims, **params)


shared_embedding_softmax_grad_p.def_abstract_eval(_grad_abstract_eval)
mlir.register_lowering(shared_embedding_softmax_grad_p, _lowering_rule(
    contract.GRAD, reference.per_token_grad, shared_embedding_softmax_grad_p))
batching.primitive_batchers[shared_embedding_softmax_grad_p] = _grad_batch_rule
partitioning.needs_devices(shared_embedding_softmax_grad_p)


# --- tangent (linear in t_x, t_embedding; transposes to the gradient) ----------

shared_embedding_softmax_tangent_p = Primitive("gshard_shared_embedding_softmax_tangent")
shared_embedding_softmax_tangent_p.multiple_results = True
shared_embedding_softmax_tangent_p.def_impl(_jit_impl(shared_embedding_softmax_tangent_p))


# The tangent's operands: x, embedding, labels, the forward's saved per-token
# results (logsumexp, and the entropy when asked for), then t_x, t_embedding.

def _tangent_abstract_eval(x, embedding, labels, *rest, options, lowering):
  del lowering
  _check_operands(x, embedding, labels)
  t_x, t_embedding = rest[-2:]
  for name, t, like in (("t_x", t_x, x), ("t_embedding", t_embedding, embedding)):
    if t.shape != like.shape or t.dtype != like.dtype:
      raise TypeError(f"{name} must be {like.dtype}{list(like.shape)}, got {t.dtype}{list(t.shape)}")
  f32 = _token_aval(x, np.float32)
  return (f32,) * (4 if options.with_entropy else 3)


def _dense_tangent(x, embedding, labels, *rest, options, lowering):
  """The tangents of (xent, logsumexp, logsumexp**2[, entropy]), by JAX's JVP
  of the reference."""
  del lowering
  t_x, t_embedding = rest[-2:]

  def smooth_outputs(x, embedding):
    xent, _, lse, lse_squared, *entropy = reference.per_token_forward(
        x, embedding, labels, options)
    return (xent, lse, lse_squared, *entropy)

  return list(jax.jvp(smooth_outputs, (x, embedding), (t_x, t_embedding))[1])


def _tangent_transpose(cotangents, x, embedding, labels, *rest, options, lowering):
  saved, (t_x, t_embedding) = rest[:-2], rest[-2:]
  g_xent, g_lse, g_lse_squared, *g_entropy = (ad.instantiate_zeros(c) for c in cotangents)
  entropy = (saved[1], g_entropy[0]) if options.with_entropy else ()
  d_x, d_embedding = shared_embedding_softmax_grad_p.bind(
      x, embedding, labels, saved[0], g_xent, g_lse, g_lse_squared, *entropy, options=options,
      lowering=lowering)
  return (None,) * (3 + len(saved)) + (d_x if ad.is_undefined_primal(t_x) else None,
                                       d_embedding if ad.is_undefined_primal(t_embedding)
                                       else None)


def _tangent_batch_rule(args, dims, **params):
  return _map_over_batch(shared_embedding_softmax_tangent_p, args, dims, **params)


shared_embedding_softmax_tangent_p.def_abstract_eval(_tangent_abstract_eval)
mlir.register_lowering(shared_embedding_softmax_tangent_p,
                       mlir.lower_fun(_dense_tangent, multiple_results=True))
ad.primitive_transposes[shared_embedding_softmax_tangent_p] = _tangent_transpose
batching.primitive_batchers[shared_embedding_softmax_tangent_p] = _tangent_batch_rule


def _grad_jvp(primals, tangents, *, options, lowering):
  """Second derivatives: the gradient's JVP, through the reference (dense)."""
  x, embedding, labels, *per_token = primals
  tangents = [ad.instantiate_zeros(t) for i, t in enumerate(tangents) if i != 2]

  def grad(x, embedding, *per_token):
    return reference.per_token_grad(x, embedding, labels, *per_token, opts=options)

  out = shared_embedding_softmax_grad_p.bind(*primals, options=options, lowering=lowering)
  return out, list(jax.jvp(grad, (x, embedding, *per_token), tuple(tangents))[1])


ad.primitive_jvps[shared_embedding_softmax_grad_p] = _grad_jvp


# --- differentiation -----------------------------------------------------------

def per_token_softmax(x, embedding, labels, options: SoftmaxOptions):
  """`(per_example_xent, per_example_argmax, logsumexp, logsumexp_squared)`,
  then `per_example_entropy` with `options.with_entropy`.

  Flat operands as in the module docstring; differentiable in `x` and
  `embedding` (labels, ids or probabilities, carry no gradient). The lowering
  route in force here (`gshard_op.lowering`) is fixed for the forward and its
  derivatives alike, and so is the matmul precision (`options.precision`, or
  `jax.default_matmul_precision` here when it is None).
  """
  return _per_token_softmax(x, embedding, labels, options.with_default_precision(),
                            lowering_lib.current())


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _per_token_softmax(x, embedding, labels, options: SoftmaxOptions, lowering: Lowering):
  return tuple(shared_embedding_softmax_p.bind(x, embedding, labels, options=options,
                                               lowering=lowering))


@_per_token_softmax.defjvp
def _per_token_softmax_jvp(options, lowering, primals, tangents):
  x, embedding, labels = primals
  t_x, t_embedding, _ = tangents  # labels carry no gradient
  outs = _per_token_softmax(x, embedding, labels, options, lowering)
  saved = (outs[2], outs[4]) if options.with_entropy else (outs[2],)  # lse[, entropy]
  t_xent, t_lse, t_lse_squared, *t_entropy = shared_embedding_softmax_tangent_p.bind(
      x, embedding, labels, *saved, t_x, t_embedding, options=options, lowering=lowering)
  t_argmax = np.zeros(outs[1].shape, jax.dtypes.float0)  # integer: no tangent
  return outs, (t_xent, t_argmax, t_lse, t_lse_squared, *t_entropy)
