"""Pallas kernels of the shared embedding softmax (the kernels `gshard-pallas` splices).

Three kernels, each recomputing blocks of logits in on-chip memory so that no
`[N, V]` tensor ever reaches HBM:

  forward  grid over token blocks; a loop over vocab blocks keeps the online
           max, sum-exp, argmax, target logit (and sum of logits, for label
           smoothing) per token; finalises the composite's four `[N]` results.
  d_x      grid over token blocks x blocks of d_x's columns; a loop over vocab
           blocks recomputes each block's logits, its cotangent from the saved
           logsumexp, and accumulates `dz @ E_block[:, cols]` in float32.
  d_emb    grid over vocab blocks x blocks of d_embedding's columns; a loop
           over token blocks accumulates `dz.T @ x_block[:, cols]` in float32.

Features are blocked twice, so that no on-chip tile grows with `M`:

  block_features       the logits `x_block @ E_block.T` are summed over
                       feature blocks of this width (a loop inside each
                       vocab or token step);
  block_grad_features  each gradient program writes this many columns of
                       `d_x` or `d_embedding`, so its float32 accumulator is
                       `[T, F]` or `[C, F]`, not `[T, M]`.

0 means all of `M` (one block, as on a TPU, where VMEM holds whole rows).
The price of `block_grad_features < M` is recomputation: each of the
`ceil(M / F)` column blocks of a gradient recomputes the logits, so the two
gradient kernels cost `2 * (ceil(M / F) + 1)` matmuls of the step's size instead
of 4. The gradient kernels recompute the logits even at `F = M` (five matmuls
in all, counting the forward's): one kernel over vocab blocks that also added
each block's `dz @ E` into `d_x` with atomics would save a matmul, but its
`N * V * M / C` atomic adds cost more than the `2 * N * V * M` flops of the
recompute at any useful `C`; and no `[V, M]` float32 accumulator ever exists:
each `d_embedding` block is summed on chip and written once. How large the
blocks may be on a GPU or TPU is `passes/pallas.py`'s `on_chip_bytes`.

Blocks never read out of bounds: the last block of an uneven split starts at
`size - block` and masks what an earlier block already covered (the chunk
loops' scheme, see `gshard_op/ir/loops.py`), so every load has a static shape and no
operand is padded. In the feature loop both operands' already-covered columns
are zeroed: zeroing one alone would turn an infinite entry of the other into
`0 * inf = NaN`. Overlapping programs write identical values.

The math is `gshard_op/reference.py`'s, non-finite logits included (the online
softmax follows `gshard_op/ir/softmax.py`'s rules): the inputs are scaled by `M**-0.5` in
their own dtype (with a `logit_scale` option, the float32 logits are scaled by it
instead), matmuls take the operand dtype (bf16 or f32) and accumulate in
float32, all softmax statistics are float32. Per-token label mass and the
`g_lse + 2 lse g_lse_squared` cotangent are `[N]` vectors computed around the
kernels (`forward`, `grad`).

`backend` picks how `pallas_call` lowers: "interpret" (any platform, plain
HLO), "triton" (GPU: `custom_call @__gpu$xla.gpu.triton`; every array in a
kernel must have a power-of-two size, so the blocks must be powers of two; `M`
need not be, it is only ever read a block at a time) or "mosaic_tpu"
(`custom_call @tpu_custom_call`; the operands stay in HBM and blocks are copied
through VMEM buffers). The kernel bodies are the same for all three; only
`_Blocks`, which reads and writes the blocks, differs.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plt

from gshard_op.options import SoftmaxOptions
from gshard_op.reference import (exponent, is_tempered, smoothing_coefficients, transform_logits,
                                  transform_logits_vjp)

F32 = jnp.float32
INT_MAX = int(np.iinfo(np.int32).max)
BACKENDS = ("interpret", "triton", "mosaic_tpu")


@dataclasses.dataclass(frozen=True)
class KernelConfig:
  """Everything static about one kernel instance (hashable: a cache key)."""

  options: SoftmaxOptions
  logit_scale: float
  labels_are_ids: bool
  block_tokens: int
  block_vocab: int
  backend: str = "interpret"
  block_features: int = 0       # the logits' contraction, a block at a time (0: all of M)
  block_grad_features: int = 0  # columns of d_x / d_embedding per program (0: all of M)
  num_warps: int = 4            # Triton only
  vmem_limit_bytes: int = 0     # Mosaic TPU only: the scoped VMEM it may use (0: its default)

  def __post_init__(self):
    if self.backend not in BACKENDS:
      raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
    if self.block_tokens <= 0 or self.block_vocab <= 0:
      raise ValueError("block sizes must be positive")
    if self.block_features < 0 or self.block_grad_features < 0:
      raise ValueError("feature blocks must be >= 0 (0: all features)")
    if self.scales_logits and self.logit_scale != self.options.logit_scale:
      raise ValueError(f"logit_scale = {self.logit_scale!r} disagrees with the options' "
                       f"{self.options.logit_scale!r}, which scales the logits")

  @property
  def scales_logits(self) -> bool:
    """Whether `logit_scale` multiplies the float32 logits (the option set: it
    is then `options.logit_scale`) rather than the inputs in their dtype."""
    return self.options.scales_logits

  def features(self, in_features: int) -> tuple[int, int]:
    """`(block_features, block_grad_features)` for `M = in_features`, 0 resolved to `M`."""
    return self.block_features or in_features, self.block_grad_features or in_features

  def smoothing(self, num_classes: int) -> tuple[float, float]:
    """`(a, b)`: the target is `a * labels + b` (1, 0 without smoothing)."""
    if self.options.label_smoothing_prob > 0:
      return smoothing_coefficients(num_classes, self.options)
    return 1.0, 0.0


# --- block math (traced inside the kernels; cap and clip are the reference's own) -----


def _block_start(k, block: int, total: int):
  """`(start, first_owned)` of block k: the last block of an uneven split is
  clamped to `total - block` and owns only positions `>= k * block`."""
  nominal = k * block
  if total % block == 0:
    return nominal, None
  return jnp.minimum(nominal, total - block), nominal


def _shift(m):
  """The exponent shift of a running max: `m` where finite, else 0, as
  `jax.nn.logsumexp` shifts (`softmax.shift`)."""
  return jnp.where(jnp.isfinite(m), m, 0.0)


def _rescale(m_old, m_new):
  """Takes a sum of `exp(z - _shift(m_old))` to `exp(z - _shift(m_new))`; 0 while
  only `-inf` was seen (`softmax.rescale`)."""
  return jnp.where(m_old == -jnp.inf, 0.0, jnp.exp(_shift(m_old) - _shift(m_new)))


def _weighted(weight, v):
  """`weight * v`, 0 where the weight is 0 even if `v` is not finite: a zero
  target adds nothing to the cross-entropy (`reference.cross_entropy`)."""
  return jnp.where(weight == 0, 0.0, weight * v)


def _scaled(cfg: KernelConfig, x):
  """`x * M**-0.5` rounded to x's dtype, as `reference.scaled_inputs` (x
  itself when the scale is on the logits)."""
  return x if cfg.scales_logits else x * jnp.asarray(cfg.logit_scale, x.dtype)


def _scaled_logits(cfg: KernelConfig, z):
  """`reference.scaled_logits`: float32 `z * logit_scale` when the scale is on
  the logits; also how a logits' cotangent reaches the matmul's output."""
  return z * jnp.float32(cfg.logit_scale) if cfg.scales_logits else z


def _owned_columns(start, first, width: int):
  """bool `[1, width]`: the columns of a block from `start` not covered by an
  earlier block (`first`: the first owned one, as `_block_start` gives it)."""
  return start + lax.broadcasted_iota(jnp.int32, (1, width), 1) >= first


# The three matmuls, accumulated in float32 at the op's precision (the
# composite's `precision` attribute), as the XLA passes emit theirs.

def _dot_nt(cfg: KernelConfig, a, b):
  """`a @ b.T`."""
  return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=F32,
                         precision=cfg.options.lax_precision)


def _dot_nn(cfg: KernelConfig, a, b):
  """`a @ b`."""
  return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=F32,
                         precision=cfg.options.lax_precision)


def _dot_tn(cfg: KernelConfig, a, b):
  """`a.T @ b`."""
  return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=F32,
                         precision=cfg.options.lax_precision)


@dataclasses.dataclass
class _Block:
  """Logits of a token block against a vocab block, with what the math needs."""

  z_raw: jax.Array      # f32 [T, C] before cap/clip
  z: jax.Array          # f32 [T, C] after
  classes: jax.Array    # i32 [T, C] global class ids
  owned: jax.Array | None  # bool [T, C] (None: every column owned)
  target: jax.Array     # f32 [T, C] unsmoothed label weights, 0 where not owned

  def owned_or(self, v, fill):
    return v if self.owned is None else jnp.where(self.owned, v, fill)


def _token_labels(cfg: KernelConfig, io: "_Blocks", labels_ref, rows):
  """What `_logits_block` takes as labels: a token block's ids `[T, 1]`, read
  once per token block, or the probabilities' ref (read a block at a time)."""
  return io.read(labels_ref, "labels", rows) if cfg.labels_are_ids else labels_ref


