"""The chunked forward and gradient: loops over vocab chunks (and token blocks).

These are the programs every `[N, V]`-free XLA route runs: the primitives'
lowering emits them with `mlir.lower_fun`, `gshard-chunk-softmax` splices
their StableHLO in place of a composite, and the per-shard body
(`gshard_op/sharded.py`) runs them on each device's slice. The math of one
chunk is `gshard_op/online_softmax.py`'s.

Forward, for each block of T tokens (one block unless the budget says more):

    stats = Stats.initial()
    for k in range(ceil(V / C)):                 # stablehlo.while
      chunk = logits of the block vs classes [start_k, start_k + C)
      stats = stats.update(chunk)                # online max / sum-exp / argmax
    xent, argmax, lse, lse**2 = stats.finalize()

Gradient, same loops: recompute the chunk's logits, `dz` from the saved
logsumexp, then `d_x += dz @ E_chunk` and `d_E[chunk] += dz.T @ x`, both in
float32; `d_E`'s rows are stored in the embedding's dtype when one token block
covers all tokens (each chunk's rows are then final), in float32 only when
token blocks must sum into them. No `[N, V]` tensor is created. The last chunk
of an uneven split starts at `V - C` and masks the classes an earlier chunk
already covered (`online_softmax.block_start`), so nothing is padded or
copied; token blocks do the same with tokens.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gshard_op import reference
from gshard_op.online_softmax import (F32, Chunk, Spec, Stats, block_start, logits_cotangent,
                                      owned)

MIN_VOCAB_CHUNK = 128
# Live float32 [T, C] buffers in the gradient's loop body (z_raw, z, p, dz).
LIVE_CHUNK_BUFFERS = 4


# --- plans -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ChunkPlan:
  token_chunk: int   # T, tokens per block (>= N: no token loop)
  vocab_chunk: int   # C, classes per chunk (== V: one chunk)

  def attribute(self) -> str:
    return f"token_chunk={self.token_chunk} vocab_chunk={self.vocab_chunk}"


def plan_chunks(num_tokens: int, num_classes: int, *, vocab_chunk: int = 0,
                token_chunk: int = 0, memory_budget_mib: float) -> ChunkPlan:
  """Chunk sizes: the ones given, else the largest that keep the loop body's
  `[T, C]` float32 buffers within the (finite, positive) budget (power-of-two
  vocab chunks of at least 128 classes; tokens are split only when even that
  does not fit). No tokens (N = 0) make one empty block."""
  budget = memory_budget_mib * 2**20 / (4 * LIVE_CHUNK_BUFFERS)  # elements of one [T, C]
  tokens = min(token_chunk, num_tokens) if token_chunk > 0 else num_tokens
  if vocab_chunk > 0:
    vocab = min(vocab_chunk, num_classes)
  else:
    fit = max(1, int(budget // max(tokens, 1)))
    vocab = min(num_classes, max(MIN_VOCAB_CHUNK, 1 << (fit.bit_length() - 1)))
  if token_chunk <= 0 and tokens * vocab > budget:
    tokens = max(1, min(num_tokens, int(budget // vocab)))
  return ChunkPlan(token_chunk=tokens, vocab_chunk=vocab)


# --- loop bookkeeping ----------------------------------------------------------------

def loop(trips: int, body, init):
  """`lax.fori_loop(0, trips, body, init)` with an int32 index whatever
  `jax_enable_x64` says (class ids and starts are int32)."""
  return lax.fori_loop(np.int32(0), np.int32(trips), body, init)


def rows_at(a: jax.Array, start, count: int) -> jax.Array:
  """`a[start:start + count]` along the first dimension."""
  return lax.dynamic_slice_in_dim(a, start, count, axis=0)


def write_owned_rows(acc: jax.Array, block: jax.Array, start, own) -> jax.Array:
  """`acc` with rows `[start, start + T)` set to `block` where `own` (bool
  `[T]`; None: all rows), keeping what an earlier block wrote elsewhere."""
  if own is not None:
    kept = rows_at(acc, start, block.shape[0])
    block = jnp.where(own.reshape(own.shape + (1,) * (block.ndim - 1)), block, kept)
  return lax.dynamic_update_slice_in_dim(acc, block, start, axis=0)


def per_token_outputs(tokens: int, with_entropy: bool) -> tuple[jax.Array, ...]:
  """Zeros for the forward's `[N]` results, in order: xent, argmax (int32),
  logsumexp, its square, and the entropy when asked for."""
  return tuple(jnp.zeros((tokens,), dtype)
               for dtype in (F32, jnp.int32, F32, F32) + (F32,) * with_entropy)


def chunk_of(spec: Spec, x: jax.Array, embedding: jax.Array, labels: jax.Array, start,
             first_owned, size: int, class_offset=None, *, scaled_x: bool = False):
  """`(chunk, embedding slice)`: the logits of tokens `x` against `size`
  classes from local row `start` of `embedding`. Praxis's scale goes on the
  `[C, M]` slice (which then serves `d_x` as it is) unless `scaled_x` says `x`
  carries it; a `logit_scale` option goes on the float32 logits. Class ids
  are `class_offset + row` (a shard's first global class)."""
  emb = rows_at(embedding, start, size)
  if not scaled_x:
    emb = spec.times_input_scale(emb)
  mask = None if first_owned is None else owned(start, first_owned, (1, size), 1)
  first = start if class_offset is None else start + class_offset
  chunk_labels = labels if spec.labels_are_ids else lax.dynamic_slice_in_dim(
      labels, start, size, axis=1)
  return Chunk.of(spec, spec.dot(x, emb, (1, 1)), first, mask, chunk_labels), emb


def target_logits(spec: Spec, x: jax.Array, embedding: jax.Array, ids: jax.Array,
                  class_offset=None, *, scaled_x: bool = False) -> jax.Array:
  """Per token, the logit of its label class, f32 `[T]`; 0 for a label outside
  this embedding's classes. One embedding row per token instead of a one-hot
  mask over every chunk: the forward never builds a `[T, C]` target."""
  v_local = embedding.shape[0]
  local = ids.astype(jnp.int32)
  if class_offset is not None:
    local = local - class_offset
  inside = (local >= 0) & (local < v_local)
  rows = embedding[jnp.clip(local, 0, v_local - 1)]
  if not scaled_x:  # rounded as `chunk_of` rounds it
    rows = spec.times_input_scale(rows)
  z_raw = spec.scaled_logits(jnp.sum(x.astype(F32) * rows.astype(F32), axis=1))
  return jnp.where(inside, reference.transform_logits(z_raw, spec.options), 0.0)


# --- the chunked loops -----------------------------------------------------------------

def forward(spec: Spec, plan: ChunkPlan, x, embedding, labels, *, label_mass=None,
            class_offset=None, reduce_stats=None) -> tuple[jax.Array, ...]:
  """The forward composite's `[N]` results (four, five with the entropy).

  `label_mass`, `class_offset` and `reduce_stats` serve the vocab-sharded
  body: the labels' per-token mass when this shard sees only some classes,
  the global id of this shard's first class, and a function combining `Stats`
  across shards before they are finalised."""
  n, v = x.shape[0], embedding.shape[0]
  if label_mass is None:
    label_mass = spec.label_mass(labels)
  with_entropy = spec.options.with_entropy

  def block(x_blk, labels_blk, mass_blk):
    def step(k, stats):
      start, first_owned = block_start(k, plan.vocab_chunk, v)
      chunk, _ = chunk_of(spec, x_blk, embedding, labels_blk, start, first_owned,
                          plan.vocab_chunk, class_offset)
      return stats.update(spec, chunk, target=not spec.labels_are_ids)

    stats = loop(math.ceil(v / plan.vocab_chunk), step,
                 Stats.initial((x_blk.shape[0],), with_entropy))
    if spec.labels_are_ids:
      stats = stats._replace(t=target_logits(spec, x_blk, embedding, labels_blk, class_offset))
    if reduce_stats is not None:
      stats = reduce_stats(stats)
    return stats.finalize(spec, mass_blk)

  if plan.token_chunk >= n:
    return block(x, labels, label_mass)

  t = plan.token_chunk

  def token_step(j, outputs):
    start, _ = block_start(j, t, n)  # an overlap recomputes equal values
    results = block(rows_at(x, start, t), rows_at(labels, start, t), rows_at(label_mass, start, t))
    return tuple(lax.dynamic_update_slice_in_dim(o, r, start, axis=0)
                 for o, r in zip(outputs, results))

  return loop(math.ceil(n / t), token_step, per_token_outputs(n, with_entropy))


def grad(spec: Spec, plan: ChunkPlan, x, embedding, labels, lse, g_xent, g_lse, g_lse_squared,
         entropy=None, g_entropy=None, *, label_mass=None, class_offset=None, reduce_d_x=None,
         reduce_d_emb=None) -> tuple[jax.Array, jax.Array]:
  """The gradient composite's `(d_x, d_embedding)`.

  `entropy` and `g_entropy` (`[N]`, only with `with_entropy`) are the
  forward's entropy and its cotangent. `label_mass` and `class_offset` as for
  `forward`; `reduce_d_x` and `reduce_d_emb` (sharded body) sum each token
  block's float32 `d_x` over the vocab shards and each chunk's `d_embedding`
  update over the token shards, so no `[V, M]`-sized collective buffer is ever
  needed."""
  n, m = x.shape
  v = embedding.shape[0]
  q_mass = spec.target_mass(spec.label_mass(labels) if label_mass is None else label_mass)
  g_p = reference.probability_cotangent(lse, g_lse, g_lse_squared)

  def block(x_blk, labels_blk, per_token, d_emb):
    """One token block: (float32 d_x of the block, updated d_emb)."""
    lse_blk, q_blk, g_xent_blk, g_p_blk, entropy_blk = per_token

    def step(k, acc):
      d_x, d_emb = acc
      start, first_owned = block_start(k, plan.vocab_chunk, v)
      chunk, emb = chunk_of(spec, x_blk, embedding, labels_blk, start, first_owned,
                            plan.vocab_chunk, class_offset)
      dz = logits_cotangent(spec, chunk, lse_blk, q_blk, g_xent_blk, g_p_blk, entropy_blk)
      # Praxis's scale: on the slice, so d_x needs none after, and on d_emb's
      # float32 sum; a logit_scale option: already in dz.
      d_x = d_x + spec.dot(dz.astype(embedding.dtype), emb, (1, 0))
      update = spec.times_input_scale(spec.dot(dz.astype(x.dtype), x_blk, (0, 0)))
      if reduce_d_emb is not None:
        update = reduce_d_emb(update)
      old = rows_at(d_emb, start, plan.vocab_chunk).astype(F32)
      return d_x, lax.dynamic_update_slice_in_dim(d_emb, (old + update).astype(d_emb.dtype),
                                                  start, axis=0)

    d_x, d_emb = loop(math.ceil(v / plan.vocab_chunk), step,
                      (jnp.zeros((x_blk.shape[0], m), F32), d_emb))
    return (d_x if reduce_d_x is None else reduce_d_x(d_x)), d_emb

  # With one token block each chunk's rows of d_embedding are final once
  # computed (rows an overlapping last chunk does not own get `+ 0`), so they
  # are written in the embedding's dtype: no float32 `[V, M]` buffer beside the
  # result. Token blocks sum into the rows, which then stay float32.
  one_block = plan.token_chunk >= n
  d_emb0 = jnp.zeros((v, m), embedding.dtype if one_block else F32)
  if one_block:
    d_x, d_emb = block(x, labels, (lse, q_mass, g_xent, g_p,
                                   None if entropy is None else (lse - entropy, g_entropy)),
                       d_emb0)
  else:
    t = plan.token_chunk

    def token_step(j, acc):
      d_x, d_emb = acc
      start, first_owned = block_start(j, t, n)
      lse_blk, q_blk, g_xent_blk, g_p_blk = (rows_at(a, start, t) for a in (lse, q_mass, g_xent, g_p))
      g_h_blk = None if entropy is None else rows_at(g_entropy, start, t)
      own = None
      if first_owned is not None:  # tokens an earlier block had: no contribution
        own = owned(start, first_owned, (t,), 0)
        g_xent_blk, g_p_blk = (jnp.where(own, g, 0.0) for g in (g_xent_blk, g_p_blk))
        if entropy is not None:
          g_h_blk = jnp.where(own, g_h_blk, 0.0)
      # The entropy's share needs the expected logit E[z] = lse - H.
      expected = None if entropy is None else (lse_blk - rows_at(entropy, start, t), g_h_blk)
      d_x_blk, d_emb = block(rows_at(x, start, t), rows_at(labels, start, t),
                             (lse_blk, q_blk, g_xent_blk, g_p_blk, expected), d_emb)
      return write_owned_rows(d_x, d_x_blk, start, own), d_emb

    d_x, d_emb = loop(math.ceil(n / t), token_step, (jnp.zeros((n, m), F32), d_emb0))
  return d_x.astype(x.dtype), d_emb.astype(embedding.dtype)
