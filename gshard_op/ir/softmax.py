"""The chunk-level math of the shared embedding softmax, emitted as StableHLO.

`gshard_op/reference.py` computes over all `V` classes at once; here the same
quantities are built one `[T, C]` chunk of logits at a time, so that every pass
(chunked, vocab-sharded, fused) shares one emitter of:

* `Chunk`: the logits of some tokens against some classes, with their global
  class ids and a mask of the classes this chunk owns;
* `OnlineStats`: the running per-token max, sum of exponentials, argmax,
  target logit and sum of logits (the online softmax), its `update` by one
  chunk, its `combine` across vocab shards (given the all-reduce to use), and
  the per-token results it finalises;
* `probability_cotangent` and `logits_cotangent`: the gradient of the
  per-token results w.r.t. the chunk's raw logits, from the saved logsumexp.
  They are the IR form of `reference.probability_cotangent` and
  `reference.logits_cotangent`; the chunked and fused loops both use them.

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

import numpy as np
from jaxlib.mlir import ir

from gshard_op.options import SoftmaxOptions
from gshard_op.reference import is_tempered, smoothing_coefficients
from gshard_op.ir import builders as b

INT_MAX = int(np.iinfo(np.int32).max)
INT_MIN = int(np.iinfo(np.int32).min)


@dataclasses.dataclass(frozen=True)
class Softmax:
  """The static description of one composite, as the emitters need it."""

  options: SoftmaxOptions
  logit_scale: float
  num_classes: int        # the global V (label smoothing and Q use it)
  labels_are_ids: bool

  @classmethod
  def of(cls, site) -> "Softmax":
    """The description of a checked composite (`composites.SoftmaxComposite`)."""
    return cls(options=site.options, logit_scale=site.logit_scale,
               num_classes=site.num_classes, labels_are_ids=site.labels_are_ids)

  @property
  def smoothing(self) -> tuple[float, float]:
    """`(label_scale, uniform)`: the target is `label_scale * labels + uniform`
    (`1 - p` and `p / V` with label smoothing `p`, else 1 and 0)."""
    if self.options.label_smoothing_prob > 0:
      return smoothing_coefficients(self.num_classes, self.options)
    return 1.0, 0.0

  @property
  def scales_logits(self) -> bool:
    """Whether `logit_scale` multiplies the float32 logits after the matmul
    (`SoftmaxOptions.logit_scale` set) rather than the inputs before it."""
    return self.options.scales_logits

  def times_input_scale(self, v: ir.Value) -> ir.Value:
    """`v * M**-0.5` in v's dtype where the scale is on the inputs (Praxis),
    `v` itself where it is on the logits: the inputs' factor, on the inputs or
    on what stands in for them (an embedding slice, a gradient taken with
    unscaled inputs)."""
    return v if self.scales_logits else b.mul(v, self.logit_scale)

  def scaled_inputs(self, x: ir.Value) -> ir.Value:
    """`reference.scaled_inputs`: `x * M**-0.5` in x's dtype, or x (once,
    before any loop)."""
    return self.times_input_scale(x)

  def scaled_logits(self, z: ir.Value) -> ir.Value:
    """`reference.scaled_logits`: the float32 matmul output times
    `logit_scale` where the scale is on the logits. Also the pull-back of a
    cotangent of the logits to the matmul's output (the same product)."""
    return b.mul(z, self.logit_scale) if self.scales_logits else z

  def cap_and_clip(self, z_raw: ir.Value) -> ir.Value:
    """Soft cap, then clip: `reference.cap_and_clip`."""
    z = z_raw
    if self.options.soft_cap_logits > 0:
      cap = self.options.soft_cap_logits
      z = b.mul(b.tanh(b.div(z, cap)), cap)
    if self.options.logits_abs_max > 0:
      bound = self.options.logits_abs_max
      z = b.clamp(-bound, z, bound)
    return z

  def transform(self, z_raw: ir.Value) -> ir.Value:
    """The logits the softmax sees, `cap_and_clip(z_raw) / temperature`:
    `reference.transform_logits`."""
    z = self.cap_and_clip(z_raw)
    return b.div(z, self.options.temperature) if self.options.temperature != 1.0 else z

  def transform_cotangent(self, z_raw: ir.Value, z: ir.Value, dz: ir.Value) -> ir.Value:
    """`reference.transform_logits_vjp`: through the temperature, the clip
    (`|c| < abs_max` holds exactly where the clip passed its input through, `c`
    its output: `z` at temperature 1, else recomputed), then the cap."""
    if self.options.temperature != 1.0:
      dz = b.div(dz, self.options.temperature)
      if self.options.logits_abs_max > 0:
        z = self.cap_and_clip(z_raw)
    if self.options.logits_abs_max > 0:
      dz = b.select(b.compare(b.abs_(z), self.options.logits_abs_max, "LT"), dz, 0.0)
    if self.options.soft_cap_logits > 0:
      t = b.tanh(b.div(z_raw, self.options.soft_cap_logits))
      dz = b.mul(dz, b.sub(1.0, b.mul(t, t)))
    return dz

  def label_mass(self, labels: ir.Value) -> ir.Value:
    """Per token, the mass `P` of the (unsmoothed) labels: 1 for an id in range,
    0 out of range; the row sum of probabilities."""
    if self.labels_are_ids:
      inside = b.and_(b.compare(labels, 0, "GE"), b.compare(labels, self.num_classes, "LT"))
      return b.select(inside, b.full(b.shape_of(labels), b.f32(), 1.0), 0.0)
    return b.row_sum(b.convert(labels, b.f32()))

  def target_mass(self, label_mass: ir.Value) -> ir.Value:
    """`Q`, the total mass of the smoothed target: `label_scale * P + uniform * V`
    (`reference.target_distribution` summed over the classes)."""
    label_scale, uniform = self.smoothing
    return b.add(b.mul(label_mass, label_scale), uniform * self.num_classes)


