"""The options of the shared embedding softmax, validated once and hashable.

Names and defaults are Praxis's (`GShardSharedEmbeddingSoftmax`). A `SoftmaxOptions`
is static: it is a `nondiff` argument of the custom VJP, a parameter of the
primitives and, through `composite_attributes`, part of the lowered IR.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class SoftmaxOptions:
  """Static options of one shared-embedding softmax.

  Each float option is finite, >= 0 and representable in float32 (the
  softmax math is float32: 1e39 there is inf, 1e-46 is 0).

  Attributes:
    soft_cap_logits: if > 0, logits become `cap * tanh(logits / cap)`.
    logits_abs_max: if > 0, logits are then clipped to `[-abs_max, abs_max]`.
    z_loss_weight: weight of the auxiliary loss `mean(logsumexp(logits)**2)`.
    label_smoothing_prob: `p`; targets become `(1 - p + p/V)` on the label and
      `p/V` elsewhere. The layer passes 0 when it is deterministic (evaluation).
    use_tgt_labels_size_as_loss_denominator: the loss denominator is the number
      of class weights (True) or their sum (False).
  """

  soft_cap_logits: float = 0.0
  logits_abs_max: float = 0.0
  z_loss_weight: float = 0.0
  label_smoothing_prob: float = 0.0
  use_tgt_labels_size_as_loss_denominator: bool = True

  def __post_init__(self):
    for name in ("soft_cap_logits", "logits_abs_max", "z_loss_weight",
                 "label_smoothing_prob"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python float, got {value!r}")
      try:
        value = float(value)
      except OverflowError:  # an int past float64
        value = math.inf
      if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
      with np.errstate(over="ignore"):
        in_f32 = float(np.float32(value))
      if math.isinf(in_f32) or (in_f32 == 0) != (value == 0):
        raise ValueError(f"{name} = {value!r} is not representable in float32, where the "
                         "softmax math runs (it would become inf or 0)")
      object.__setattr__(self, name, value)
    if self.label_smoothing_prob > 1:
      raise ValueError("label_smoothing_prob must be in [0, 1], got "
                       f"{self.label_smoothing_prob!r}")
    object.__setattr__(self, "use_tgt_labels_size_as_loss_denominator",
                       bool(self.use_tgt_labels_size_as_loss_denominator))


def logit_scale(in_features: int) -> float:
  """The `in_features ** -0.5` that scales the inputs before the matmul."""
  return float(in_features) ** -0.5


def layer_options(in_features: int, num_classes: int, **options) -> SoftmaxOptions:
  """The options of a layer of `in_features` x `num_classes`, checked at
  construction (the NNX, Keras and PyTorch layers alike): both sizes must be
  positive ints, and `options` are `SoftmaxOptions`' fields."""
  for name, size in (("in_features", in_features), ("num_classes", num_classes)):
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
      raise ValueError(f"{name} must be a positive int, got {size!r}")
  return SoftmaxOptions(**options)
