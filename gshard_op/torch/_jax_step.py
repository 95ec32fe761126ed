"""The JAX side of the torch ops: one jitted function per option set.

A `Config` (the options and what to return) is the static argument of each
step; the custom ops (`_ops.py`) take it as one string (`encode`) and rebuild
it (`decode`). Each step is `gshard_op.jit` (jax.jit plus the gshard passes, so
the `[tokens, classes]` logits never exist), cached here per `Config` and by
`gshard_op.jit` per shape and dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp

import gshard_op
from gshard_op.functional import shared_embedding_softmax as jax_softmax
from gshard_op.options import SoftmaxOptions


@dataclasses.dataclass(frozen=True)
class Config:
  """The static arguments of one op call: options and what to return."""
  options: SoftmaxOptions
  ignore_index: int
  return_logits: bool


# The ops' schemas take primitive types only, so a call's options cross into
# them as one string: the composites' attributes (`SoftmaxOptions.to_attributes`,
# so an option added there crosses with no change here) as JSON, the precision
# fixed where the call is made, and come back out through `decode`.

def encode(options: SoftmaxOptions) -> str:
  """`options` as the ops' `options` argument."""
  return json.dumps(options.to_attributes(), sort_keys=True)


def decode(options: str, ignore_index: int, return_logits: bool) -> Config:
  """The `Config` of an op call whose options are `encode`d as `options`."""
  return Config(SoftmaxOptions.from_attributes(json.loads(options)),
                ignore_index=ignore_index, return_logits=return_logits)


def _mean(total, denominator):
  """`total / denominator`, a mean over no tokens (denominator 0) NaN as in
  `F.cross_entropy`, with a zero gradient (torch's too) rather than 0 * inf."""
  some = denominator != 0
  return jnp.where(some, total / jnp.where(some, denominator, 1.0), jnp.nan)


def _op_fields(x, embedding, ids, probs, weights, config: Config):
  """`(differentiable, other)` field dicts of the functional op on `[N]` tokens.

  Tokens whose id is `ignore_index` get weight 0 and a `per_example_xent` of 0
  (as `F.cross_entropy` gives them); other ids outside `[0, V)` keep Praxis's
  all-zero target. The means (`avg_xent`, `z_loss`) are taken here, over the
  total weight (torch) or the token count (Praxis), through `_mean`: the
  functional op is always asked for Praxis's count, which is never 0 but for
  an empty batch, and its means are rescaled.
  """
  keep = None
  if ids is not None:
    keep = ids != config.ignore_index
    weights = jnp.where(keep, weights, 0.0)
    ids = jnp.where(keep, ids, -1)
  options = dataclasses.replace(config.options, use_tgt_labels_size_as_loss_denominator=True)
  out = jax_softmax(x, embedding, weights[:, None], ids, probs, options=options)
  xent = out.per_example_xent
  if keep is not None:
    xent = jnp.where(keep, xent, jnp.zeros((), xent.dtype))
  count = out.avg_xent_weight  # float32 N
  if config.options.use_tgt_labels_size_as_loss_denominator:
    denominator = count
  else:
    denominator = out.total_weight
  diff = dict(per_example_xent=xent, total_xent=out.total_xent,
              avg_xent=_mean(out.total_xent, denominator),
              z_loss=(_mean(out.z_loss * count, denominator)
                      if config.options.z_loss_weight > 0 else out.z_loss))
  if config.return_logits:
    diff.update(logits=out.logits, log_probs=out.log_probs)
  if config.options.with_entropy:
    diff.update(per_example_entropy=out.per_example_entropy)
  other = dict(per_example_argmax=out.per_example_argmax,
               per_example_weight=out.per_example_weight[:, 0],
               total_weight=out.total_weight, avg_xent_weight=denominator)
  return diff, other


@functools.lru_cache(maxsize=None)
def forward_fn(config: Config):
  """`(x, e, ids, probs, w) -> (fields, None)`, compiled through the passes."""
  def forward(x, embedding, ids, probs, weights):
    diff, other = _op_fields(x, embedding, ids, probs, weights, config)
    return {**diff, **other}, None
  return gshard_op.jit(forward)


@functools.lru_cache(maxsize=None)
def fused_fn(config: Config):
  """`(x, e, ids, probs, w) -> (fields, (d_x, d_e))` of `avg_xent + z_loss`: one
  module holding the forward and gradient composites, which the fuse pass turns
  into one sweep (three matmuls)."""
  def loss(x, embedding, ids, probs, weights):
    diff, other = _op_fields(x, embedding, ids, probs, weights, config)
    return diff["avg_xent"].astype(jnp.float32) + diff["z_loss"], {**diff, **other}

  def fused(x, embedding, ids, probs, weights):
    (_, fields), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        x, embedding, ids, probs, weights)
    return fields, grads
  return gshard_op.jit(fused)


@functools.lru_cache(maxsize=None)
def vjp_fn(config: Config):
  """`(x, e, ids, probs, w, cotangents) -> (d_x, d_e)` for any cotangents of the
  differentiable fields (a missing one, None, counts as zero)."""
  def vjp(x, embedding, ids, probs, weights, cotangents):
    def diff(x, embedding):
      return _op_fields(x, embedding, ids, probs, weights, config)[0]
    primal, pullback = jax.vjp(diff, x, embedding)
    full = {k: jnp.zeros_like(v) if cotangents.get(k) is None else cotangents[k].astype(v.dtype)
            for k, v in primal.items()}
    return pullback(full)
  return gshard_op.jit(vjp)