def _whole_rows(cfg: KernelConfig, m: int) -> bool:
  """True when one feature block covers the logits and the gradients' columns:
  then a block of rows is read once and serves the logits and the gradient."""
  return cfg.features(m) == (m, m)


def _raw_logits(cfg: KernelConfig, io: "_Blocks", x_ref, e_ref, rows, e_rows, tokens: int,
                classes: int):
  """f32 `[T, C]`: `x[rows] * M**-0.5 @ E[e_rows].T`, summed over feature
  blocks of `cfg.block_features`; a clamped last block zeroes, in both
  operands, the columns an earlier block covered."""
  m = x_ref.shape[1]
  bk = cfg.features(m)[0]

  def body(k, z):
    start, first = _block_start(k, bk, m)
    cols = pl.ds(start, bk)
    xs = _scaled(cfg, io.read(x_ref, "x", rows, cols))
    e = io.read(e_ref, "e", e_rows, cols)
    if first is not None:
      owned = _owned_columns(start, first, bk)
      xs, e = jnp.where(owned, xs, jnp.zeros_like(xs)), jnp.where(owned, e, jnp.zeros_like(e))
    return z + _dot_nt(cfg, xs, e)

  return lax.fori_loop(0, pl.cdiv(m, bk), body, jnp.zeros((tokens, classes), F32))


