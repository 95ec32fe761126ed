"""The online softmax of one `[T, C]` block of logits, written once.

`gshard_op/reference.py` computes over all `V` classes at once; here the same
quantities are built one block of classes at a time, and every route that
never materialises the `[N, V]` logits calls these functions: the chunked
loops (`gshard_op/chunked.py`, what the primitives lower to and what
`gshard-chunk-softmax` and the partitioner splice), the fused sweep
(`gshard_op/fused.py`), the per-shard body (`gshard_op/sharded.py`) and the
Pallas kernels (`gshard_op/kernels/`).

* `Spec`: the static description of one op (options, logit scale, global `V`,
  ids or probabilities) and its elementwise pieces.
* `Chunk`: a block of logits with its global class ids, the columns it owns
  and its label weights.
* `Stats`: the per-token running max, sum of exponentials, argmax, target
  logit, sum of logits (label smoothing) and `sum(exp(z - shift) * z)` (the
  entropy): `initial`, `update` by one chunk (the online-softmax step),
  `combine` across vocab shards, `finalize` into the op's per-token results.
* `logits_cotangent`: the cotangent of a chunk's matmul output from the
  saved logsumexp (`reference.logits_cotangent` one block at a time).

Per-token vectors are `[T]` in XLA loops and `[T, 1]` columns in the Pallas
kernels (Mosaic tiles rank-2 arrays); every function here takes either and
keeps the shape it is given.

Non-finite logits give what the dense reference gives (`jax.nn.logsumexp`,
`jnp.argmax`, `-sum(q * log_softmax(z))`): the running max is shifted by 0
where it is not finite, as `jax.nn.logsumexp` shifts, so a chunk of `-inf`
logits or a `+inf` logit do not turn `exp(m_old - m_new)` into NaN; NaN is the
largest value for the argmax (its first index wins); and a class with a zero
target adds nothing to the cross-entropy, even where its log-probability is
infinite or NaN (`reference.cross_entropy`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gshard_op import reference
from gshard_op.options import SoftmaxOptions

F32 = jnp.float32
INT_MAX = int(np.iinfo(np.int32).max)
INT_MIN = int(np.iinfo(np.int32).min)


@dataclasses.dataclass(frozen=True)
class Spec:
  """What is static about one op: hashable, so lowered programs cache on it."""

  options: SoftmaxOptions
  logit_scale: float
  num_classes: int        # the global V (label smoothing and Q use it)
  labels_are_ids: bool

  @classmethod
  def of(cls, options: SoftmaxOptions, in_features: int, num_classes: int,
         labels_are_ids: bool) -> "Spec":
    return cls(options, options.scale_for(in_features), num_classes, labels_are_ids)

  @property
  def smoothing(self) -> tuple[float, float]:
    """`(label_scale, uniform)`: the target is `label_scale * labels + uniform`."""
    if self.options.label_smoothing_prob > 0:
      return reference.smoothing_coefficients(self.num_classes, self.options)
    return 1.0, 0.0

  @property
  def tempered(self) -> bool:
    return reference.is_tempered(self.options)

  def times_input_scale(self, v: jax.Array) -> jax.Array:
    """`v * M**-0.5` in v's dtype where the scale is on the inputs (Praxis),
    `v` itself where a `logit_scale` option multiplies the logits."""
    if self.options.scales_logits:
      return v
    return v * jnp.asarray(self.logit_scale, v.dtype)

  def scaled_logits(self, z: jax.Array) -> jax.Array:
    """The float32 matmul output times a `logit_scale` option (when set); also
    the pull-back of the logits' cotangent to the matmul's output."""
    return z * jnp.float32(self.logit_scale) if self.options.scales_logits else z

  def dot(self, a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    """`a` and `b` contracted on one dimension each, accumulated in float32 at
    the op's precision."""
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                           precision=self.options.lax_precision, preferred_element_type=F32)

  def label_mass(self, labels: jax.Array) -> jax.Array:
    """Per token, the mass `P` of the unsmoothed labels: 1 for an id in range,
    0 outside (Praxis's one-hot), the row sum of probabilities. f32."""
    if self.labels_are_ids:
      return jnp.where((labels >= 0) & (labels < self.num_classes), 1.0, 0.0).astype(F32)
    return jnp.sum(labels.astype(F32), axis=-1)

  def target_mass(self, label_mass: jax.Array) -> jax.Array:
    """`Q = label_scale * P + uniform * V`, the smoothed target's total mass."""
    label_scale, uniform = self.smoothing
    return label_mass * label_scale + uniform * self.num_classes


