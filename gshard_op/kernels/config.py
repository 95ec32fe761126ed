"""What is static about one kernel instance: its block sizes and its config."""

from __future__ import annotations

import dataclasses

from gshard_op.online_softmax import Spec
from gshard_op.options import SoftmaxOptions

BACKENDS = ("interpret", "triton", "mosaic_tpu")


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Block sizes of the kernels: `tokens` (T) and `vocab` (C), the `[T, C]`
  block of logits one step recomputes; `features` (K), the logits' contraction
  summed a block at a time; `grad_features` (F), the columns of `d_x` or
  `d_embedding` one gradient program writes. 0 for either feature block
  means all of `M` (as on a TPU, where VMEM holds whole rows)."""

  tokens: int
  vocab: int
  features: int = 0
  grad_features: int = 0

  def __post_init__(self):
    if self.tokens <= 0 or self.vocab <= 0:
      raise ValueError(f"block sizes must be positive, got tokens={self.tokens} "
                       f"vocab={self.vocab}")
    if self.features < 0 or self.grad_features < 0:
      raise ValueError(f"feature blocks must be >= 0 (0: all features), got "
                       f"features={self.features} grad_features={self.grad_features}")

  def resolved_features(self, in_features: int) -> tuple[int, int]:
    """`(features, grad_features)` for `M = in_features`, 0 resolved to `M`."""
    return self.features or in_features, self.grad_features or in_features

  def check(self, num_tokens: int, num_classes: int, in_features: int) -> None:
    """Raises ValueError unless the blocks fit inside `N`, `V` and `M`."""
    if self.tokens > num_tokens or self.vocab > num_classes:
      raise ValueError(f"blocks {self.tokens} x {self.vocab} exceed N={num_tokens}, "
                       f"V={num_classes}")
    if max(self.resolved_features(in_features)) > in_features:
      raise ValueError(f"feature blocks {self.resolved_features(in_features)} exceed "
                       f"M={in_features}")

  @classmethod
  def get_default(cls, backend: str, num_tokens: int, num_classes: int,
                  in_features: int) -> "BlockSizes":
    """The backend's default blocks (`DEFAULT_BLOCK_SIZES`), no larger than
    `N`, `V` and `M`; on Triton powers of two. `gshard-pallas` starts from the
    same defaults and also shrinks them to fit the chip's memories."""
    if num_tokens <= 0 or num_classes <= 0:
      raise ValueError(f"the kernels need tokens and classes, got N={num_tokens}, "
                       f"V={num_classes}")
    defaults = dataclasses.astuple(DEFAULT_BLOCK_SIZES[_checked_backend(backend)])
    sizes = (num_tokens, num_classes, in_features, in_features)
    blocks = [min(block or size, size) for block, size in zip(defaults, sizes)]
    if backend == "triton":
      blocks = [1 << (b.bit_length() - 1) if b else 0 for b in blocks]
    return cls(*blocks)


# The blocks each backend starts from (0: the whole dimension). Triton's
# features are always blocked, so no on-chip tile grows with `M`.
DEFAULT_BLOCK_SIZES = {"interpret": BlockSizes(128, 512), "triton": BlockSizes(64, 64, 64, 512),
                       "mosaic_tpu": BlockSizes(128, 512)}


def _checked_backend(backend: str) -> str:
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
  return backend


@dataclasses.dataclass(frozen=True)
class KernelConfig:
  """Everything static about one kernel instance (hashable: a cache key).

  `logit_scale` is the op's (`options.scale_for(M)`); `backend` picks how
  `pallas_call` lowers ("interpret", "triton" or "mosaic_tpu"); `num_warps`
  is Triton's, `vmem_limit_bytes` the scoped VMEM Mosaic may use (0: its
  default)."""

  options: SoftmaxOptions
  logit_scale: float
  labels_are_ids: bool
  block_sizes: BlockSizes
  backend: str = "interpret"
  num_warps: int = 4
  vmem_limit_bytes: int = 0

  def __post_init__(self):
    _checked_backend(self.backend)
    if not isinstance(self.block_sizes, BlockSizes):
      raise TypeError(f"block_sizes must be a BlockSizes, got {self.block_sizes!r}")
    if self.options.scales_logits and self.logit_scale != self.options.logit_scale:
      raise ValueError(f"logit_scale = {self.logit_scale!r} disagrees with the options' "
                       f"{self.options.logit_scale!r}, which scales the logits")

  def spec(self, num_classes: int) -> Spec:
    """The op's `online_softmax.Spec` for `V = num_classes`."""
    return Spec(self.options, self.logit_scale, num_classes, self.labels_are_ids)

  def features(self, in_features: int) -> tuple[int, int]:
    """`(features, grad_features)` for `M = in_features`, 0 resolved to `M`."""
    return self.block_sizes.resolved_features(in_features)

  def whole_rows(self, in_features: int) -> bool:
    """True when one feature block covers the logits and the gradients'
    columns: then a block of rows is read once for both."""
    return self.features(in_features) == (in_features, in_features)
