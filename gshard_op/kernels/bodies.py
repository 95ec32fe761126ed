"""The three kernel bodies of the shared embedding softmax.

Each recomputes blocks of logits in on-chip memory, so that no `[N, V]`
tensor ever reaches HBM:

  forward  grid over token blocks; a loop over vocab blocks updates the
           online statistics (`online_softmax.Stats.update`) and finalises
           the op's per-token results (`Stats.finalize`).
  d_x      grid over token blocks x blocks of d_x's columns; a loop over vocab
           blocks recomputes each block's logits, its cotangent from the saved
           logsumexp (`online_softmax.logits_cotangent`), and accumulates
           `dz @ E_block[:, cols]` in float32.
  d_emb    grid over vocab blocks x blocks of d_embedding's columns; a loop
           over token blocks accumulates `dz.T @ x_block[:, cols]` in float32.

The math of a block is `gshard_op/online_softmax.py`'s, as for the XLA loops
(`Chunk.of`, `Stats`, `logits_cotangent`, `block_start`, `owned`); per-token
vectors are `[T, 1]` columns here (Mosaic tiles rank-2 arrays). What is the
kernels' own: reading and writing blocks (`memory.Blocks`), the
feature-blocked matmul, the grids.

Features are blocked twice, so that no on-chip tile grows with `M`: the
logits `x_block @ E_block.T` are summed over blocks of `BlockSizes.features`
columns (a loop inside each vocab or token step), and each gradient program
writes `BlockSizes.grad_features` columns of `d_x` or `d_embedding`, so its
float32 accumulator is `[T, F]` or `[C, F]`, not `[T, M]`. The price of
`F < M` is recomputation: each of the `ceil(M / F)` column blocks of a
gradient recomputes the logits, so the two gradient kernels cost
`2 * (ceil(M / F) + 1)` matmuls of the step's size instead of 4. The gradient
kernels recompute the logits even at `F = M` (five matmuls in all, counting
the forward's): one kernel over vocab blocks that also added each block's
`dz @ E` into `d_x` with atomics would save a matmul, but its `N * V * M / C`
atomic adds cost more than the `2 * N * V * M` flops of the recompute at any
useful `C`; and no `[V, M]` float32 accumulator ever exists: each
`d_embedding` block is summed on chip and written once. How large the blocks
may be on a GPU or TPU is `passes/pallas.py`'s `on_chip_bytes`.

Blocks never read out of bounds: the last block of an uneven split starts at
`size - block` and masks what an earlier block already covered
(`online_softmax.block_start`), so every load has a static shape and no
operand is padded. In the feature loop both operands' already-covered columns
are zeroed: zeroing one alone would turn an infinite entry of the other into
`0 * inf = NaN`. Overlapping programs write identical values.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from gshard_op.kernels.config import KernelConfig
from gshard_op.kernels.memory import Blocks
from gshard_op.online_softmax import F32, Chunk, Spec, Stats, block_start, logits_cotangent, owned

# The forward's results, each written through a buffer of this kind.
_RESULT_KINDS = ("column", "ids", "column", "column", "column")


def _token_labels(spec: Spec, io: Blocks, labels_ref, rows):
  """What `_chunk` takes as labels: a token block's ids `[T, 1]`, read once
  per token block, or the probabilities' ref (read a block at a time)."""
  return io.read(labels_ref, "labels", rows) if spec.labels_are_ids else labels_ref


def _chunk(spec: Spec, io: Blocks, matmul, labels, rows, v_start, v_first) -> Chunk:
  """The block of logits from the matmul's float32 `[T, C]` output (token
  `rows`, classes from `v_start`; `v_first` the first it owns, None: all);
  `labels` from `_token_labels`."""
  tokens, classes = matmul.shape
  own = None if v_first is None else owned(v_start, v_first, (tokens, classes), 1)
  if not spec.labels_are_ids:
    labels = io.read(labels, "labels", rows, pl.ds(v_start, classes))
  return Chunk.of(spec, matmul, v_start, own, labels)


