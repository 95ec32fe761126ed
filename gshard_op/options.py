"""The options of the shared embedding softmax, validated once and hashable.

Names and defaults are Praxis's (`GShardSharedEmbeddingSoftmax`). A `SoftmaxOptions`
is static: it is a `nondiff` argument of the custom VJP, a parameter of the
primitives and, as the composites' attributes (`to_attributes`, read back by
`from_attributes`), part of the lowered IR.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from gshard_op import contract


@dataclasses.dataclass(frozen=True)
class SoftmaxOptions:
  """Static options of one shared-embedding softmax.

  Each float option is finite, >= 0 (the temperature > 0) and representable
  in float32 (the softmax math is float32: 1e39 there is inf, 1e-46 is 0).

  Attributes:
    soft_cap_logits: if > 0, logits become `cap * tanh(logits / cap)`.
    logits_abs_max: if > 0, logits are then clipped to `[-abs_max, abs_max]`.
    z_loss_weight: weight of the auxiliary loss `mean(logsumexp(logits)**2)`.
    label_smoothing_prob: `p`; targets become `(1 - p + p/V)` on the label and
      `p/V` elsewhere. The layer passes 0 when it is deterministic (evaluation).
    use_tgt_labels_size_as_loss_denominator: the loss denominator is the number
      of class weights (True) or their sum (False).
    with_entropy: also compute `per_example_entropy`, `H = logsumexp(z) -
      sum(softmax(z) * z)` over the final logits, differentiable; a caller who
      does not ask pays nothing (no extra result, loop carry or operand).
    logit_scale: None scales the inputs by `in_features ** -0.5` in their own
      dtype before the matmul (Praxis). A float `s > 0` (finite, representable
      in float32) instead multiplies the float32-accumulated logits, so a bf16
      input never rounds it; 1.0 is the plain tied head (Gemma, Llama, Qwen,
      `nnx.Embed.attend`).
    temperature: `T`; the logits become `z / T` after the cap and the clip, for
      every field (cross-entropy, log-probs, z-loss on the tempered logsumexp;
      the argmax is unchanged). 1 leaves them as they are.
    precision: of every matmul of the op, as `jax.lax.Precision` names it
      ("default", "high", "highest", or the aliases "bfloat16",
      "tensorfloat32", "float32"); stored as the enum's name. None follows
      `jax.default_matmul_precision` where the op is traced, as a dense
      `jnp.dot` does (`with_default_precision`).
  """

  soft_cap_logits: float = 0.0
  logits_abs_max: float = 0.0
  z_loss_weight: float = 0.0
  label_smoothing_prob: float = 0.0
  use_tgt_labels_size_as_loss_denominator: bool = True
  precision: str | None = None
  temperature: float = 1.0
  with_entropy: bool = False
  logit_scale: float | None = None

  def __post_init__(self):
    for name in ("soft_cap_logits", "logits_abs_max", "z_loss_weight",
                 "label_smoothing_prob"):
      object.__setattr__(self, name, _float_option(name, getattr(self, name)))
    object.__setattr__(self, "temperature", _temperature(self.temperature))
    if self.label_smoothing_prob > 1:
      raise ValueError("label_smoothing_prob must be in [0, 1], got "
                       f"{self.label_smoothing_prob!r}")
    for name in ("use_tgt_labels_size_as_loss_denominator", "with_entropy"):
      object.__setattr__(self, name, bool(getattr(self, name)))
    if self.precision is not None:
      object.__setattr__(self, "precision", precision_name(self.precision, "precision"))
    if self.logit_scale is not None:
      object.__setattr__(self, "logit_scale",
                         _float_option("logit_scale", self.logit_scale, positive=True))

  @property
  def scales_logits(self) -> bool:
    """Whether the scale multiplies the float32 logits (`logit_scale` set)
    rather than the inputs before the matmul (None: Praxis)."""
    return self.logit_scale is not None

  def scale_for(self, in_features: int) -> float:
    """The logit scale: `logit_scale` when set, else `in_features ** -0.5`."""
    return self.logit_scale if self.scales_logits else logit_scale(in_features)

  @property
  def lax_precision(self):
    """`precision` as the `jax.lax.Precision` that JAX's matmuls take (or None)."""
    from jax import lax
    return None if self.precision is None else lax.Precision[self.precision]

  def with_default_precision(self) -> "SoftmaxOptions":
    """These options with `precision` fixed: None becomes what
    `jax.default_matmul_precision` says where this is called (trace time),
    "DEFAULT" when it says nothing. JAX's trace context includes that setting,
    so a change retraces."""
    if self.precision is not None:
      return self
    import jax
    configured = jax.config.jax_default_matmul_precision
    name = "DEFAULT" if configured is None else precision_name(
        configured, "jax_default_matmul_precision")
    return dataclasses.replace(self, precision=name)

  def to_attributes(self, in_features: int | None = None) -> dict:
    """These options as a composite's attributes, keyed by
    `gshard_op/contract.py`'s names: the floats as f64 (`np.float64`), the
    bools, and `precision` as fixed here (`with_default_precision`).
    `logit_scale` is the scale in force, `scale_for(in_features)`, and
    `scales_logits` says where it applies.

    Without `in_features` (torch's ops take their options so, before any shape
    is known), `logit_scale` is None where the option is: `from_attributes`
    reads it only where `scales_logits` is true.
    """
    attrs = {name: np.float64(getattr(self, name)) for name in contract.FLOAT_ATTRIBUTES
             if name != "logit_scale"}
    attrs["logit_scale"] = (None if in_features is None and not self.scales_logits
                            else np.float64(self.scale_for(in_features)))
    attrs.update({name: bool(getattr(self, name)) for name in contract.BOOL_ATTRIBUTES})
    fixed = self.with_default_precision()
    attrs.update({name: str(getattr(fixed, name)) for name in contract.STRING_ATTRIBUTES})
    return attrs

  @classmethod
  def from_attributes(cls, values: Mapping, version: int = contract.VERSION) -> "SoftmaxOptions":
    """The options of a composite of `version` whose attributes have the plain
    values `values` (as `to_attributes` gives them, or read from the IR).

    An attribute a later version added takes the value the older math had
    (`contract.ADDED`: precision DEFAULT, temperature 1, ...), whatever
    `values` holds. `logit_scale` is the option only where `scales_logits`;
    elsewhere the inputs are scaled by `M**-0.5` (None). Raises what
    `SoftmaxOptions` raises for a bad value.
    """
    carried = contract.attributes(version)

    def value(name):
      return values[name] if name in carried else contract.ADDED[name][1]

    options = {field.name: value(field.name) for field in dataclasses.fields(cls)
               if field.name != "logit_scale"}
    return cls(**options, logit_scale=value("logit_scale") if value("scales_logits") else None)