def _logits_block(cfg: KernelConfig, io: "_Blocks", z_raw, labels, t_start, v_start,
                  v_first) -> _Block:
  """The block of logits from the matmul's `z_raw` (f32 `[T, C]`, rows from
  `t_start`, classes from `v_start`) with what the math needs; `v_first` is the
  first class the block owns (None: all); `labels` from `_token_labels`."""
  tokens, classes = z_raw.shape
  z_raw = _scaled_logits(cfg, z_raw)
  z = transform_logits(z_raw, cfg.options)
  cols = v_start + lax.broadcasted_iota(jnp.int32, (tokens, classes), 1)
  owned = None if v_first is None else cols >= v_first
  if cfg.labels_are_ids:
    hit = cols == labels
    if owned is not None:
      hit = jnp.logical_and(hit, owned)
    target = jnp.where(hit, 1.0, 0.0).astype(F32)
  else:
    target = io.read(labels, "labels", pl.ds(t_start, tokens),
                     pl.ds(v_start, classes)).astype(F32)
    if owned is not None:
      target = jnp.where(owned, target, 0.0)
  return _Block(z_raw=z_raw, z=z, classes=cols, owned=owned, target=target)


def _cotangent(cfg: KernelConfig, blk: _Block, lse, q_mass, g_xent, g_p, num_classes: int,
               entropy=None):
  """The cotangent of the block's matmul output (`softmax.logits_cotangent`):
  `g_xent * (p * Q - q) + g_p * p`, with `entropy = (E[z], g_H)` minus
  `g_H * p * (z - E[z])`, 0 where not owned, then through temperature, clip
  and cap, and a `logit_scale` on the logits."""
  a, off = cfg.smoothing(num_classes)
  p = jnp.exp(exponent(blk.z, lse, is_tempered(cfg.options)))
  q = blk.target
  if a != 1.0:
    q = q * a
  if off:
    q = q + off
  dz = g_xent * (p * q_mass - q) + g_p * p
  if entropy is not None:
    expected, g_h = entropy
    dz = dz - g_h * _weighted(p, blk.z - expected)
  dz = blk.owned_or(dz, 0.0)
  return _scaled_logits(cfg, transform_logits_vjp(blk.z_raw, blk.z, dz, cfg.options))