def _matmul(cfg: KernelConfig, spec: Spec, io: Blocks, x_ref, e_ref, rows, e_rows,
            tokens: int, classes: int):
  """f32 `[T, C]`: `x[rows] * M**-0.5 @ E[e_rows].T`, summed over feature
  blocks of `BlockSizes.features`; a clamped last block zeroes, in both
  operands, the columns an earlier block covered."""
  m = x_ref.shape[1]
  bk = cfg.features(m)[0]

  def body(k, z):
    start, first = block_start(k, bk, m)
    cols = pl.ds(start, bk)
    xs = spec.times_input_scale(io.read(x_ref, "x", rows, cols))
    e = io.read(e_ref, "e", e_rows, cols)
    if first is not None:
      own = owned(start, first, (1, bk), 1)
      xs, e = jnp.where(own, xs, jnp.zeros_like(xs)), jnp.where(own, e, jnp.zeros_like(e))
    return z + spec.dot(xs, e, (1, 1))

  return lax.fori_loop(0, pl.cdiv(m, bk), body, jnp.zeros((tokens, classes), F32))


def _grad_columns(cfg: KernelConfig, m: int):
  """The columns of `d_x` / `d_embedding` program `(i, j)` writes: block j of
  `BlockSizes.grad_features` (None: all; a clamped last block rewrites
  columns an earlier one wrote, with the same values)."""
  bf = cfg.features(m)[1]
  return None if bf == m else pl.ds(block_start(pl.program_id(1), bf, m)[0], bf)


def forward_kernel(cfg: KernelConfig, n: int, v: int, io: Blocks,
                   x_ref, e_ref, labels_ref, mass_ref, *result_refs):
  """Results `(xent, argmax, lse, lse_squared[, entropy])` of one token block."""
  spec = cfg.spec(v)
  bt, bv = cfg.block_sizes.tokens, cfg.block_sizes.vocab
  t_start, _ = block_start(pl.program_id(0), bt, n)
  rows = pl.ds(t_start, bt)
  # One feature block: the token block is read once, for every vocab block.
  width = x_ref.shape[1]
  xs = spec.times_input_scale(io.read(x_ref, "x", rows)) if cfg.features(width)[0] == width \
      else None
  labels = _token_labels(spec, io, labels_ref, rows)

  def body(k, stats: Stats) -> Stats:
    v_start, v_first = block_start(k, bv, v)
    e_rows = pl.ds(v_start, bv)
    matmul = (spec.dot(xs, io.read(e_ref, "e", e_rows), (1, 1)) if xs is not None
              else _matmul(cfg, spec, io, x_ref, e_ref, rows, e_rows, bt, bv))
    return stats.update(spec, _chunk(spec, io, matmul, labels, rows, v_start, v_first))

  stats = lax.fori_loop(0, pl.cdiv(v, bv), body,
                        Stats.initial((bt, 1), spec.options.with_entropy))
  results = stats.finalize(spec, io.read(mass_ref, "column", rows))
  for ref, kind, value in zip(result_refs, _RESULT_KINDS, results):
    io.write(ref, kind, rows, value)


def _gradient_refs(cfg: KernelConfig, v: int, x_ref, rest):
  """What both gradient kernels take from their trailing refs and the config:
  `(entropy_refs, result_ref, m, cols, whole, spec, (bt, bv))`; `rest` holds,
  with the entropy, the refs of `E[z]` and `g_H`, then the result's."""
  *entropy_refs, result_ref = rest
  m = x_ref.shape[1]
  return (entropy_refs, result_ref, m, _grad_columns(cfg, m), cfg.whole_rows(m), cfg.spec(v),
          (cfg.block_sizes.tokens, cfg.block_sizes.vocab))


