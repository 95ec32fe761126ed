"""The loop kit every rewriting pass shares: chunk plans and the chunked loops.

* `ChunkPlan`, `plan_chunks`: loop sizes from given sizes or a memory budget
  (`gshard_op/budget.py`).
* `emit_forward`, `emit_grad`: the forward and gradient composites as
  `stablehlo.while` loops over vocab chunks (and token blocks), built on the
  online softmax of `gshard_op/ir/softmax.py`. The chunk pass emits them for a
  whole composite, the shard pass for each device's slice, and the
  primitives' lowering directly.
* The loop bookkeeping the fused sweep shares with them: `chunk_start` (an
  uneven split's last chunk overlaps and masks), `owned` (from `softmax`),
  `write_owned_rows`, `token_block`, `per_token_outputs`; and `replace` /
  `tagging_new_loops` to swap a composite for the results and record the plan.

Forward, for each block of T tokens (one block unless the budget says more):

    stats = OnlineStats.initial()
    for k in range(ceil(V / C)):                 # stablehlo.while
      chunk = logits of the block vs classes [start_k, start_k + C)
      stats = stats.update(chunk)                # online max / sum-exp / argmax / target
    xent, argmax, lse, lse**2 = stats.finalize()

Gradient, same loops: recompute the chunk's logits, `dz` from the saved
logsumexp, then `d_x += dz @ E_chunk` and `d_E[chunk] += dz.T @ x`, both
computed in float32; `d_E`'s rows are stored in the embedding's dtype when one
token block covers all tokens (each chunk's rows are then final), in float32
only when token blocks must sum into them. No `[N, V]` tensor is created. The
last chunk of an uneven split starts at `V - C` and masks the classes an earlier chunk already covered, so nothing
is padded or copied; token blocks do the same with tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

from jaxlib.mlir import ir

from gshard_op.ir import builders as b
from gshard_op.ir.softmax import (OnlineStats, Softmax, chunk_logits, logits_cotangent,
                                         owned, probability_cotangent, target_logits)

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

def trip_count(total: int, chunk: int) -> int:
  return math.ceil(total / chunk)


def chunk_start(i: ir.Value, chunk: int, total: int) -> tuple[ir.Value, ir.Value | None]:
  """`(start, first_owned)` of chunk i: starts clamp to `total - chunk`, and an
  uneven split masks what lies below `i * chunk` (None: nothing to mask)."""
  nominal = b.mul(i, chunk)
  if total % chunk == 0:
    return nominal, None
  return b.minimum(nominal, total - chunk), nominal


def write_owned_rows(acc: ir.Value, block: ir.Value, start: ir.Value,
                     own: ir.Value | None) -> ir.Value:
  """`acc` with rows `[start, start + T)` set to `block` where `own` (i1 `[T]`;
  None: all rows), keeping what an earlier block wrote elsewhere."""
  zero = b.scalar(0, b.i32())
  if own is not None:
    kept = b.dynamic_slice(acc, [start, zero], b.shape_of(block))
    block = b.select(b.broadcast(own, b.shape_of(block), [0]), block, kept)
  return b.dynamic_update_slice(acc, block, [start, zero])


def per_token_outputs(tokens: int, with_entropy: bool = False) -> dict[str, ir.Value]:
  """Zero carries for the forward composite's `[N]` results, in order."""
  outputs = {"xent": b.full((tokens,), b.f32(), 0.0), "argmax": b.full((tokens,), b.i32(), 0),
             "lse": b.full((tokens,), b.f32(), 0.0),
             "lse_squared": b.full((tokens,), b.f32(), 0.0)}
  if with_entropy:
    outputs["entropy"] = b.full((tokens,), b.f32(), 0.0)
  return outputs


def token_block(x: ir.Value, labels: ir.Value, start: ir.Value, tokens: int):
  """`(x[start:start+T], labels[start:start+T])` for ids `[N]` or probabilities `[N, V]`."""
  zero = b.scalar(0, b.i32())
  x_blk = b.dynamic_slice(x, [start, zero], [tokens, b.shape_of(x)[1]])
  if len(b.shape_of(labels)) == 1:
    labels_blk = b.dynamic_slice(labels, [start], [tokens])
  else:
    labels_blk = b.dynamic_slice(labels, [start, zero], [tokens, b.shape_of(labels)[1]])
  return x_blk, labels_blk