def weighted_by(weight: ir.Value, v: ir.Value) -> ir.Value:
  """`weight * v`, and 0 where `weight` is 0 even if `v` is infinite or NaN:
  a class with a zero target contributes nothing to the cross-entropy."""
  return b.select(b.compare(weight, 0.0, "EQ"), 0.0, b.mul(weight, v))


def shift(m: ir.Value) -> ir.Value:
  """The exponent shift of a running max: `m` where finite, else 0 (as
  `jax.nn.logsumexp` shifts), so `exp(z - shift)` is never `inf - inf`."""
  return b.select(b.is_finite(m), m, 0.0)


def exponent(z: ir.Value, shift: ir.Value, tempered: bool = True) -> ir.Value:
  """`z - shift`, exactly 0 where `z == shift`: `reference.exponent` (XLA may
  contract the temperature's product into the subtraction, skipping the
  rounding the max was taken of; the compare still sees the rounded value);
  an infinite shift keeps IEEE's `z - shift`. Untempered logits need no
  select (nothing to contract) and get none."""
  if not tempered:
    return b.sub(z, shift)
  at_shift = b.and_(b.compare(z, shift, "EQ"), b.is_finite(shift))
  return b.select(at_shift, 0.0, b.sub(z, shift))


def rescale(m_old: ir.Value, m_new: ir.Value) -> ir.Value:
  """The factor taking a sum of `exp(z - shift(m_old))` to `exp(z - shift(m_new))`.

  0 while nothing but `-inf` was seen (the sum is 0 then, and `exp(0 - m_new)`
  may overflow); `m_new` only grows, so the factor is otherwise at most 1 or,
  past a `+inf`, the sum is infinite anyway.
  """
  factor = b.exp(b.sub(shift(m_old), shift(m_new)))
  return b.select(b.compare(m_old, -np.inf, "EQ"), 0.0, factor)


def owned(start: ir.Value, first_owned: ir.Value, shape, dim: int) -> ir.Value:
  """i1 `shape`: where `start + index along dim >= first_owned`, i.e. the
  positions an overlapping (clamped) last chunk or block owns."""
  positions = b.add(b.iota(shape, dim), b.broadcast(start, shape, []))
  return b.compare(positions, b.broadcast(first_owned, shape, []), "GE")