# The smallest temperature: float32's smallest normal number. Below it `1 / T`
# (what XLA multiplies by) is inf in float32, and the softmax NaN.
MIN_TEMPERATURE = float(np.finfo(np.float32).tiny)


def _temperature(value) -> float:
  """`value` as a temperature, with one message for every bad value (negative,
  zero, NaN, infinite, or too small for float32)."""
  message = (f"temperature must be finite and > 0 (at least {MIN_TEMPERATURE:.8g}, "
             f"float32's smallest normal number), got {value!r}")
  try:
    value = _float_option("temperature", value, positive=True)
  except ValueError:
    raise ValueError(message) from None
  if value < MIN_TEMPERATURE:
    raise ValueError(message)
  return value


def _float_option(name: str, value, positive: bool = False) -> float:
  """`value` as a float that is finite, >= 0 (> 0 if `positive`) and
  representable in float32 (the softmax math is float32: 1e39 there is inf,
  1e-46 is 0); errors name `name`."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"{name} must be a Python float, got {value!r}")
  try:
    value = float(value)
  except OverflowError:  # an int past float64
    value = math.inf
  if not math.isfinite(value) or value < 0 or (positive and value == 0):
    raise ValueError(f"{name} must be finite and {'>' if positive else '>='} 0, got {value!r}")
  with np.errstate(over="ignore"):
    in_f32 = float(np.float32(value))
  if math.isinf(in_f32) or (in_f32 == 0) != (value == 0):
    raise ValueError(f"{name} = {value!r} is not representable in float32, where the "
                     "softmax math runs (it would become inf or 0)")
  return value


PRECISIONS = ("DEFAULT", "HIGH", "HIGHEST")


def precision_name(value, what: str) -> str:
  """`value` (a `jax.lax.Precision` or one of its strings) as the enum's name."""
  from jax import lax
  if isinstance(value, lax.Precision):
    return value.name
  if isinstance(value, str) and value.upper() in PRECISIONS:  # the enum's own names
    return value.upper()
  try:
    return lax.Precision(value).name
  except (ValueError, TypeError):
    raise ValueError(f"{what} must be a jax.lax.Precision or one of 'default', 'high', "
                     "'highest', 'bfloat16', 'tensorfloat32', 'float32' (the op's matmuls "
                     f"take no dot-algorithm presets), got {value!r}") from None