def d_x_kernel(cfg: KernelConfig, n: int, v: int, io: Blocks,
               x_ref, e_ref, labels_ref, lse_ref, q_ref, g_xent_ref, g_p_ref, *rest):
  """`d_x` of one token block, one block of its columns."""
  entropy_refs, d_x_ref, m, cols, whole, spec, (bt, bv) = _gradient_refs(cfg, v, x_ref, rest)
  t_start, _ = block_start(pl.program_id(0), bt, n)
  rows = pl.ds(t_start, bt)
  xs = spec.times_input_scale(io.read(x_ref, "x", rows)) if whole else None
  labels = _token_labels(spec, io, labels_ref, rows)
  per_token = [io.read(r, "column", rows) for r in (lse_ref, q_ref, g_xent_ref, g_p_ref)]
  entropy = tuple(io.read(r, "column", rows) for r in entropy_refs) or None

  def body(k, acc):
    v_start, v_first = block_start(k, bv, v)
    e_rows = pl.ds(v_start, bv)
    if whole:
      e = io.read(e_ref, "e", e_rows)  # read once for the logits and for d_x
      matmul = spec.dot(xs, e, (1, 1))
    else:
      matmul = _matmul(cfg, spec, io, x_ref, e_ref, rows, e_rows, bt, bv)
      e = io.read(e_ref, "e_cols", e_rows, cols)
    chunk = _chunk(spec, io, matmul, labels, rows, v_start, v_first)
    dz = logits_cotangent(spec, chunk, *per_token, entropy)
    return acc + spec.dot(dz.astype(e.dtype), e, (1, 0))

  acc = lax.fori_loop(0, pl.cdiv(v, bv), body, jnp.zeros((bt, cfg.features(m)[1]), F32))
  d_x = spec.times_input_scale(acc)  # dz has a scale on the logits
  io.write(d_x_ref, "x" if whole else "x_cols", rows, d_x.astype(d_x_ref.dtype), cols)


def d_emb_kernel(cfg: KernelConfig, n: int, v: int, io: Blocks,
                 x_ref, e_ref, labels_ref, lse_ref, q_ref, g_xent_ref, g_p_ref, *rest):
  """`d_embedding` of one vocab block, one block of its columns."""
  entropy_refs, d_e_ref, m, cols, whole, spec, (bt, bv) = _gradient_refs(cfg, v, x_ref, rest)
  # A clamped last vocab block recomputes rows an earlier block also wrote:
  # each row's sum over all tokens is the same, so nothing is masked here.
  v_start, _ = block_start(pl.program_id(0), bv, v)
  e_rows = pl.ds(v_start, bv)
  e = io.read(e_ref, "e", e_rows) if whole else None  # stays on chip for the whole token loop

  def body(j, acc):
    t_start, t_first = block_start(j, bt, n)
    rows = pl.ds(t_start, bt)
    lse, q_mass, g_xent, g_p = [io.read(r, "column", rows)
                                for r in (lse_ref, q_ref, g_xent_ref, g_p_ref)]
    entropy = [io.read(r, "column", rows) for r in entropy_refs] or None
    if t_first is not None:  # tokens an earlier block had contribute nothing
      own = owned(t_start, t_first, (bt, 1), 0)
      g_xent, g_p = jnp.where(own, g_xent, 0.0), jnp.where(own, g_p, 0.0)
      if entropy:
        entropy[1] = jnp.where(own, entropy[1], 0.0)
    labels = _token_labels(spec, io, labels_ref, rows)
    if whole:
      xs = spec.times_input_scale(io.read(x_ref, "x", rows))
      matmul = spec.dot(xs, e, (1, 1))
    else:
      matmul = _matmul(cfg, spec, io, x_ref, e_ref, rows, e_rows, bt, bv)
      xs = spec.times_input_scale(io.read(x_ref, "x_cols", rows, cols))
    chunk = _chunk(spec, io, matmul, labels, rows, v_start, None)
    dz = logits_cotangent(spec, chunk, lse, q_mass, g_xent, g_p,
                          None if entropy is None else tuple(entropy))
    return acc + spec.dot(dz.astype(xs.dtype), xs, (0, 0))

  acc = lax.fori_loop(0, pl.cdiv(n, bt), body, jnp.zeros((bv, cfg.features(m)[1]), F32))
  io.write(d_e_ref, "e" if whole else "e_cols", e_rows, acc.astype(d_e_ref.dtype), cols)