# --- per-token helpers ---------------------------------------------------------------

def _rows(v: jax.Array) -> jax.Array:
  """A per-token vector `[T]` or column `[T, 1]` against `[T, C]`."""
  return v[:, None] if v.ndim == 1 else v


def _reduce(reduction, z: jax.Array, like: jax.Array) -> jax.Array:
  """`reduction` over the classes of `z`, shaped like the per-token `like`."""
  return reduction(z, axis=1, keepdims=like.ndim == 2)


def _row_sums(a: jax.Array, b: jax.Array, like: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Both row sums. In XLA one variadic reduce, into which XLA fuses the
  producers of both (separate reduces sharing a producer would make it keep
  that producer's `[T, C]`); in a kernel (`[T, 1]` columns) two, as Mosaic and
  Triton lower them."""
  if like.ndim == 2:
    return _reduce(jnp.sum, a, like), _reduce(jnp.sum, b, like)
  return lax.reduce((a, b), (np.float32(0), np.float32(0)),
                    lambda x, y: (x[0] + y[0], x[1] + y[1]), (1,))


def shift(m: jax.Array) -> jax.Array:
  """The exponent shift of a running max: `m` where finite, else 0 (as
  `jax.nn.logsumexp` shifts), so `exp(z - shift)` is never `inf - inf`."""
  return jnp.where(jnp.isfinite(m), m, 0.0)


def rescale(m_old: jax.Array, m_new: jax.Array) -> jax.Array:
  """The factor taking a sum of `exp(z - shift(m_old))` to `exp(z - shift(m_new))`:
  0 while nothing but `-inf` was seen (the sum is 0 then, and `exp(0 - m_new)`
  may overflow)."""
  return jnp.where(m_old == -jnp.inf, 0.0, jnp.exp(shift(m_old) - shift(m_new)))


def weighted(weight: jax.Array, v: jax.Array) -> jax.Array:
  """`weight * v`, and 0 where `weight` is 0 even if `v` is infinite or NaN."""
  return jnp.where(weight == 0, 0.0, weight * v)


def block_start(k, block: int, total: int):
  """`(start, first_owned)` of block `k` of `block` positions out of `total`:
  the last block of an uneven split starts at `total - block` (nothing is
  padded or read out of bounds) and owns only positions `>= k * block`
  (`first_owned` None: an even split owns all)."""
  nominal = k * block
  if total % block == 0:
    return nominal, None
  return jnp.minimum(nominal, total - block), nominal


def owned(start, first_owned, shape: tuple[int, ...], dim: int) -> jax.Array:
  """bool `shape`: where `start + index along dim >= first_owned`."""
  return start + lax.broadcasted_iota(jnp.int32, shape, dim) >= first_owned


# --- a chunk of logits ------------------------------------------------------------------

class Chunk(NamedTuple):
  """Logits of a token block against a block of classes: float32 `[T, C]`
  `z_raw` (the matmul output, times a `logit_scale` option) and `z` (after cap,
  clip and temperature), int32 global class ids, bool `owned` (None: every
  column is this chunk's) and float32 unsmoothed label weights `target`
  (0 where not owned)."""

  z_raw: jax.Array
  z: jax.Array
  classes: jax.Array
  owned: jax.Array | None
  target: jax.Array

  @classmethod
  def of(cls, spec: Spec, matmul: jax.Array, first_class, owned_columns, labels) -> "Chunk":
    """The chunk of the float32 matmul output `[T, C]` whose first column is
    global class `first_class`; `owned_columns` bool (or None); `labels` the
    token block's ids (`[T]` or `[T, 1]`) or this chunk's probability columns."""
    z_raw = spec.scaled_logits(matmul)
    classes = first_class + lax.broadcasted_iota(jnp.int32, z_raw.shape, 1)
    if spec.labels_are_ids:
      target = (classes == _rows(labels)).astype(F32)
    else:
      target = labels.astype(F32)
    if owned_columns is not None:
      owned_columns = jnp.broadcast_to(owned_columns, z_raw.shape)
      target = jnp.where(owned_columns, target, 0.0)
    return cls(z_raw, reference.transform_logits(z_raw, spec.options), classes, owned_columns,
               target)

  def owned_or(self, v: jax.Array, fill) -> jax.Array:
    return v if self.owned is None else jnp.where(self.owned, v, fill)


# --- the online statistics ----------------------------------------------------------------

class Stats(NamedTuple):
  """Per-token running statistics over the classes seen so far.

  `m` max logit (NaN once a NaN was seen), `s` sum of `exp(z - shift(m))`,
  `idx` first class reaching `m` (the first NaN once there is one), `t` sum
  of label-weighted logits, `zsum` sum of logits (label smoothing), `w` sum of
  `exp(z - shift(m)) * z` (None unless the entropy is asked for: `sum(p * z)
  = w / s`).
  """

  m: jax.Array
  s: jax.Array
  idx: jax.Array
  t: jax.Array
  zsum: jax.Array
  w: jax.Array | None = None

  @classmethod
  def initial(cls, shape: tuple[int, ...], with_entropy: bool = False) -> "Stats":
    zeros = jnp.zeros(shape, F32)
    return cls(jnp.full(shape, -jnp.inf, F32), zeros, jnp.zeros(shape, jnp.int32), zeros, zeros,
               zeros if with_entropy else None)

  def update(self, spec: Spec, chunk: Chunk, *, target: bool = True) -> "Stats":
    """The statistics after also seeing `chunk`: the online-softmax step.
    `target=False` leaves `t` alone (ids: `target_logits` gives it whole)."""
    z = chunk.owned_or(chunk.z, -jnp.inf)
    chunk_max = _reduce(jnp.max, z, self.m)  # NaN if the chunk has one
    m = jnp.maximum(self.m, chunk_max)
    e = jnp.exp(reference.exponent(z, _rows(shift(m)), spec.tempered))
    factor = rescale(self.m, m)
    w = None
    if self.w is None:
      s = self.s * factor + _reduce(jnp.sum, e, self.s)
    else:  # a class with e = 0 (a -inf logit) adds nothing to w
      s_chunk, w_chunk = _row_sums(e, weighted(e, z), like=self.s)
      s, w = self.s * factor + s_chunk, self.w * factor + w_chunk
    # First class of the chunk reaching its max (NaN: its first NaN, as
    # jnp.argmax); an earlier chunk wins ties and keeps an earlier NaN.
    at_max = (z == _rows(chunk_max)) | jnp.isnan(z)
    chunk_idx = _reduce(jnp.min, jnp.where(at_max, chunk.classes, INT_MAX), self.idx)
    first_nan = jnp.isnan(chunk_max) & ~jnp.isnan(self.m)
    idx = jnp.where((chunk_max > self.m) | first_nan, chunk_idx, self.idx)
    t = self.t
    if target:
      t = t + _reduce(jnp.sum, weighted(chunk.target, chunk.owned_or(chunk.z, 0.0)), t)
    zsum = self.zsum
    if spec.options.label_smoothing_prob > 0:
      zsum = zsum + _reduce(jnp.sum, chunk.owned_or(chunk.z, 0.0), zsum)
    return Stats(m, s, idx, t, zsum, w)

  def combine(self, spec: Spec, all_reduce) -> "Stats":
    """The statistics of all vocab shards from this shard's: `all_reduce(value,
    combiner)` reduces a per-token value over the shards with "max", "add" or
    "min". The argmax is the lowest class among the shards at the global max
    or, when a shard holds a NaN, the first NaN."""
    m = all_reduce(self.m, "max")
    factor = rescale(self.m, m)
    s = all_reduce(self.s * factor, "add")
    w = None if self.w is None else all_reduce(self.w * factor, "add")
    t = all_reduce(self.t, "add")
    zsum = self.zsum
    if spec.options.label_smoothing_prob > 0:
      zsum = all_reduce(zsum, "add")
    # One min-reduce of a key: a shard's first NaN as idx - 2**31 (below any
    # other key), a shard at the global max as idx, else INT_MAX. (The max
    # all-reduce need not propagate NaN on every backend; `s` does, as a sum.)
    key = jnp.where(jnp.isnan(self.m), self.idx + INT_MIN,
                    jnp.where(self.m == m, self.idx, INT_MAX))
    key = all_reduce(key, "min")
    idx = jnp.where(key < 0, key - INT_MIN, key)
    return Stats(m, s, idx, t, zsum, w)

  def finalize(self, spec: Spec, label_mass: jax.Array) -> tuple[jax.Array, ...]:
    """`(per_example_xent, per_example_argmax, logsumexp, logsumexp_squared)`,
    then `per_example_entropy = lse - w / s` when the entropy is asked for.

    With target `q = label_scale * labels + uniform` and `P = label_mass`:
    `xent = -sum(q * (z - lse)) = -(label_scale * (t - lse * P) + uniform * (zsum - V * lse))`;
    a zero target weight contributes 0 whatever it multiplies.
    """
    lse = shift(self.m) + jnp.log(self.s)
    label_scale, uniform = spec.smoothing
    xent = jnp.zeros_like(lse)
    if label_scale:
      xent = (weighted(label_mass, lse) - self.t) * label_scale
    if uniform:
      xent = xent - (self.zsum - lse * float(spec.num_classes)) * uniform
    results = (xent, self.idx, lse, lse * lse)
    if self.w is not None:
      results += (lse - self.w / self.s,)
    return results


# --- the gradient ------------------------------------------------------------------------

def logits_cotangent(spec: Spec, chunk: Chunk, lse, q_mass, g_xent, g_p, entropy=None):
  """The cotangent of the chunk's matmul output, float32 `[T, C]`.

  `dz = g_xent * (p * Q - q) + g_p * p` with `p = exp(z - lse)`, the target
  `q = label_scale * labels + uniform` of mass `Q` (`Spec.target_mass`) and
  `g_p = reference.probability_cotangent(...)`; with `entropy = (E[z], g_H)`
  (the expected logit `lse - H`) minus `g_H * p * (z - E[z])`
  (`reference.entropy_cotangent`; 0 where `p` is). Columns the chunk does not
  own get 0; then back through temperature, clip and cap, and times a
  `logit_scale` option.
  """
  p = jnp.exp(reference.exponent(chunk.z, _rows(lse), spec.tempered))
  label_scale, uniform = spec.smoothing
  q = chunk.target
  if label_scale != 1.0:
    q = q * label_scale
  if uniform:
    q = q + uniform
  dz = _rows(g_xent) * (p * _rows(q_mass) - q) + _rows(g_p) * p
  if entropy is not None:
    expected, g_h = entropy
    dz = dz - _rows(g_h) * weighted(p, chunk.z - _rows(expected))
  dz = chunk.owned_or(dz, 0.0)
  return spec.scaled_logits(reference.transform_logits_vjp(chunk.z_raw, chunk.z, dz,
                                                           spec.options))