def replace(op: ir.Operation, new_results: list[ir.Value]) -> None:
  """Replaces every use of `op`'s results by `new_results`, then erases `op`."""
  for old, new in zip(op.results, new_results):
    old.replace_all_uses_with(new)
  op.erase()


@contextlib.contextmanager
def tagging_new_loops(block: ir.Block, text: str):
  """Marks each `stablehlo.while` emitted into `block` inside the `with` with
  `gshard.plan = text`, so the choice a pass (or the lowering) made is visible
  in the IR."""
  before = {o.operation for o in block.operations}
  yield
  for o in block.operations:
    if o.operation not in before and o.operation.name == "stablehlo.while":
      o.operation.attributes["gshard.plan"] = ir.StringAttr.get(text)


# --- the chunked loops -----------------------------------------------------------------

def emit_forward(sm: Softmax, plan: ChunkPlan, x: ir.Value, embedding: ir.Value,
                 labels: ir.Value, *, label_mass: ir.Value | None = None,
                 class_offset: ir.Value | None = None, reduce_stats=None) -> list[ir.Value]:
  """The forward composite's `[N]` results (four, five with the entropy),
  computed in chunks.

  `label_mass`, `class_offset` and `reduce_stats` serve the vocab-sharded
  pass: the labels' per-token mass when this shard sees only some classes,
  the global id of this shard's first class, and a function combining
  `OnlineStats` across shards before they are finalised.
  """
  n, _ = b.shape_of(x)
  v = b.shape_of(embedding)[0]
  if label_mass is None:
    label_mass = sm.label_mass(labels)

  def block(x_blk: ir.Value, labels_blk: ir.Value, mass_blk: ir.Value) -> list[ir.Value]:
    tokens = b.shape_of(x_blk)[0]
    loop = b.Loop(trip_count(v, plan.vocab_chunk),
                  **OnlineStats.initial(tokens, sm.options.with_entropy).as_dict())
    with loop.body() as (k, carried):
      start, first_owned = chunk_start(k, plan.vocab_chunk, v)
      chunk = chunk_logits(sm, x_blk, embedding, labels_blk, start, first_owned,
                           plan.vocab_chunk, class_offset)
      loop.yield_(**OnlineStats(**vars(carried)).update(sm, chunk).as_dict())
    stats = OnlineStats(**vars(loop.results))
    if sm.labels_are_ids:
      stats.t = target_logits(sm, x_blk, embedding, labels_blk, class_offset)
    if reduce_stats is not None:
      stats = reduce_stats(stats)
    return stats.finalize(sm, mass_blk)

  if plan.token_chunk >= n:
    return block(x, labels, label_mass)

  zeros = per_token_outputs(n, sm.options.with_entropy)
  loop = b.Loop(trip_count(n, plan.token_chunk), **zeros)
  with loop.body() as (j, out):
    start, _ = chunk_start(j, plan.token_chunk, n)  # overlap recomputes equal values
    x_blk, labels_blk = token_block(x, labels, start, plan.token_chunk)
    results = block(x_blk, labels_blk, b.dynamic_slice(label_mass, [start], [plan.token_chunk]))
    loop.yield_(**{name: b.dynamic_update_slice(getattr(out, name), r, [start])
                   for name, r in zip(zeros, results)})
  return [getattr(loop.results, name) for name in zeros]