# --- kernels -------------------------------------------------------------------------


class _Blocks:
  """Reads and writes of operand blocks: the one place the back ends differ.

  Interpret and Triton index the refs directly (Triton: loads and stores from
  global memory). On Mosaic TPU the operands stay in HBM (`pl.ANY`) and each
  block goes through a VMEM scratch buffer of its kind (`pltpu.sync_copy`), so
  no operand has to fit in VMEM.
  """

  def __init__(self, scratch: dict | None = None):
    self.scratch = scratch

  def read(self, ref, kind: str, rows, cols=None):
    index = (rows, slice(None) if cols is None else cols)
    if self.scratch is None:
      return ref[index]
    buffer = self.scratch[kind]
    pltpu.sync_copy(ref.at[index], buffer)
    return buffer[...]

  def write(self, ref, kind: str, rows, value, cols=None):
    index = (rows, slice(None) if cols is None else cols)
    if self.scratch is None:
      ref[index] = value
      return
    buffer = self.scratch[kind]
    buffer[...] = value
    pltpu.sync_copy(buffer, ref.at[index])


def _grad_columns(cfg: KernelConfig, m: int):
  """The columns of `d_x` / `d_embedding` program `(i, j)` writes: block j of
  `cfg.block_grad_features` (None: all; a clamped last block rewrites columns
  an earlier one wrote, with the same values)."""
  bf = cfg.features(m)[1]
  return None if bf == m else pl.ds(_block_start(pl.program_id(1), bf, m)[0], bf)


def _forward_kernel(cfg: KernelConfig, n: int, v: int, io: _Blocks,
                    x_ref, e_ref, labels_ref, mass_ref,
                    xent_ref, argmax_ref, lse_ref, lse2_ref, *entropy_ref):
  bt, bv = cfg.block_tokens, cfg.block_vocab
  t_start, _ = _block_start(pl.program_id(0), bt, n)
  rows = pl.ds(t_start, bt)
  # One feature block: the token block is read once, for every vocab block.
  width = x_ref.shape[1]
  xs = _scaled(cfg, io.read(x_ref, "x", rows)) if cfg.features(width)[0] == width else None
  labels = _token_labels(cfg, io, labels_ref, rows)
  smoothing = cfg.options.label_smoothing_prob > 0

  def body(k, carry):
    m, s, idx, t, zsum, w = carry
    v_start, v_first = _block_start(k, bv, v)
    e_rows = pl.ds(v_start, bv)
    z_raw = (_dot_nt(cfg, xs, io.read(e_ref, "e", e_rows)) if xs is not None
             else _raw_logits(cfg, io, x_ref, e_ref, rows, e_rows, bt, bv))
    blk = _logits_block(cfg, io, z_raw, labels, t_start, v_start, v_first)
    z = blk.owned_or(blk.z, -jnp.inf)
    block_max = jnp.max(z, axis=1, keepdims=True)  # NaN if the block has one
    m_new = jnp.maximum(m, block_max)
    e = jnp.exp(exponent(z, _shift(m_new), is_tempered(cfg.options)))
    s = s * _rescale(m, m_new) + jnp.sum(e, axis=1, keepdims=True)
    if entropy_ref:  # sum(exp(z - shift) * z), a -inf logit adding nothing
      w = w * _rescale(m, m_new) + jnp.sum(_weighted(e, z), axis=1, keepdims=True)
    # First class reaching the block's max (NaN: its first NaN, as jnp.argmax);
    # an earlier block wins ties and keeps an earlier NaN.
    at_max = jnp.logical_or(z == block_max, jnp.isnan(z))
    block_idx = jnp.min(jnp.where(at_max, blk.classes, INT_MAX), axis=1, keepdims=True)
    first_nan = jnp.logical_and(jnp.isnan(block_max), jnp.logical_not(jnp.isnan(m)))
    idx = jnp.where(jnp.logical_or(block_max > m, first_nan), block_idx, idx)
    t = t + jnp.sum(_weighted(blk.target, blk.owned_or(blk.z, 0.0)), axis=1, keepdims=True)
    if smoothing:
      zsum = zsum + jnp.sum(blk.owned_or(blk.z, 0.0), axis=1, keepdims=True)
    return m_new, s, idx, t, zsum, w

  zeros = jnp.zeros((bt, 1), F32)
  init = (jnp.full((bt, 1), -jnp.inf, F32), zeros, jnp.zeros((bt, 1), jnp.int32), zeros, zeros,
          zeros)
  m, s, idx, t, zsum, w = lax.fori_loop(0, pl.cdiv(v, bv), body, init)
  lse = _shift(m) + jnp.log(s)
  mass = io.read(mass_ref, "column", rows)
  a, off = cfg.smoothing(v)
  xent = (_weighted(mass, lse) - t) * a if a else jnp.zeros_like(lse)
  if off:
    xent = xent - (zsum - lse * float(v)) * off
  io.write(xent_ref, "column", rows, xent)
  io.write(argmax_ref, "ids", rows, idx)
  io.write(lse_ref, "column", rows, lse)
  io.write(lse2_ref, "column", rows, lse * lse)
  if entropy_ref:
    io.write(entropy_ref[0], "column", rows, lse - w / s)


