"""An independent float64 NumPy model of the shared embedding softmax.

Written from the spec (Praxis's `GShardSharedEmbeddingSoftmax`, as the README's
semantics paragraph and `docs/contract.md` state it), not from `gshard_op`: nothing here imports the
package under test. Everything is computed in float64 on the values it is given
(callers pass the exact values of their float32 / bfloat16 arrays).

Shapes follow the layer: `inputs[..., M]`, `embedding[V, M]`,
`class_weights` broadcastable to `[..., 1]`, `class_ids[..., 1]` (or `[...]`)
or `class_probabilities[..., V]`.

`forward` returns every field of the layer's output; `backward` is the analytic
gradient of a scalar loss given the cotangents of the differentiable per-token
quantities; `loss_cotangents` gives those cotangents for the named scalar losses
the tests use. `test_reference.py` checks `backward` against central finite
differences of `forward`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

F64 = np.float64


@dataclasses.dataclass(frozen=True)
class Options:
  soft_cap_logits: float = 0.0
  logits_abs_max: float = 0.0
  z_loss_weight: float = 0.0
  label_smoothing_prob: float = 0.0
  use_tgt_labels_size_as_loss_denominator: bool = True
  temperature: float = 1.0
  with_entropy: bool = False
  logit_scale: float | None = None  # None: M**-0.5 (Praxis); the math is the same either way


def scale_of(m: int, logit_scale: float | None) -> float:
  """The factor on `inputs @ embedding.T`: `logit_scale`, or `M**-0.5` when None."""
  return float(m) ** -0.5 if logit_scale is None else float(logit_scale)


def as_f64(a) -> np.ndarray:
  """The exact values of `a` (any float dtype, including bfloat16) in float64."""
  a = np.asarray(a)
  if a.dtype.kind == "V" or a.dtype.name == "bfloat16":
    a = a.astype(np.float32)
  return a.astype(F64)


def raw_logits(inputs, embedding, logit_scale: float | None = None) -> np.ndarray:
  """`(inputs * s) @ embedding.T`, float64 `[..., V]`, `s = scale_of(M, logit_scale)`."""
  inputs, embedding = as_f64(inputs), as_f64(embedding)
  return (inputs * scale_of(inputs.shape[-1], logit_scale)) @ embedding.T


def capped_logits(raw, opts: Options) -> np.ndarray:
  """Soft cap `cap * tanh(z / cap)` when set (before the clip)."""
  if opts.soft_cap_logits > 0:
    return opts.soft_cap_logits * np.tanh(raw / opts.soft_cap_logits)
  return raw


def final_logits(raw, opts: Options) -> np.ndarray:
  """Soft cap, then absolute clip, each only when set; then `/ temperature`."""
  z = capped_logits(raw, opts)
  if opts.logits_abs_max > 0:
    z = np.clip(z, -opts.logits_abs_max, opts.logits_abs_max)
  return z / opts.temperature


def logsumexp(z) -> np.ndarray:
  top = np.max(z, axis=-1, keepdims=True)
  return (top + np.log(np.sum(np.exp(z - top), axis=-1, keepdims=True)))[..., 0]


def one_hot(ids, num_classes) -> np.ndarray:
  """Praxis's one-hot: ids outside `[0, V)` give an all-zero row."""
  ids = np.asarray(ids)
  return (ids[..., None] == np.arange(num_classes)).astype(F64)


def batch_shape(inputs) -> tuple[int, ...]:
  return tuple(np.shape(inputs)[:-1])


def target_probs(inputs, num_classes, class_ids, class_probabilities,
                 opts: Options) -> np.ndarray:
  """The label-smoothed target distribution `[..., V]`."""
  batch = batch_shape(inputs)
  if class_ids is not None:
    ids = np.asarray(class_ids).reshape(batch)
    probs = one_hot(ids, num_classes)
  else:
    probs = as_f64(class_probabilities).reshape(batch + (num_classes,))
  p = opts.label_smoothing_prob
  if p > 0:
    off = p / num_classes
    on = 1.0 - p + off
    probs = on * probs + off * (1.0 - probs)
  return probs