def emit_grad(sm: Softmax, plan: ChunkPlan, x: ir.Value, embedding: ir.Value,
              labels: ir.Value, lse: ir.Value, g_xent: ir.Value, g_lse: ir.Value,
              g_lse_squared: ir.Value, entropy: ir.Value | None = None,
              g_entropy: ir.Value | None = None, *, label_mass: ir.Value | None = None,
              class_offset: ir.Value | None = None, reduce_d_x=None,
              reduce_d_emb=None) -> list[ir.Value]:
  """The gradient composite's `[d_x, d_embedding]`, computed in chunks.

  `entropy` and `g_entropy` (`[N]`, only with `with_entropy`) are the
  forward's entropy and its cotangent. `label_mass` and `class_offset` as for
  `emit_forward`; `reduce_d_x` and
  `reduce_d_emb` (sharded pass) sum each token block's float32 `d_x` over the
  vocab shards and each chunk's `d_embedding` update over the token shards, so
  that no `[V, M]`-sized collective buffer is ever needed.
  """
  n, m = b.shape_of(x)
  v = b.shape_of(embedding)[0]
  q_mass = sm.target_mass(sm.label_mass(labels) if label_mass is None else label_mass)
  g_p = probability_cotangent(lse, g_lse, g_lse_squared)
  zero = b.scalar(0, b.i32())

  def block(x_blk, labels_blk, lse_blk, q_blk, g_xent_blk, g_p_blk, entropy_blk, d_emb):
    """One token block: returns (float32 d_x of the block, updated d_emb);
    `entropy_blk` is `(H, g_H)` of the block, or None."""
    tokens = b.shape_of(x_blk)[0]
    loop = b.Loop(trip_count(v, plan.vocab_chunk),
                  d_x=b.full((tokens, m), b.f32(), 0.0), d_emb=d_emb)
    with loop.body() as (k, acc):
      start, first_owned = chunk_start(k, plan.vocab_chunk, v)
      chunk = chunk_logits(sm, x_blk, embedding, labels_blk, start, first_owned,
                           plan.vocab_chunk, class_offset)
      dz = logits_cotangent(sm, chunk, lse_blk, q_blk, g_xent_blk, g_p_blk, entropy_blk)
      # Praxis's scale: on chunk.embedding, so d_x needs none after, and on
      # d_emb's float32 sum; a logit_scale option: already in dz.
      precision = sm.options.precision
      d_x = b.add(acc.d_x, b.dot(b.convert(dz, b.element_of(embedding)), chunk.embedding,
                                 (1, 0), b.f32(), precision))
      d_emb_chunk = sm.times_input_scale(b.dot(b.convert(dz, b.element_of(x)), x_blk, (0, 0),
                                               b.f32(), precision))
      if reduce_d_emb is not None:
        d_emb_chunk = reduce_d_emb(d_emb_chunk)
      old = b.dynamic_slice(acc.d_emb, [start, zero], [plan.vocab_chunk, m])
      rows = b.add(b.convert(old, b.f32()), d_emb_chunk)
      loop.yield_(d_x=d_x, d_emb=b.dynamic_update_slice(
          acc.d_emb, b.convert(rows, b.element_of(d_emb)), [start, zero]))
    d_x = loop.results.d_x
    if reduce_d_x is not None:
      d_x = reduce_d_x(d_x)
    return d_x, loop.results.d_emb

  # With one token block each chunk's rows of d_embedding are final once
  # computed (rows an overlapping last chunk does not own get `+ 0`), so they
  # are written in the embedding's dtype: no float32 `[V, M]` buffer beside the
  # result. Token blocks sum into the rows, which then stay float32.
  d_emb0 = b.full((v, m), b.f32() if plan.token_chunk < n else b.element_of(embedding), 0.0)
  with_entropy = entropy is not None
  if plan.token_chunk >= n:
    d_x, d_emb = block(x, labels, lse, q_mass, g_xent, g_p,
                       (entropy, g_entropy) if with_entropy else None, d_emb0)
  else:
    t = plan.token_chunk
    outer = b.Loop(trip_count(n, t), d_x=b.full((n, m), b.f32(), 0.0), d_emb=d_emb0)
    with outer.body() as (j, acc):
      start, first_owned = chunk_start(j, t, n)
      x_blk, labels_blk = token_block(x, labels, start, t)
      lse_blk, q_blk, g_xent_blk, g_p_blk = (b.dynamic_slice(a, [start], [t])
                                             for a in (lse, q_mass, g_xent, g_p))
      entropy_blk = None
      if with_entropy:
        entropy_blk = [b.dynamic_slice(a, [start], [t]) for a in (entropy, g_entropy)]
      own = None
      if first_owned is not None:  # tokens an earlier block had: no contribution
        own = owned(start, first_owned, (t,), 0)
        g_xent_blk, g_p_blk = (b.select(own, g, 0.0) for g in (g_xent_blk, g_p_blk))
        if with_entropy:
          entropy_blk[1] = b.select(own, entropy_blk[1], 0.0)
      d_x_blk, d_emb = block(x_blk, labels_blk, lse_blk, q_blk, g_xent_blk, g_p_blk,
                             entropy_blk, acc.d_emb)
      outer.yield_(d_x=write_owned_rows(acc.d_x, d_x_blk, start, own), d_emb=d_emb)
    d_x, d_emb = outer.results.d_x, outer.results.d_emb
  return [b.convert(d_x, b.element_of(x)), b.convert(d_emb, b.element_of(embedding))]