@dataclasses.dataclass
class Chunk:
  """Logits of a token block against a block of classes.

  `z_raw`, `z`: float32 `[T, C]` before and after cap/clip; `classes`: i32
  `[T, C]` global class ids; `owned`: i1 `[T, C]` or None when every column
  belongs to this chunk (overlapping last chunks mask the columns an earlier
  chunk already had); `labels`: the ids `[T]` or this chunk's probability
  columns `[T, C]`; `embedding`: the `[C, M]` slice the logits came from
  (carrying Praxis's scale unless the inputs do; a `logit_scale` option is on
  `z_raw` instead).
  """

  z_raw: ir.Value
  z: ir.Value
  classes: ir.Value
  owned: ir.Value | None
  labels: ir.Value
  embedding: ir.Value

  def owned_or(self, v: ir.Value, fill) -> ir.Value:
    return v if self.owned is None else b.select(self.owned, v, fill)

  def target(self, sm: Softmax) -> ir.Value:
    """The unsmoothed label weights of this chunk's columns, f32 `[T, C]`."""
    if sm.labels_are_ids:
      hit = b.compare(self.classes, b.rows(self.labels, b.shape_of(self.classes)), "EQ")
      weights = b.select(hit, b.full(b.shape_of(self.z), b.f32(), 1.0), 0.0)
    else:
      weights = b.convert(self.labels, b.f32())
    return self.owned_or(weights, 0.0)


def chunk_logits(sm: Softmax, x: ir.Value, embedding: ir.Value, labels: ir.Value,
                 start: ir.Value, first_owned: ir.Value | None, size: int,
                 class_offset: ir.Value | None = None, *, scaled_x: bool = False) -> Chunk:
  """The chunk of `size` classes from row `start` of `embedding` for tokens `x`.

  Praxis's logit scale goes on the `[C, M]` embedding slice, unless `scaled_x`
  says `x` already carries it (then no `[N, M]` scaled copy of the inputs is
  needed, and the slice serves `d_x` as is); a `logit_scale` option goes on
  the float32 logits instead (`Softmax.scaled_logits`). `first_owned`: the lowest local
  row this chunk owns (None: all). Class ids are `class_offset + row` (a
  shard's first global class).
  """
  t, m = b.shape_of(x)
  emb = b.dynamic_slice(embedding, [start, b.scalar(0, b.i32())], [size, m])
  if not scaled_x:
    emb = sm.times_input_scale(emb)
  z_raw = sm.scaled_logits(b.dot(x, emb, (1, 1), b.f32(), sm.options.precision))
  rows = b.add(b.iota((t, size), 1), b.broadcast(start, (t, size), []))
  mask = None if first_owned is None else owned(start, first_owned, (t, size), 1)
  classes = rows if class_offset is None else b.add(rows, b.broadcast(class_offset, (t, size), []))
  if sm.labels_are_ids:
    chunk_labels = labels
  else:
    chunk_labels = b.dynamic_slice(labels, [b.scalar(0, b.i32()), start], [t, size])
  return Chunk(z_raw=z_raw, z=sm.transform(z_raw), classes=classes, owned=mask,
               labels=chunk_labels, embedding=emb)


