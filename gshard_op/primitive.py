"""The two primitives and their lowering to `stablehlo.composite`.

`per_token_softmax(x, embedding, labels, options)` is differentiable through a
`custom_vjp` tying two primitives:

* `shared_embedding_softmax_p`: `(x[N,M], embedding[V,M], labels) ->
  (per_example_xent[N] f32, per_example_argmax[N] i32, logsumexp[N] f32,
  logsumexp_squared[N] f32)`;
* `shared_embedding_softmax_grad_p`: `(x, embedding, labels, logsumexp,
  g_xent, g_logsumexp, g_logsumexp_squared) -> (d_x[N,M], d_embedding[V,M])`.

`labels` is either class ids `[N]` (int32) or class probabilities `[N,V]`
(float). Each primitive lowers to one `stablehlo.composite` whose
`decomposition` is the dense reference of `gshard_op/reference.py`; see
`gshard_op/contract.py` and `docs/contract.md`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src import core, dispatch
from jax._src.interpreters import batching, mlir
from jax._src.lib.mlir import ir
from jax._src.lib.mlir.dialects import hlo
from jax.extend.core import Primitive

from gshard_op import contract, reference
from gshard_op.options import SoftmaxOptions, logit_scale


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
    return core.ShapedArray((x.shape[0],), dtype, sharding=sharding.update(spec=spec))
  return core.ShapedArray((x.shape[0],), dtype)


def _composite_lowering(ctx: mlir.LoweringRuleContext, *args, name: str,
                        decomposition, options: SoftmaxOptions):
  """Emits `stablehlo.composite name(args)` decomposing into `decomposition`."""
  closed = jax.make_jaxpr(functools.partial(decomposition, opts=options))(*ctx.avals_in)
  const_args = core.jaxpr_const_args(closed.jaxpr)
  const_values = tuple(mlir.ir_constants(c, const_lowering=ctx.const_lowering, aval=aval)
                       for c, aval in const_args)
  func_op, _, _ = mlir.lower_called_computation(
      name, closed, ctx.module_context, len(const_args),
      (*(aval for _, aval in const_args), *ctx.avals_in), ctx.avals_out, ctx.tokens_in)
  operands, _ = mlir.ir_tree_registry.flatten(const_values + args)
  return hlo.CompositeOp(
      func_op.type.results, operands,
      name=ir.StringAttr.get(name),
      decomposition=ir.FlatSymbolRefAttr.get(func_op.name.value),
      composite_attributes=composite_attributes(options, in_features=ctx.avals_in[0].shape[1]),
      version=mlir.i32_attr(contract.VERSION),
  ).results


def composite_attributes(options: SoftmaxOptions, in_features: int) -> ir.DictAttr:
  """Every option, plus the logit scale, as the composite's attribute dict."""
  f64 = ir.F64Type.get()
  values = {name: getattr(options, name) for name in contract.FLOAT_ATTRIBUTES
            if name != "logit_scale"}
  values["logit_scale"] = logit_scale(in_features)
  attrs = {k: ir.FloatAttr.get(f64, v) for k, v in values.items()}
  for name in contract.BOOL_ATTRIBUTES:
    attrs[name] = ir.BoolAttr.get(getattr(options, name))
  return ir.DictAttr.get(attrs)


def _map_over_batch(prim, args, dims, **params):
  """Batching fallback: one primitive per batch element, in a `lax.map`."""
  mapped = [jnp.moveaxis(a, d, 0) for a, d in zip(args, dims) if d is not None]

  def one(slices):
    it = iter(slices)
    return prim.bind(*(next(it) if d is not None else a
                       for a, d in zip(args, dims)), **params)

  outs = lax.map(one, mapped)
  return outs, (0,) * len(outs)


# --- forward -------------------------------------------------------------------

shared_embedding_softmax_p = Primitive("gshard_shared_embedding_softmax")
shared_embedding_softmax_p.multiple_results = True
shared_embedding_softmax_p.def_impl(
    functools.partial(dispatch.apply_primitive, shared_embedding_softmax_p))