def _gradient_refs(cfg: KernelConfig, x_ref, rest):
  """What both gradient kernels take from their trailing refs and the config:
  `(entropy_refs, result_ref, m, cols, whole)`; `rest` holds, with the
  entropy, the refs of `E[z]` and `g_H`, then the result's."""
  *entropy_refs, result_ref = rest
  m = x_ref.shape[1]
  return entropy_refs, result_ref, m, _grad_columns(cfg, m), _whole_rows(cfg, m)


def _d_x_kernel(cfg: KernelConfig, n: int, v: int, io: _Blocks,
                x_ref, e_ref, labels_ref, lse_ref, q_ref, g_xent_ref, g_p_ref, *rest):
  entropy_refs, d_x_ref, m, cols, whole = _gradient_refs(cfg, x_ref, rest)
  bt, bv = cfg.block_tokens, cfg.block_vocab
  t_start, _ = _block_start(pl.program_id(0), bt, n)
  rows = pl.ds(t_start, bt)
  xs = _scaled(cfg, io.read(x_ref, "x", rows)) if whole else None
  labels = _token_labels(cfg, io, labels_ref, rows)
  per_token = [io.read(r, "column", rows) for r in (lse_ref, q_ref, g_xent_ref, g_p_ref)]
  entropy = [io.read(r, "column", rows) for r in entropy_refs] or None

  def body(k, acc):
    v_start, v_first = _block_start(k, bv, v)
    e_rows = pl.ds(v_start, bv)
    if whole:
      e = io.read(e_ref, "e", e_rows)  # read once for the logits and for d_x
      z_raw = _dot_nt(cfg, xs, e)
    else:
      z_raw = _raw_logits(cfg, io, x_ref, e_ref, rows, e_rows, bt, bv)
      e = io.read(e_ref, "e_cols", e_rows, cols)
    blk = _logits_block(cfg, io, z_raw, labels, t_start, v_start, v_first)
    dz = _cotangent(cfg, blk, *per_token, v, entropy)
    return acc + _dot_nn(cfg, dz.astype(e.dtype), e)

  acc = lax.fori_loop(0, pl.cdiv(v, bv), body, jnp.zeros((bt, cfg.features(m)[1]), F32))
  d_x = acc if cfg.scales_logits else acc * cfg.logit_scale  # dz has a scale on the logits
  io.write(d_x_ref, "x" if whole else "x_cols", rows, d_x.astype(d_x_ref.dtype), cols)


