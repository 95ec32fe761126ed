"""A training step's forward and gradient in one sweep over token blocks.

What `gshard-fuse-fwd-bwd` splices in place of a forward composite and its
gradient composite when the gradient's cotangents do not depend on the
forward's results:

    for each block of T tokens:                  # stablehlo.while
      z = x_blk @ E.T                            # [T, V]: the block's softmax is final
      xent, argmax, lse, lse**2 = stats of z
      dz = cotangent of z from lse               # same buffer, no recomputation
      d_x[blk] = dz @ E ;  d_E += dz.T @ x_blk   # three matmuls in all, not four

The math of the block is `gshard_op/online_softmax.py`'s, the loop
bookkeeping `gshard_op/chunked.py`'s.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from gshard_op import reference
from gshard_op.chunked import (chunk_of, loop, per_token_outputs, rows_at, target_logits,
                               write_owned_rows)
from gshard_op.online_softmax import Spec, Stats, block_start, logits_cotangent, owned

# Live float32 [T, V] buffers of the fused body (logits, softmax/cotangent).
LIVE_BLOCK_BUFFERS = 2
MIN_TOKEN_CHUNK = 8


def plan_token_chunk(num_tokens: int, num_classes: int, *, token_chunk: int = 0,
                     memory_budget_mib: float) -> int | None:
  """Tokens per block: as given, else the largest power of two whose `[T, V]`
  buffers fit the (finite) budget; None when fewer than `MIN_TOKEN_CHUNK` would
  fit, or when there are no tokens (the chunked rewrite handles N = 0)."""
  if num_tokens == 0:
    return None
  if token_chunk > 0:
    return min(token_chunk, num_tokens)
  fit = int(memory_budget_mib * 2**20 // (4 * LIVE_BLOCK_BUFFERS * num_classes))
  if fit < min(MIN_TOKEN_CHUNK, num_tokens):
    return None
  return min(num_tokens, 1 << (fit.bit_length() - 1))


def sweep(spec: Spec, tokens: int, accumulator, update_rows: int, x, embedding, labels,
          g_xent, g_lse, g_lse_squared, g_entropy=None):
  """`(forward results..., d_x, d_embedding)` from one loop over blocks of
  `tokens` tokens; `d_embedding` sums in `accumulator` (float32 or bf16),
  `update_rows` rows at a time (`accumulate_rows`). `g_entropy` (with
  `with_entropy`) is the entropy's cotangent, whose share of the logits'
  cotangent uses the block's own entropy."""
  n, m = x.shape
  v = embedding.shape[0]
  xs = spec.times_input_scale(x)
  label_mass = spec.label_mass(labels)
  q_mass = spec.target_mass(label_mass)
  with_entropy = spec.options.with_entropy

  def step(j, acc):
    *outputs, d_x, d_emb = acc
    start, first_owned = block_start(j, tokens, n)
    x_blk, labels_blk = rows_at(xs, start, tokens), rows_at(labels, start, tokens)
    g_xent_blk, g_lse_blk, g_sq_blk, q_blk, mass_blk = (
        rows_at(a, start, tokens) for a in (g_xent, g_lse, g_lse_squared, q_mass, label_mass))
    g_h_blk = rows_at(g_entropy, start, tokens) if with_entropy else None
    own = None
    if first_owned is not None:  # tokens an earlier block had add no gradient again
      own = owned(start, first_owned, (tokens,), 0)
      g_xent_blk, g_lse_blk, g_sq_blk = (jnp.where(own, g, 0.0)
                                         for g in (g_xent_blk, g_lse_blk, g_sq_blk))
      if with_entropy:
        g_h_blk = jnp.where(own, g_h_blk, 0.0)
    chunk, _ = chunk_of(spec, x_blk, embedding, labels_blk, 0, None, v, scaled_x=True)
    stats = Stats.initial((tokens,), with_entropy).update(spec, chunk,
                                                          target=not spec.labels_are_ids)
    if spec.labels_are_ids:
      stats = stats._replace(t=target_logits(spec, x_blk, embedding, labels_blk, scaled_x=True))
    results = stats.finalize(spec, mass_blk)
    lse = results[2]
    g_p = reference.probability_cotangent(lse, g_lse_blk, g_sq_blk)
    entropy = (lse - results[4], g_h_blk) if with_entropy else None
    dz = logits_cotangent(spec, chunk, lse, q_blk, g_xent_blk, g_p, entropy)
    d_x_blk = spec.times_input_scale(spec.dot(dz.astype(embedding.dtype), embedding, (1, 0)))
    d_x = write_owned_rows(d_x, d_x_blk.astype(x.dtype), start, own)
    d_emb = accumulate_rows(spec, d_emb, dz.astype(x.dtype), x_blk, update_rows)
    outputs = [lax.dynamic_update_slice_in_dim(o, r, start, axis=0)
               for o, r in zip(outputs, results)]
    return (*outputs, d_x, d_emb)

  *forward, d_x, d_emb = loop(math.ceil(n / tokens), step,
                              (*per_token_outputs(n, with_entropy), jnp.zeros((n, m), x.dtype),
                               jnp.zeros((v, m), accumulator)))
  return (*forward, d_x, d_emb.astype(embedding.dtype))


def accumulate_rows(spec: Spec, d_emb: jax.Array, dz: jax.Array, x_blk: jax.Array,
                    rows: int) -> jax.Array:
  """`d_emb += dz.T @ x_blk`, `rows` rows at a time, each added in place.

  One `[V, M]` add would make XLA keep a second `[V, M]` buffer (it does not
  update a while-loop carry in place through a dot + add fusion);
  `dynamic_update_slice` of a slice it does, so the carry can be the result.
  """
  v = d_emb.shape[0]

  def step(k, d_emb):
    start, first_owned = block_start(k, rows, v)
    dz_rows = lax.dynamic_slice_in_dim(dz, start, rows, axis=1)
    if first_owned is not None:  # rows an earlier step already added
      dz_rows = jnp.where(owned(start, first_owned, (1, rows), 1), dz_rows, 0.0)
    update = spec.dot(dz_rows, x_blk, (0, 0))
    old = rows_at(d_emb, start, rows)
    return lax.dynamic_update_slice_in_dim(d_emb, old + update.astype(d_emb.dtype), start, axis=0)

  return loop(math.ceil(v / rows), step, d_emb)