def _forward_abstract_eval(x, embedding, labels, *, options):
  del options
  _check_operands(x, embedding, labels)
  f32 = _token_aval(x, np.float32)
  return f32, _token_aval(x, np.int32), f32, f32


def _forward_batch_rule(args, dims, *, options):
  x, embedding, labels = args
  x_dim, emb_dim, labels_dim = dims
  if emb_dim is not None:
    return _map_over_batch(shared_embedding_softmax_p, args, dims, options=options)
  # Per-token results of an unbatched embedding: fold the batch into the tokens.
  size = x.shape[x_dim] if x_dim is not None else labels.shape[labels_dim]
  x = batching.bdim_at_front(x, x_dim, size)
  labels = batching.bdim_at_front(labels, labels_dim, size)
  outs = shared_embedding_softmax_p.bind(
      x.reshape(-1, x.shape[-1]), embedding, labels.reshape(-1, *labels.shape[2:]),
      options=options)
  return [o.reshape(size, -1) for o in outs], (0,) * len(outs)


shared_embedding_softmax_p.def_abstract_eval(_forward_abstract_eval)
mlir.register_lowering(shared_embedding_softmax_p, functools.partial(
    _composite_lowering, name=contract.FORWARD, decomposition=reference.per_token_forward))
batching.primitive_batchers[shared_embedding_softmax_p] = _forward_batch_rule


# --- gradient ------------------------------------------------------------------

shared_embedding_softmax_grad_p = Primitive("gshard_shared_embedding_softmax_grad")
shared_embedding_softmax_grad_p.multiple_results = True
shared_embedding_softmax_grad_p.def_impl(
    functools.partial(dispatch.apply_primitive, shared_embedding_softmax_grad_p))


def _grad_abstract_eval(x, embedding, labels, lse, g_xent, g_lse, g_lse_squared, *, options):
  del options
  _check_operands(x, embedding, labels)
  for name, a in (("logsumexp", lse), ("g_per_example_xent", g_xent),
                  ("g_logsumexp", g_lse), ("g_logsumexp_squared", g_lse_squared)):
    if a.shape != (x.shape[0],) or a.dtype != np.float32:
      raise TypeError(f"{name} must be float32[{x.shape[0]}], got {a.dtype}{list(a.shape)}")
  return (core.ShapedArray(x.shape, x.dtype, sharding=x.sharding),
          core.ShapedArray(embedding.shape, embedding.dtype, sharding=embedding.sharding))


def _grad_batch_rule(args, dims, *, options):
  # d_embedding is per batch element even when the embedding is not batched,
  # so tokens cannot simply be folded together: map over the batch.
  return _map_over_batch(shared_embedding_softmax_grad_p, args, dims, options=options)


shared_embedding_softmax_grad_p.def_abstract_eval(_grad_abstract_eval)
mlir.register_lowering(shared_embedding_softmax_grad_p, functools.partial(
    _composite_lowering, name=contract.GRAD, decomposition=reference.per_token_grad))
batching.primitive_batchers[shared_embedding_softmax_grad_p] = _grad_batch_rule


# --- differentiation -----------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def per_token_softmax(x, embedding, labels, options: SoftmaxOptions):
  """`(per_example_xent, per_example_argmax, logsumexp, logsumexp_squared)`.

  Flat operands as in the module docstring; differentiable in `x` and
  `embedding` (labels, ids or probabilities, carry no gradient).
  """
  return tuple(shared_embedding_softmax_p.bind(x, embedding, labels, options=options))


def _per_token_softmax_fwd(x, embedding, labels, options):
  outs = per_token_softmax(x, embedding, labels, options)
  return outs, (x, embedding, labels, outs[2])


def _per_token_softmax_bwd(options, residuals, cotangents):
  x, embedding, labels, lse = residuals
  g_xent, _, g_lse, g_lse_squared = cotangents  # argmax is integer: no cotangent
  d_x, d_embedding = shared_embedding_softmax_grad_p.bind(
      x, embedding, labels, lse, g_xent, g_lse, g_lse_squared, options=options)
  return d_x, d_embedding, None


per_token_softmax.defvjp(_per_token_softmax_fwd, _per_token_softmax_bwd)