def _d_emb_kernel(cfg: KernelConfig, n: int, v: int, io: _Blocks,
                  x_ref, e_ref, labels_ref, lse_ref, q_ref, g_xent_ref, g_p_ref, *rest):
  entropy_refs, d_e_ref, m, cols, whole = _gradient_refs(cfg, x_ref, rest)
  bt, bv = cfg.block_tokens, cfg.block_vocab
  # A clamped last vocab block recomputes rows an earlier block also wrote:
  # each row's sum over all tokens is the same, so nothing is masked here.
  v_start, _ = _block_start(pl.program_id(0), bv, v)
  e_rows = pl.ds(v_start, bv)
  e = io.read(e_ref, "e", e_rows) if whole else None  # stays on chip for the whole token loop

  def body(j, acc):
    t_start, t_first = _block_start(j, bt, n)
    rows = pl.ds(t_start, bt)
    lse, q_mass, g_xent, g_p = [io.read(r, "column", rows)
                                for r in (lse_ref, q_ref, g_xent_ref, g_p_ref)]
    entropy = [io.read(r, "column", rows) for r in entropy_refs] or None
    if t_first is not None:  # tokens an earlier block had contribute nothing
      own = t_start + lax.broadcasted_iota(jnp.int32, (bt, 1), 0) >= t_first
      g_xent, g_p = jnp.where(own, g_xent, 0.0), jnp.where(own, g_p, 0.0)
      if entropy:
        entropy[1] = jnp.where(own, entropy[1], 0.0)
    labels = _token_labels(cfg, io, labels_ref, rows)
    if whole:
      xs = _scaled(cfg, io.read(x_ref, "x", rows))
      z_raw = _dot_nt(cfg, xs, e)
    else:
      z_raw = _raw_logits(cfg, io, x_ref, e_ref, rows, e_rows, bt, bv)
      xs = _scaled(cfg, io.read(x_ref, "x_cols", rows, cols))
    blk = _logits_block(cfg, io, z_raw, labels, t_start, v_start, None)
    dz = _cotangent(cfg, blk, lse, q_mass, g_xent, g_p, v, entropy)
    return acc + _dot_tn(cfg, dz.astype(xs.dtype), xs)

  acc = lax.fori_loop(0, pl.cdiv(n, bt), body, jnp.zeros((bv, cfg.features(m)[1]), F32))
  io.write(d_e_ref, "e" if whole else "e_cols", e_rows, acc.astype(d_e_ref.dtype), cols)


# --- calls ---------------------------------------------------------------------------


def _call(cfg: KernelConfig, body, grid: tuple[int, ...], out_shape, operands):
  """`pallas_call` of `body(io, *operand_refs, *result_refs)` over `grid`, with
  each back end's parameters; on Mosaic TPU also the VMEM buffers `io` copies
  blocks through (one per kind: rows of x and of the embedding a feature block
  wide, the same a gradient column block wide when the features are blocked,
  labels, `[T, 1]` float and int columns)."""
  bt, bv = cfg.block_tokens, cfg.block_vocab
  x, embedding, labels = operands[:3]
  if cfg.backend != "mosaic_tpu":
    kernel = lambda *refs: body(_Blocks(), *refs)  # noqa: E731
    kwargs = {"interpret": True} if cfg.backend == "interpret" else {
        "compiler_params": plt.CompilerParams(num_warps=cfg.num_warps, num_stages=2)}
    return pl.pallas_call(kernel, out_shape=out_shape, grid=grid, **kwargs)(*operands)
  m = x.shape[1]
  bk, bf = cfg.features(m)
  scratch = {
      "x": pltpu.VMEM((bt, bk), x.dtype),
      "e": pltpu.VMEM((bv, bk), embedding.dtype),
      "labels": pltpu.VMEM((bt, 1) if jnp.issubdtype(labels.dtype, jnp.integer) else (bt, bv),
                           labels.dtype),
      "column": pltpu.VMEM((bt, 1), F32),
      "ids": pltpu.VMEM((bt, 1), jnp.int32),
  }
  if not _whole_rows(cfg, m):
    scratch["x_cols"] = pltpu.VMEM((bt, bf), x.dtype)
    scratch["e_cols"] = pltpu.VMEM((bv, bf), embedding.dtype)

  def kernel(*refs):
    split = len(refs) - len(scratch)
    body(_Blocks(dict(zip(scratch, refs[split:]))), *refs[:split])

  hbm = pl.BlockSpec(memory_space=pl.ANY)
  return pl.pallas_call(
      kernel, out_shape=out_shape, grid=grid, in_specs=[hbm] * len(operands),
      out_specs=jax.tree.map(lambda _: hbm, out_shape), scratch_shapes=list(scratch.values()),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel",) * len(grid),
          vmem_limit_bytes=cfg.vmem_limit_bytes or None))(*operands)