@dataclasses.dataclass
class OnlineStats:
  """Per-token running statistics over the classes seen so far (all `[T]`).

  `m` max logit (NaN once a NaN was seen), `s` sum of `exp(z - shift(m))`,
  `idx` first class reaching `m` (the first NaN once there is one), `t` sum of
  label-weighted logits (for probabilities; class ids get theirs from
  `target_logits`), `zsum` sum of logits (label smoothing only), and, only
  when the entropy is asked for, `w` the sum of `exp(z - shift(m)) * z`
  (combined like `s`: `sum(p * z) = w / s`).
  """

  m: ir.Value
  s: ir.Value
  idx: ir.Value
  t: ir.Value
  zsum: ir.Value
  w: ir.Value | None = None

  FIELDS = ("m", "s", "idx", "t", "zsum", "w")

  @classmethod
  def initial(cls, tokens: int, with_entropy: bool = False) -> "OnlineStats":
    zeros = b.full((tokens,), b.f32(), 0.0)
    return cls(m=b.full((tokens,), b.f32(), -np.inf), s=zeros,
               idx=b.full((tokens,), b.i32(), 0), t=zeros, zsum=zeros,
               w=zeros if with_entropy else None)

  def as_dict(self) -> dict[str, ir.Value]:
    """The statistics as loop carries (no `w` carry unless the entropy is asked for)."""
    return {f: getattr(self, f) for f in self.FIELDS if getattr(self, f) is not None}

  def update(self, sm: Softmax, chunk: Chunk) -> "OnlineStats":
    """The statistics after also seeing `chunk`."""
    shape = b.shape_of(chunk.z)
    z = chunk.owned_or(chunk.z, -np.inf)
    chunk_max = b.row_max(z)  # NaN if the chunk has one
    m = b.maximum(self.m, chunk_max)
    e = b.exp(exponent(z, b.rows(shift(m), shape), is_tempered(sm.options)))
    w = None
    if self.w is None:
      s = b.add(b.mul(self.s, rescale(self.m, m)), b.row_sum(e))
    else:  # one reduce of both sums; a class with e = 0 (a -inf logit) adds nothing to w
      s_chunk, w_chunk = b.row_sums(e, weighted_by(e, z))
      s = b.add(b.mul(self.s, rescale(self.m, m)), s_chunk)
      w = b.add(b.mul(self.w, rescale(self.m, m)), w_chunk)
    # First class of the chunk reaching its max (NaN: its first NaN, as
    # jnp.argmax); an earlier chunk wins ties and keeps an earlier NaN.
    at_max = b.or_(b.compare(z, b.rows(chunk_max, shape), "EQ"), b.is_nan(z))
    chunk_idx = b.row_min(b.select(at_max, chunk.classes, INT_MAX))
    first_nan = b.and_(b.is_nan(chunk_max), b.not_(b.is_nan(self.m)))
    better = b.or_(b.compare(chunk_max, self.m, "GT"), first_nan)
    idx = b.select(better, chunk_idx, self.idx)
    t = self.t
    if not sm.labels_are_ids:  # ids: `target_logits` reads the label's row instead
      t = b.add(t, b.row_sum(weighted_by(chunk.target(sm), chunk.owned_or(chunk.z, 0.0))))
    zsum = self.zsum
    if sm.options.label_smoothing_prob > 0:
      zsum = b.add(zsum, b.row_sum(chunk.owned_or(chunk.z, 0.0)))
    return OnlineStats(m=m, s=s, idx=idx, t=t, zsum=zsum, w=w)

  def combine(self, sm: Softmax, all_reduce) -> "OnlineStats":
    """The statistics of all vocab shards from this shard's: `all_reduce(value,
    combiner)` reduces a `[T]` value over the shards with `b.maximum`,
    `b.add` or `b.minimum`. The argmax is the lowest class among the shards
    at the global max or, when a shard holds a NaN, the first NaN."""
    m = all_reduce(self.m, b.maximum)
    s = all_reduce(b.mul(self.s, rescale(self.m, m)), b.add)
    w = None if self.w is None else all_reduce(b.mul(self.w, rescale(self.m, m)), b.add)
    t = all_reduce(self.t, b.add)
    zsum = self.zsum
    if sm.options.label_smoothing_prob > 0:
      zsum = all_reduce(zsum, b.add)
    # One min-reduce of a key: a shard's first NaN as idx - 2**31 (below any
    # other key), a shard at the global max as idx, else INT_MAX. (The max
    # all-reduce need not propagate NaN on every backend; `s` does, as a sum.)
    nan_key = b.add(self.idx, INT_MIN)
    key = b.select(b.is_nan(self.m), nan_key,
                   b.select(b.compare(self.m, m, "EQ"), self.idx, INT_MAX))
    key = all_reduce(key, b.minimum)
    idx = b.select(b.compare(key, 0, "LT"), b.sub(key, INT_MIN), key)
    return OnlineStats(m=m, s=s, idx=idx, t=t, zsum=zsum, w=w)

  def finalize(self, sm: Softmax, label_mass: ir.Value) -> list[ir.Value]:
    """`[per_example_xent, per_example_argmax, logsumexp, logsumexp_squared]`,
    then `per_example_entropy = lse - w / s` when the entropy is asked for.

    With target `q = label_scale * labels + uniform` and `P = label_mass` (`Softmax.label_mass`):
    `xent = -sum(q * (z - lse)) = -(label_scale * (t - lse * P) + uniform * (zsum - V * lse))`.
    A zero target weight contributes 0 whatever it multiplies (as in
    `reference.cross_entropy`): `lse * P` is 0 for an out-of-range id even
    where `lse` is infinite, and `t` skips the classes with a zero target.
    """
    lse = b.add(shift(self.m), b.log(self.s))
    label_scale, uniform = sm.smoothing
    xent = b.full(b.shape_of(lse), b.f32(), 0.0)
    if label_scale:
      xent = b.mul(b.sub(weighted_by(label_mass, lse), self.t), label_scale)
    if uniform:
      xent = b.sub(xent, b.mul(b.sub(self.zsum, b.mul(lse, float(sm.num_classes))), uniform))
    results = [xent, self.idx, lse, b.mul(lse, lse)]
    if self.w is not None:
      results.append(b.sub(lse, b.div(self.w, self.s)))
    return results