def weights_of(inputs, class_weights) -> np.ndarray:
  """`class_weights` broadcast to `[..., 1]`, float64."""
  return np.broadcast_to(as_f64(class_weights), batch_shape(inputs) + (1,)).copy()


def denominator(inputs, class_weights, opts: Options) -> float:
  w = weights_of(inputs, class_weights)
  if opts.use_tgt_labels_size_as_loss_denominator:
    return float(w.size)
  return float(np.sum(w))


def entropy(z) -> np.ndarray:
  """`H = -sum(p * log p)` of the softmax of `z` (a class with `p = 0` adds 0)."""
  with np.errstate(invalid="ignore"):  # 0 * -inf where p = 0, discarded
    log_p = z - logsumexp(z)[..., None]
    p = np.exp(log_p)
    return -np.sum(np.where(p == 0, 0.0, p * log_p), axis=-1)


def forward(inputs, embedding, class_weights, class_ids=None,
            class_probabilities=None, opts: Options = Options()) -> dict:
  """Every field of the layer's output, in float64 (argmax as int64); with
  `opts.with_entropy` also `per_example_entropy`."""
  embedding = as_f64(embedding)
  num_classes = embedding.shape[0]
  z = final_logits(raw_logits(inputs, embedding, opts.logit_scale), opts)
  lse = logsumexp(z)
  log_probs = z - lse[..., None]
  q = target_probs(inputs, num_classes, class_ids, class_probabilities, opts)
  xent = -np.sum(log_probs * q, axis=-1)
  w = weights_of(inputs, class_weights)
  total_xent = np.sum(xent * w[..., 0])
  total_weight = np.sum(w)
  den = denominator(inputs, class_weights, opts)
  if opts.z_loss_weight > 0:
    z_loss = opts.z_loss_weight * np.sum(lse ** 2 * w[..., 0]) / den
  else:
    z_loss = 0.0
  extra = {"per_example_entropy": entropy(z)} if opts.with_entropy else {}
  return dict(
      **extra,
      logits=z,
      log_probs=log_probs,
      per_example_argmax=np.argmax(z, axis=-1),
      per_example_xent=xent,
      per_example_weight=w,
      total_xent=total_xent,
      total_weight=total_weight,
      avg_xent=total_xent / den,
      avg_xent_weight=den,
      z_loss=z_loss,
      logsumexp=lse,
  )


def backward(inputs, embedding, class_ids=None, class_probabilities=None,
             opts: Options = Options(), *, g_xent=None, g_lse=None,
             g_logits=None, g_log_probs=None, g_entropy=None) -> tuple[np.ndarray, np.ndarray]:
  """`(d_inputs, d_embedding)` of a scalar loss, float64.

  The loss is `sum(g_xent * per_example_xent) + sum(g_lse * logsumexp)
  + sum(g_logits * logits) + sum(g_log_probs * log_probs)` as far as its
  gradient goes (each cotangent may be None, meaning zero). Targets carry no
  gradient. With `p = softmax(z)` and `q` the target of total mass `Q`:
  `dz = g_xent * (p * Q - q) + g_lse * p + g_logits
        + g_log_probs - p * sum(g_log_probs)`,
  then through the clip (zero outside `(-abs_max, abs_max)`), the soft cap
  (`1 - tanh(raw / cap)**2`) and the scaled matmul.
  """
  x = as_f64(inputs)
  embedding = as_f64(embedding)
  num_classes, m = embedding.shape
  scale = scale_of(m, opts.logit_scale)
  raw = raw_logits(x, embedding, opts.logit_scale)
  z = final_logits(raw, opts)
  p = np.exp(z - logsumexp(z)[..., None])
  dz = np.zeros_like(z)
  if g_xent is not None:
    q = target_probs(x, num_classes, class_ids, class_probabilities, opts)
    g = np.asarray(g_xent, F64)[..., None]
    dz += g * (p * np.sum(q, axis=-1, keepdims=True) - q)
  if g_lse is not None:
    dz += np.asarray(g_lse, F64)[..., None] * p
  if g_logits is not None:
    dz += np.asarray(g_logits, F64)
  if g_log_probs is not None:
    g = np.asarray(g_log_probs, F64)
    dz += g - p * np.sum(g, axis=-1, keepdims=True)
  if g_entropy is not None:  # dH/dz = -p * (log p + H) = -p * (z - sum(p * z))
    log_p = z - logsumexp(z)[..., None]
    h = entropy(z)[..., None]
    dz -= np.asarray(g_entropy, F64)[..., None] * np.where(p == 0, 0.0, p * (log_p + h))
  dz = dz / opts.temperature
  if opts.logits_abs_max > 0:
    capped = capped_logits(raw, opts)
    dz = np.where(np.abs(capped) < opts.logits_abs_max, dz, 0.0)
  if opts.soft_cap_logits > 0:
    dz = dz * (1.0 - np.tanh(raw / opts.soft_cap_logits) ** 2)
  flat_dz = dz.reshape(-1, num_classes)
  flat_x = x.reshape(-1, m)
  d_inputs = (scale * flat_dz @ embedding).reshape(x.shape)
  d_embedding = flat_dz.T @ (scale * flat_x)
  return d_inputs, d_embedding


