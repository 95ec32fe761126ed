"""The dense reference: the one source of truth for the math.

Everything here works on flattened tokens: `x[N, M]`, `embedding[V, M]`, and
labels that are either class ids `[N]` (integer) or class probabilities `[N, V]`.
These functions are the `decomposition` of the two composites (see
`gshard_op/primitive.py`), so an un-rewritten module computes exactly this; the
passes in `passes/` compute the same quantities chunk by chunk.

Softmax math is float32 whatever the input dtype; matmuls take the input dtype
and accumulate in float32. The logit scale goes where `SoftmaxOptions.logit_scale`
says: on the inputs, in their dtype, before the matmul (None: Praxis's
`M**-0.5`), or on the float32 logits after it (a float: never rounded to the
inputs' dtype).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gshard_op.options import SoftmaxOptions, logit_scale

F32 = jnp.float32


def times_input_scale(v: jax.Array, in_features: int, opts: SoftmaxOptions) -> jax.Array:
  """`v * M**-0.5` in v's dtype where the scale is on the inputs (Praxis), `v`
  itself where `opts.logit_scale` multiplies the logits instead: the inputs'
  factor, on the inputs or on a gradient taken with unscaled ones."""
  if opts.scales_logits:
    return v
  return v * jnp.asarray(logit_scale(in_features), v.dtype)


def scaled_inputs(x: jax.Array, opts: SoftmaxOptions) -> jax.Array:
  """`x * M**-0.5` in x's dtype (Praxis scales the inputs, not the logits); x
  itself when `opts.logit_scale` scales the logits."""
  return times_input_scale(x, x.shape[-1], opts)


def scaled_logits(z: jax.Array, opts: SoftmaxOptions) -> jax.Array:
  """The float32 matmul output times `opts.logit_scale`, when it is set."""
  return z * jnp.float32(opts.logit_scale) if opts.scales_logits else z


def raw_logits(x: jax.Array, embedding: jax.Array, opts: SoftmaxOptions) -> jax.Array:
  """`(x * M**-0.5) @ embedding.T`, or `logit_scale * (x @ embedding.T)`,
  accumulated in float32: `[N, V]`, before cap, clip and temperature."""
  z = jnp.einsum("nm,vm->nv", scaled_inputs(x, opts), embedding, precision=opts.lax_precision,
                 preferred_element_type=F32)
  return scaled_logits(z, opts)


def cap_and_clip(z: jax.Array, opts: SoftmaxOptions) -> jax.Array:
  """Soft cap, then absolute clip, each only when set (Praxis order)."""
  if opts.soft_cap_logits > 0:
    cap = opts.soft_cap_logits
    z = cap * jnp.tanh(z / cap)
  if opts.logits_abs_max > 0:
    z = jnp.clip(z, -opts.logits_abs_max, opts.logits_abs_max)
  return z


def transform_logits(z: jax.Array, opts: SoftmaxOptions) -> jax.Array:
  """The logits the softmax sees: `cap_and_clip(z) / temperature`."""
  z = cap_and_clip(z, opts)
  return z / opts.temperature if opts.temperature != 1.0 else z


def transform_logits_vjp(z_raw: jax.Array, z: jax.Array, dz: jax.Array,
                         opts: SoftmaxOptions) -> jax.Array:
  """Pulls a cotangent of `z = transform_logits(z_raw)` back to `z_raw`.

  `|c| < abs_max` holds exactly where the clip passed its input through, `c`
  the clip's output: `z` itself at temperature 1, recomputed otherwise (`z *
  T` need not round back to it).
  """
  if opts.temperature != 1.0:
    dz = dz / opts.temperature
    if opts.logits_abs_max > 0:
      z = cap_and_clip(z_raw, opts)
  if opts.logits_abs_max > 0:
    dz = jnp.where(jnp.abs(z) < opts.logits_abs_max, dz, 0.0)
  if opts.soft_cap_logits > 0:
    t = jnp.tanh(z_raw / opts.soft_cap_logits)
    dz = dz * (1.0 - t * t)
  return dz


def exponent(z: jax.Array, shift: jax.Array, tempered: bool = True) -> jax.Array:
  """`z - shift`, the exponent of a softmax term, exactly 0 where `z == shift`.

  Untempered logits (`tempered=False`: temperature 1) have no product for XLA
  to contract into the subtraction, so the plain difference is exact there,
  and it spares XLA's fused sweep a `[T, V]` buffer the select costs (20 MiB
  of temp at 2048 x 512 x 32768). Tempered ones go through `_exact_exponent`.
  """
  return _exact_exponent(z, shift) if tempered else z - shift


@jax.custom_jvp
def _exact_exponent(z: jax.Array, shift: jax.Array) -> jax.Array:
  """`z - shift`, exactly 0 where `z == shift` (and `shift` is finite).

  XLA rewrites `c / T` as `c * (1 / T)`, may recompute that product in each
  fusion that reads it and contract it with the subtraction into an FMA, which
  skips the product's rounding: at `T = 1e-9` the class at the max then gets
  an exponent of about +-100 instead of 0 (an `inf` or `0` softmax). Only the
  compare sees the rounded product that the max (or a logsumexp equal to it)
  was taken of, so the class at the shift gets its 0 from the select. An
  infinite shift keeps IEEE's answer (`inf - inf` is NaN, as `log_softmax`
  gives for a `+inf` logit): only a finite one is exact by select.
  """
  return jnp.where((z == shift) & jnp.isfinite(shift), 0.0, z - shift)


@_exact_exponent.defjvp
def _exact_exponent_jvp(primals, tangents):
  (z, shift), (dz, dshift) = primals, tangents
  return _exact_exponent(z, shift), dz - dshift


def is_tempered(opts: SoftmaxOptions) -> bool:
  """Whether the logits are divided by a temperature (`exponent`'s `tempered`)."""
  return opts.temperature != 1.0


def logsumexp(z: jax.Array, tempered: bool = True) -> jax.Array:
  """`jax.nn.logsumexp(z, axis=-1)` with its exponents from `exponent`: the
  largest class adds exactly `exp(0) = 1` whatever the temperature."""
  top = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  top = jnp.where(jnp.isfinite(top), top, 0.0)  # as jax.nn.logsumexp shifts
  return (top + jnp.log(jnp.sum(jnp.exp(exponent(z, top, tempered)), axis=-1,
                                keepdims=True)))[..., 0]


def logits(x: jax.Array, embedding: jax.Array, opts: SoftmaxOptions) -> jax.Array:
  """The float32 `[N, V]` logits the softmax sees (after cap and clip)."""
  return transform_logits(raw_logits(x, embedding, opts), opts)


def smoothing_coefficients(num_classes: int, opts: SoftmaxOptions) -> tuple[float, float]:
  """`(a, b)` such that the smoothed target is `a * probs + b`.

  With `off = p / V` and `on = 1 - p + off`, Praxis's
  `on * probs + off * (1 - probs)` is `(on - off) * probs + off`.
  """
  off = opts.label_smoothing_prob / num_classes
  on = 1.0 - opts.label_smoothing_prob + off
  return on - off, off


def label_probabilities(labels: jax.Array, num_classes: int) -> jax.Array:
  """Class ids `[N]` to one-hot float32 `[N, V]`; probabilities pass through.

  Ids outside `[0, V)` give an all-zero row, as Praxis's `one_hot` does.
  Probabilities carry no gradient.
  """
  if jnp.issubdtype(labels.dtype, jnp.integer):
    return jax.nn.one_hot(labels, num_classes, dtype=F32)
  return jax.lax.stop_gradient(labels.astype(F32))


def target_distribution(labels: jax.Array, num_classes: int,
                        opts: SoftmaxOptions) -> jax.Array:
  """The (label-smoothed) target distribution `q[N, V]` of the cross-entropy."""
  a, b = smoothing_coefficients(num_classes, opts)
  probs = label_probabilities(labels, num_classes)
  if opts.label_smoothing_prob > 0:
    probs = a * probs + b
  return probs


def per_token_forward(x, embedding, labels, opts: SoftmaxOptions):
  """The forward composite: per-token results, all `[N]`.

  Returns `(per_example_xent f32, per_example_argmax i32, logsumexp f32,
  logsumexp_squared f32)`, then `per_example_entropy f32` when
  `opts.with_entropy`. The squared logsumexp is its own result so that the
  z-loss cotangent reaching the gradient never depends on forward results.
  """
  z = logits(x, embedding, opts)
  tempered = is_tempered(opts)
  lse = logsumexp(z, tempered)
  q = target_distribution(labels, embedding.shape[0], opts)
  xent = cross_entropy(exponent(z, lse[:, None], tempered), q)
  argmax = jnp.argmax(z, axis=-1).astype(jnp.int32)  # a NaN's first index if any
  if opts.with_entropy:
    return xent, argmax, lse, lse * lse, entropy(z, lse, tempered)
  return xent, argmax, lse, lse * lse


def entropy(z: jax.Array, lse: jax.Array, tempered: bool = True) -> jax.Array:
  """`H = lse - sum(p * z)` per token, `p = exp(z - lse)`; a class with `p = 0`
  (a `-inf` logit) adds nothing, so a one-hot distribution has `H = 0`."""
  p = jnp.exp(exponent(z, lse[..., None], tempered))
  # z masked before the product, not after: autodiff of `where(p == 0, 0, p * z)`
  # would still multiply the -inf into the unselected branch's gradient (NaN).
  return lse - jnp.sum(p * jnp.where(p == 0, 0.0, z), axis=-1)


def cross_entropy(log_probs: jax.Array, q: jax.Array) -> jax.Array:
  """`-sum(q * log_probs, -1)`, where a class with `q = 0` adds 0 even if its
  log-probability is infinite or NaN (an id out of range, a `-inf` logit):
  what XLA makes of Praxis's one-hot product, stated rather than left to its
  simplifier. `gshard_op/online_softmax.py` (`weighted`) follows the same rule."""
  return -jnp.sum(jnp.where(q == 0, 0.0, log_probs * q), axis=-1)


def probability_cotangent(lse, g_lse, g_lse_squared):
  """`g_p = g_lse + 2 * lse * g_lse_squared`: the coefficient of the softmax
  `p` in the logits' cotangent (`softmax.probability_cotangent` in IR)."""
  return g_lse + 2.0 * lse * g_lse_squared


def logits_cotangent(p, q, g_xent, g_p):
  """`dz = g_xent * (p * Q - q) + g_p * p`, `[N, V]`, with the softmax `p`, the
  target `q` of mass `Q` and `g_p` from `probability_cotangent`
  (`softmax.logits_cotangent` in IR, one chunk at a time)."""
  total_mass = jnp.sum(q, axis=-1, keepdims=True)
  return g_xent[:, None] * (p * total_mass - q) + g_p[:, None] * p


def entropy_cotangent(p, z, lse, h, g_h):
  """The entropy's share of the logits' cotangent, `-g_H * p * (z - E[z])`
  with `E[z] = sum(p * z) = lse - H`; 0 where `p = 0` (`softmax` in IR)."""
  centred = z - (lse - h)[:, None]
  return -g_h[:, None] * jnp.where(p == 0, 0.0, p * centred)


def _sharded_like(like, *operands):
  """Under an Explicit-axis mesh a matmul contracting a sharded dimension must
  be told where its result lives: like the operand it is the gradient of, on
  the mesh of whichever operand has one. None outside any mesh."""
  meshes = [jax.typeof(a).sharding.mesh for a in operands]
  mesh = next((m for m in meshes if not m.empty), None)
  if mesh is None:
    return None
  return jax.sharding.NamedSharding(mesh, jax.typeof(like).sharding.spec)


def per_token_grad(x, embedding, labels, lse, g_xent, g_lse, g_lse_squared, *entropy_args,
                   opts: SoftmaxOptions):
  """The gradient composite: `(d_x, d_embedding)` of `per_token_forward`.

  `lse` is the forward's saved logsumexp; `g_*` are the cotangents of
  `per_example_xent`, `logsumexp` and `logsumexp_squared`, and with
  `opts.with_entropy` `entropy_args` are the forward's entropy and its
  cotangent; the logits' cotangent is `logits_cotangent` (plus
  `entropy_cotangent`), pulled back through temperature, clip and cap.
  """
  z_raw = raw_logits(x, embedding, opts)
  z = transform_logits(z_raw, opts)
  p = jnp.exp(exponent(z, lse[:, None], is_tempered(opts)))
  q = target_distribution(labels, embedding.shape[0], opts)
  dz = logits_cotangent(p, q, g_xent, probability_cotangent(lse, g_lse, g_lse_squared))
  if opts.with_entropy:
    h, g_h = entropy_args
    dz = dz + entropy_cotangent(p, z, lse, h, g_h)
  # The matmul's cotangent: `scale * dz` in float32 when the scale is on the
  # logits, so `d_x = scale * dz @ E` and `d_E = scale * dz.T @ x` never round it.
  dz_matmul = scaled_logits(transform_logits_vjp(z_raw, z, dz, opts), opts)
  d_x = times_input_scale(jnp.einsum(
      "nv,vm->nm", dz_matmul.astype(embedding.dtype), embedding, precision=opts.lax_precision,
      preferred_element_type=F32, out_sharding=_sharded_like(x, x, embedding)), x.shape[-1], opts)
  d_embedding = jnp.einsum("nv,nm->vm", dz_matmul.astype(x.dtype), scaled_inputs(x, opts),
                           precision=opts.lax_precision, preferred_element_type=F32,
                           out_sharding=_sharded_like(embedding, x, embedding))
  return d_x.astype(x.dtype), d_embedding.astype(embedding.dtype)