def target_logits(sm: Softmax, x: ir.Value, embedding: ir.Value, ids: ir.Value,
                  class_offset: ir.Value | None = None, *, scaled_x: bool = False) -> ir.Value:
  """Per token, the logit of its label class, f32 `[T]`; 0 for a label outside
  this embedding's classes `[class_offset, class_offset + V_local)`.

  One row of the embedding per token instead of a one-hot mask over every
  chunk: the forward then never builds a `[T, C]` target at all.
  """
  v_local = b.shape_of(embedding)[0]
  local = ids if class_offset is None else b.sub(ids, b.broadcast(class_offset, b.shape_of(ids), []))
  inside = b.and_(b.compare(local, 0, "GE"), b.compare(local, v_local, "LT"))
  rows = b.take_rows(embedding, b.clamp(0, local, v_local - 1))
  if not scaled_x:  # rounded as `chunk_logits` rounds it
    rows = sm.times_input_scale(rows)
  z_raw = sm.scaled_logits(b.row_sum(b.mul(b.convert(x, b.f32()), b.convert(rows, b.f32()))))
  return b.select(inside, sm.transform(z_raw), 0.0)


def probability_cotangent(lse: ir.Value, g_lse: ir.Value, g_lse_squared: ir.Value) -> ir.Value:
  """`g_p = g_lse + 2 * lse * g_lse_squared`, `[T]`: the coefficient of the
  softmax `p` in the logits' cotangent (`reference.probability_cotangent`)."""
  return b.add(g_lse, b.mul(b.mul(lse, g_lse_squared), 2.0))


def logits_cotangent(sm: Softmax, chunk: Chunk, lse: ir.Value, q_mass: ir.Value,
                     g_xent: ir.Value, g_p: ir.Value,
                     entropy: tuple[ir.Value, ir.Value] | None = None) -> ir.Value:
  """The cotangent of the chunk's matmul output, f32 `[T, C]`
  (`reference.logits_cotangent`, then `transform_cotangent`, then times a
  `logit_scale` on the logits: `scaled_logits`).

  `dz = g_xent * (p * Q - q) + g_p * p` with `p = exp(z - lse)`, the target
  `q = label_scale * labels + uniform`, its mass `Q = Softmax.target_mass` and
  `g_p = probability_cotangent(...)`; with `entropy = (H, g_H)` plus
  `-g_H * p * (z - (lse - H))` (`reference.entropy_cotangent`; 0 where `p`
  is); then back through temperature, clip and cap. Columns the chunk does
  not own get 0.
  """
  shape = b.shape_of(chunk.z)
  p = b.exp(exponent(chunk.z, b.rows(lse, shape), is_tempered(sm.options)))
  label_scale, uniform = sm.smoothing
  q = chunk.target(sm)
  if label_scale != 1.0:
    q = b.mul(q, label_scale)
  if uniform:
    q = b.add(q, uniform)
  dz = b.add(b.mul(b.rows(g_xent, shape), b.sub(b.mul(p, b.rows(q_mass, shape)), q)),
             b.mul(b.rows(g_p, shape), p))
  if entropy is not None:
    h, g_h = entropy
    centred = b.sub(chunk.z, b.rows(b.sub(lse, h), shape))
    dz = b.sub(dz, b.mul(b.rows(g_h, shape), weighted_by(p, centred)))
  dz = chunk.owned_or(dz, 0.0)
  return sm.scaled_logits(sm.transform_cotangent(chunk.z_raw, chunk.z, dz))