def label_mass(labels, num_classes: int):
  """Per token, the mass `P` of the unsmoothed labels: 1 for an id in range, 0
  outside (Praxis's one-hot), the row sum of probabilities. f32 `[N]`."""
  if jnp.issubdtype(labels.dtype, jnp.integer):
    return jnp.where((labels >= 0) & (labels < num_classes), 1.0, 0.0).astype(F32)
  return jnp.sum(labels.astype(F32), axis=-1)


def check_shapes(cfg: KernelConfig, n: int, v: int, m: int) -> None:
  if cfg.block_tokens > n or cfg.block_vocab > v:
    raise ValueError(f"blocks {cfg.block_tokens} x {cfg.block_vocab} exceed N={n}, V={v}")
  if max(cfg.features(m)) > m:
    raise ValueError(f"feature blocks {cfg.features(m)} exceed M={m}")


def _column(a):
  """`[N]` -> `[N, 1]`: per-token vectors enter and leave the kernels as columns
  (Mosaic TPU tiles rank-2 arrays; the block math broadcasts them over classes)."""
  return a.reshape(a.shape[0], 1)


def _labels_operand(labels):
  return _column(labels) if labels.ndim == 1 else labels


def forward(x, embedding, labels, cfg: KernelConfig):
  """The forward composite: `(per_example_xent, per_example_argmax, logsumexp,
  logsumexp_squared[, per_example_entropy])`, all `[N]`."""
  n, v = x.shape[0], embedding.shape[0]
  check_shapes(cfg, n, v, x.shape[1])
  col = jax.ShapeDtypeStruct((n, 1), F32)
  out_shape = (col, jax.ShapeDtypeStruct((n, 1), jnp.int32), col, col)
  out_shape += (col,) * cfg.options.with_entropy
  operands = (x, embedding, _labels_operand(labels), _column(label_mass(labels, v)))
  outs = _call(cfg, functools.partial(_forward_kernel, cfg, n, v),
               (pl.cdiv(n, cfg.block_tokens),), out_shape, operands)
  return tuple(o.reshape(n) for o in outs)


def grad(x, embedding, labels, lse, g_xent, g_lse, g_lse_squared, *entropy, cfg: KernelConfig):
  """The gradient composite: `(d_x, d_embedding)` in the operands' dtypes;
  `entropy` is `(per_example_entropy, its cotangent)` with `with_entropy`."""
  n, v, m = x.shape[0], embedding.shape[0], x.shape[1]
  check_shapes(cfg, n, v, m)
  column_blocks = pl.cdiv(m, cfg.features(m)[1])
  a, off = cfg.smoothing(v)
  q_mass = label_mass(labels, v) * a + off * v
  g_p = g_lse + 2.0 * lse * g_lse_squared
  per_token = [lse, q_mass, g_xent, g_p]
  if entropy:  # the kernels take the expected logit E[z] = lse - H
    h, g_h = entropy
    per_token += [lse - h, g_h]
  operands = (x, embedding, _labels_operand(labels), *(_column(u) for u in per_token))
  d_x = _call(cfg, functools.partial(_d_x_kernel, cfg, n, v),
              (pl.cdiv(n, cfg.block_tokens), column_blocks),
              jax.ShapeDtypeStruct(x.shape, x.dtype), operands)
  d_e = _call(cfg, functools.partial(_d_emb_kernel, cfg, n, v),
              (pl.cdiv(v, cfg.block_vocab), column_blocks),
              jax.ShapeDtypeStruct(embedding.shape, embedding.dtype), operands)
  return d_x, d_e