def logit_scale(in_features: int) -> float:
  """The `in_features ** -0.5` that scales the inputs before the matmul."""
  return float(in_features) ** -0.5


def option_arguments(arguments: dict) -> dict:
  """The `SoftmaxOptions` fields among a layer constructor's `arguments` (its
  `locals()` on entry). The layers take each option as a keyword of their own,
  as Praxis's do, and hand them on with this rather than one by one: an option
  added to `SoftmaxOptions` then needs only its keyword in a signature."""
  return {field.name: arguments[field.name] for field in dataclasses.fields(SoftmaxOptions)
          if field.name in arguments}


def layer_options(in_features: int, num_classes: int, options: SoftmaxOptions | None = None,
                  defaults: SoftmaxOptions = SoftmaxOptions(), **keywords) -> SoftmaxOptions:
  """The options of a layer of `in_features` x `num_classes`, checked at
  construction (the NNX, Keras and PyTorch layers alike): both sizes must be
  positive ints; the options are `options=` or the keywords, never both
  (`call_options`, with the layer's own `defaults`)."""
  for name, size in (("in_features", in_features), ("num_classes", num_classes)):
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
      raise ValueError(f"{name} must be a positive int, got {size!r}")
  return call_options(options, defaults, **keywords)


def tied_head_keywords(logit_scale: float | None, keywords: dict) -> dict:
  """The constructor keywords of a layer's `from_embed(ding)`: its
  `logit_scale` (1.0 there: the plain tied head) with the other `keywords`;
  with `options=` and the scale left at 1.0, the options' own scale holds."""
  if keywords.get("options") is not None and logit_scale == 1.0:
    return keywords
  return {"logit_scale": logit_scale, **keywords}


def _left_at_default(value, default) -> bool:
  """Whether an option keyword's value is its default (arrays never are)."""
  return value is default or (isinstance(value, (bool, int, float, str)) and value == default)


def call_options(options: SoftmaxOptions | None, defaults: SoftmaxOptions = SoftmaxOptions(),
                 **keywords) -> SoftmaxOptions:
  """The options of one call of a front end that takes them either as
  `options=SoftmaxOptions(...)` or as keywords (its public API since the
  start): `options` when given, else `SoftmaxOptions(**keywords)`.

  Both at once is refused: a keyword that differs from its default in
  `defaults` (the front end's own defaults) next to `options` is an error,
  rather than one silently winning over the other.
  """
  if options is None:
    return SoftmaxOptions(**keywords)
  if not isinstance(options, SoftmaxOptions):
    raise TypeError(f"options must be a gshard_op.SoftmaxOptions, got {type(options).__name__}")
  given = [name for name, value in keywords.items()
           if not _left_at_default(value, getattr(defaults, name))]
  if given:
    raise ValueError(f"options= and the option keywords {given} were both given: pass "
                     "the options one way, either options=SoftmaxOptions(...) or keywords")
  return options


def for_layer_call(options: SoftmaxOptions, *, training: bool) -> SoftmaxOptions:
  """`options` as the layers apply them: label smoothing in training only
  (an NNX layer that is `deterministic`, a Keras call with `training=False`,
  a torch module in `.eval()` mode get none)."""
  if training or options.label_smoothing_prob == 0:
    return options
  return dataclasses.replace(options, label_smoothing_prob=0.0)
