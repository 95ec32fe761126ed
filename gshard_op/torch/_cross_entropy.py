"""`F.cross_entropy`'s arguments on the op: `cross_entropy` and `linear_cross_entropy`.

Torch's reductions, class weights, `ignore_index` and label smoothing, on
class indices or probabilities, mapped onto the op's per-token weights and
fields (`_functional.py`), so the `[..., V]` logits never exist.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gshard_op.options import SoftmaxOptions
from gshard_op.torch._functional import check_inputs, shared_embedding_softmax

_REDUCTIONS = ("none", "mean", "sum")


def cross_entropy(inputs: Tensor, embedding: Tensor, target: Tensor, *,
                  weight: Tensor | None = None, reduction: str = "mean",
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  soft_cap_logits: float = 0.0, logits_abs_max: float = 0.0,
                  z_loss_weight: float = 0.0, temperature: float = 1.0,
                  logit_scale: float | None = None,
                  precision: str | None = None) -> Tensor:
  """`F.cross_entropy(z, target, weight=weight, reduction=reduction,
  ignore_index=ignore_index, label_smoothing=label_smoothing)` on the logits `z`
  of `inputs` against `embedding`, computed by the op, so the `[..., V]` logits
  never exist.

  Arguments in the order of `F.linear_cross_entropy(input, linear_weight,
  target, ...)`, the options keyword-only, with torch's names where torch has
  one. With the defaults, `z = F.linear(inputs * M**-0.5, embedding)` (the
  layer's, Praxis's, logit scale): this equals `F.linear_cross_entropy(inputs *
  M**-0.5, embedding, target, ...)`; with `logit_scale=1.0` it is
  `F.linear_cross_entropy(inputs, embedding, target, ...)` itself (the tied
  head of Llama, Qwen, Gemma).

  Args:
    inputs: `[..., M]`; embedding: `[V, M]`.
    target: class indices `[...]` (any integer dtype; `ignore_index` marks tokens
      that count neither in the loss nor in the mean's denominator), or class
      probabilities `[..., V]` (floating point; no gradient flows to them).
      Indices outside `[0, V)` other than `ignore_index` give Praxis's all-zero
      target where torch raises.
    weight: `[V]` rescaling of each class, as torch's: the loss of a token is
      weighted by its target's weight and `mean` divides by the sum of those
      weights; label smoothing weights each class's term by its own weight.
      No gradient flows to it.
    reduction: "mean" (NaN, with zero gradients, when every token is ignored, as
      torch gives), "sum" or "none" (`[...]`, 0 for ignored tokens).
    label_smoothing: in `[0, 1]`, torch's (and Praxis's) uniform smoothing.
    soft_cap_logits: if > 0, `z = cap * tanh(z / cap)` (Gemma 2's
      `final_logit_softcapping`; Liger's `softcap`).
    logits_abs_max: if > 0, `z` is then clipped to `[-abs_max, abs_max]`.
    z_loss_weight: adds `z_loss_weight * logsumexp(z)**2` per token, weighted and
      reduced as the cross-entropy is (Liger's `lse_square_scale`; PaLM's
      z-loss); "mean" and "sum" only.
    temperature: `z / temperature`, after the cap and the clip.
    logit_scale: None: Praxis's `M**-0.5` on the inputs; a float multiplies the
      float32 logits (1.0: plain `inputs @ embedding.T`).
    precision: of the op's matmuls, as `jax.lax.Precision` names it (not an
      argument of torch's: its matmuls follow `torch.backends` settings); None
      follows JAX's `jax_default_matmul_precision`.

  "mean" and "sum" take the fused gradient computed in the forward; "none", and
  class weights together with label smoothing on class indices, take the
  general one (a second sweep over the vocabulary in the backward). Per-token
  outputs (the entropy, the argmax, the z-loss per token) come from
  `shared_embedding_softmax`.
  """
  if reduction not in _REDUCTIONS:
    raise ValueError(f"{reduction!r} is not a valid value for reduction; use one of {_REDUCTIONS}")
  if z_loss_weight and reduction == "none":
    raise ValueError("z_loss_weight needs reduction='mean' or 'sum': the op returns the "
                     "z-loss reduced; shared_embedding_softmax(...)['per_example_xent'] and "
                     "['z_loss'] give the per-token loss and the z-loss separately")
  check_inputs(inputs, embedding, label_smoothing)
  num_classes = embedding.shape[0]
  if weight is not None and (tuple(weight.shape) != (num_classes,)
                             or not weight.is_floating_point()):
    raise ValueError(f"weight must be a floating point [num_classes={num_classes}] tensor, "
                     f"got {weight.dtype}{list(weight.shape)}")
  dtype = torch.promote_types(inputs.dtype, embedding.dtype)
  # "sum" asks the op for Praxis's denominator (the token count, ignored tokens
  # included, never 0): `z_loss` times it is the z-loss's sum even when every
  # token is ignored, where torch's mean denominator would be 0.
  options = dict(soft_cap_logits=soft_cap_logits, logits_abs_max=logits_abs_max,
                 z_loss_weight=z_loss_weight, temperature=temperature, logit_scale=logit_scale,
                 precision=precision,
                 use_tgt_labels_size_as_loss_denominator=reduction == "sum")
  if target.is_floating_point():
    return _probability_cross_entropy(inputs, embedding, target, weight, reduction,
                                      label_smoothing, dtype, options)
  return _class_index_cross_entropy(inputs, embedding, target, weight, reduction, ignore_index,
                                    label_smoothing, dtype, options)


# torch's chunking options (torch >= 2.12); None where this torch has none.
_TORCH_CHUNKING = getattr(torch.nn, "LinearCrossEntropyOptions", None)


def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *,
                         linear_bias: Tensor | None = None, weight: Tensor | None = None,
                         reduction: str = "mean", ignore_index: int | None = None,
                         label_smoothing: float = 0.0, options=None,
                         soft_cap_logits: float = 0.0, logits_abs_max: float = 0.0,
                         z_loss_weight: float = 0.0, temperature: float = 1.0,
                         logit_scale: float | None = 1.0,
                         precision: str | None = None) -> Tensor:
  """`F.linear_cross_entropy(input, linear_weight, target, ...)` computed by
  the op: `F.cross_entropy(F.linear(input, linear_weight), target, ...)`
  without the `[..., V]` logits, differentiable (the fused gradient for "mean"
  and "sum") and traced by `torch.compile(fullgraph=True)` without a break.

  torch's arguments, names, order and defaults: `ignore_index=None` is -100
  for class indices, and `options` (torch's `LinearCrossEntropyOptions`, its
  chunking) may be given and changes nothing, as the op always works a chunk
  at a time. `linear_bias` must be None: the op's logits have no bias. Then,
  keyword-only, the op's options as in `cross_entropy`, which this is with
  `logit_scale=1.0` (the default here: the logits are `input @
  linear_weight.T`, torch's; None scales `input` by `M**-0.5`, Praxis's).
  `input` may be `[..., M]` with `target` `[...]` (or `[..., V]`
  probabilities). Second derivatives are refused, as torch's chunked path
  refuses them.
  """
  if linear_bias is not None:
    raise NotImplementedError(
        "gshard_op.torch.linear_cross_entropy takes no linear_bias: the op's logits are "
        "input @ linear_weight.T (a shared embedding has no bias); use "
        "F.linear_cross_entropy for a head with a bias")
  if options is not None and (_TORCH_CHUNKING is None
                              or not isinstance(options, _TORCH_CHUNKING)):
    raise TypeError("options must be None or a torch.nn.LinearCrossEntropyOptions (the op "
                    "always computes a chunk at a time); the op's own options are keywords "
                    f"(soft_cap_logits=, z_loss_weight=, ...), got {type(options).__name__}")
  return cross_entropy(input, linear_weight, target, weight=weight, reduction=reduction,
                       ignore_index=-100 if ignore_index is None else ignore_index,
                       label_smoothing=label_smoothing, soft_cap_logits=soft_cap_logits,
                       logits_abs_max=logits_abs_max, z_loss_weight=z_loss_weight,
                       temperature=temperature, logit_scale=logit_scale, precision=precision)


def _reduced(out, per_token: Tensor, reduction: str) -> Tensor:
  """The op's fields as torch's reductions; "mean" and "sum" are float32
  whatever the inputs' dtype (torch's would have the logits' dtype)."""
  if reduction == "none":
    return per_token
  return out["total_xent"] if reduction == "sum" else out["avg_xent"]


def _plus_z_loss(loss: Tensor, out, reduction: str, z_loss_weight: float) -> Tensor:
  """`loss` plus the op's z-loss, reduced as `loss` is: the op's `z_loss` is
  the mean over the same denominator, `avg_xent_weight` (for "sum", the token
  count: `cross_entropy` asks for it there)."""
  if not z_loss_weight:
    return loss
  z_loss = out["z_loss"] if reduction == "mean" else out["z_loss"] * out["avg_xent_weight"]
  return (loss + z_loss).to(loss.dtype)


def _probability_cross_entropy(inputs, embedding, target, weight, reduction, label_smoothing,
                               dtype, options) -> Tensor:
  """Soft labels: torch smooths them, `(1 - p) * target + p / V`, then weights
  each class, and its mean divides by the number of tokens. The `[..., V]`
  targets are dense already, so both happen to them here."""
  probs = target.detach()
  if label_smoothing:
    probs = probs * (1.0 - label_smoothing) + label_smoothing / embedding.shape[0]
  if weight is not None:
    probs = probs * weight.detach()
  out = shared_embedding_softmax(inputs, embedding, None, class_probabilities=probs,
                                 **{**options, "use_tgt_labels_size_as_loss_denominator": True})
  return _plus_z_loss(_reduced(out, out["per_example_xent"], reduction), out, reduction,
                      options["z_loss_weight"])


def _class_index_cross_entropy(inputs, embedding, target, weight, reduction, ignore_index,
                               label_smoothing, dtype, options) -> Tensor:
  """Class indices. Unweighted, torch's smoothing is Praxis's: the op computes
  it. A class weight `w[y]` is a per-token weight of the op, and torch's mean
  is the op's `avg_xent` over the total weight. Weights with smoothing need
  `sum_c w_c * -log p_c`, which no per-token weight gives: see
  `_weighted_smoothing`."""
  z_loss_weight = options["z_loss_weight"]
  if weight is None:
    out = shared_embedding_softmax(inputs, embedding, None, target,
                                   label_smoothing_prob=label_smoothing,
                                   ignore_index=ignore_index, **options)
    return _plus_z_loss(_reduced(out, out["per_example_xent"], reduction), out,
                        reduction, z_loss_weight)

  num_classes = embedding.shape[0]
  counted = (target != ignore_index) & (target >= 0) & (target < num_classes)
  safe_target = torch.where(counted, target, 0)
  w_y = torch.where(counted, weight.detach().float()[safe_target], 0.0)
  if not label_smoothing:
    out = shared_embedding_softmax(inputs, embedding, w_y[..., None], target,
                                   ignore_index=ignore_index, **options)
    return _plus_z_loss(_reduced(out, out["per_example_xent"] * w_y.to(dtype), reduction),
                        out, reduction, z_loss_weight)

  if options["soft_cap_logits"] or options["logits_abs_max"]:
    raise NotImplementedError(
        "cross_entropy with class weights and label smoothing together takes "
        "sum_c weight[c] * -log p_c through one matrix-vector product, which a soft cap "
        "or a clip (not linear in the logits) does not allow; drop one of the four, or "
        "pass the smoothed, weighted targets as class probabilities [..., V]")
  # The op's z-loss is then weighted by w_y, as the cross-entropy is.
  out = shared_embedding_softmax(inputs, embedding, w_y[..., None], target,
                                 ignore_index=ignore_index, **options)
  nll = out["per_example_xent"].float()
  scale = (SoftmaxOptions(logit_scale=options["logit_scale"]).scale_for(inputs.shape[-1])
           / options["temperature"])
  smooth = _weighted_smoothing(inputs, embedding, safe_target, weight.detach(), nll, scale)
  loss = torch.where(counted, (1.0 - label_smoothing) * w_y * nll
                     + (label_smoothing / num_classes) * smooth, 0.0)
  if reduction == "none":
    return loss.to(dtype)
  total = loss.sum()  # float32, as the op's scalar losses
  return _plus_z_loss(total if reduction == "sum" else total / w_y.sum(), out,
                      reduction, z_loss_weight)


def _weighted_smoothing(inputs, embedding, target, weight, nll, scale: float) -> Tensor:
  """`sum_c w_c * -log p_c` per token without the `[..., V]` logits: with
  `z = s * E x` (the logit scale over the temperature; no cap, no clip),
  `-log p_c = lse - z_c` and `lse = nll + z_y`, so the sum is
  `W * (nll + z_y) - s * x . (E^T w)` with `W = sum_c w_c`: a gathered row per
  token and one matrix-vector product, in float32."""
  x = inputs.float()
  e = embedding.float()
  z_target = scale * (x * e[target]).sum(-1)
  weighted_logits = scale * (x @ (e.T @ weight.float()))
  return weight.float().sum() * (nll + z_target) - weighted_logits