# The scalar losses the tests differentiate, as functions of the layer output
# (`coeffs` holds the random per-token / per-logit coefficients some need).
LOSSES = ("avg_xent", "total_xent", "z_loss", "avg_xent_plus_z_loss",
          "per_token_xent", "logits", "log_probs")


def make_coefficients(rng: np.random.Generator, batch, num_classes) -> dict:
  return dict(
      per_token=rng.standard_normal(batch),
      logits=rng.standard_normal(batch + (num_classes,)),
      log_probs=rng.standard_normal(batch + (num_classes,)),
  )


def loss_value(name: str, out: dict, coeffs: dict):
  """The scalar loss `name` of an output (works on NumPy and JAX outputs)."""
  if name == "avg_xent":
    return out["avg_xent"]
  if name == "total_xent":
    return out["total_xent"]
  if name == "z_loss":
    return out["z_loss"]
  if name == "avg_xent_plus_z_loss":
    return out["avg_xent"] + out["z_loss"]
  if name == "per_token_xent":
    return (coeffs["per_token"] * out["per_example_xent"]).sum()
  if name == "logits":
    return (coeffs["logits"] * out["logits"]).sum()
  if name == "log_probs":
    return (coeffs["log_probs"] * out["log_probs"]).sum()
  raise ValueError(name)


def loss_cotangents(name: str, inputs, embedding, class_weights, class_ids=None,
                    class_probabilities=None, opts: Options = Options(),
                    coeffs: dict | None = None) -> dict:
  """The cotangents (for `backward`) of the scalar loss `name`."""
  out = forward(inputs, embedding, class_weights, class_ids, class_probabilities, opts)
  w = out["per_example_weight"][..., 0]
  den = out["avg_xent_weight"]
  z_grad = opts.z_loss_weight * 2.0 * out["logsumexp"] * w / den
  if name == "avg_xent":
    return dict(g_xent=w / den)
  if name == "total_xent":
    return dict(g_xent=w)
  if name == "z_loss":
    return dict(g_lse=z_grad)
  if name == "avg_xent_plus_z_loss":
    return dict(g_xent=w / den, g_lse=z_grad)
  if name == "per_token_xent":
    return dict(g_xent=np.asarray(coeffs["per_token"], F64))
  if name == "logits":
    return dict(g_logits=np.asarray(coeffs["logits"], F64))
  if name == "log_probs":
    return dict(g_log_probs=np.asarray(coeffs["log_probs"], F64))
  raise ValueError(name)


def loss_grads(name: str, inputs, embedding, class_weights, class_ids=None,
               class_probabilities=None, opts: Options = Options(),
               coeffs: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
  """`(d_inputs, d_embedding)` of the scalar loss `name`, float64."""
  cot = loss_cotangents(name, inputs, embedding, class_weights, class_ids,
                        class_probabilities, opts, coeffs)
  return backward(inputs, embedding, class_ids, class_probabilities, opts, **cot)
