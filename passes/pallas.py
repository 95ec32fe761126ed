"""`gshard-pallas`: composites -> calls of Pallas kernels lowered by JAX for a platform.

For each composite whose shapes suit the platform, the pass lowers
`gshard_op.kernels.forward` (or `.grad`) for the composite's operand types
with `jax.export` (`platform=cuda`: Triton, `custom_call @__gpu$xla.gpu.triton`;
`tpu`: Mosaic, `custom_call @tpu_custom_call`; `interpret`: the kernels in
Pallas's interpreter, plain StableHLO for the default backend), parses that
module into the target's context, copies its functions in as private functions
under a name unique to the kernel instance, and replaces the composite by a
`func.call` of the copied `@main`. A kernel is lowered once per (operand
types, options, platform, blocks) and spliced once per module: two composites
of the same signature call one function.

Blocks (`kernels.BlockSizes`: tokens, classes, the logits' feature block,
the gradients' column block) come from the options or the kernels' defaults
for the platform's backend (`kernels.DEFAULT_BLOCK_SIZES`) and shrink
until the estimate of what one program keeps on chip (`on_chip_bytes`) fits
the platform's memories (`on_chip_budget`: `ON_CHIP_BYTES` on a GPU, the
chip's `TPU_CHIPS` entry on a TPU). On a GPU the feature dimension is
always blocked, so any `in_features` from 16 up (Gemma's 2304, 3072, 5120,
...) fits shared memory and registers; on a TPU whole rows fit VMEM up to
`M = 8192` and beyond.

Composites that do not suit (see `PallasPass.unsuitable`) stay as they are, for
the passes after this one (the default pipeline's fuse and chunk passes). So do
all composites of a module XLA will partition (`mhlo.num_partitions > 1`): a
kernel's custom call is opaque to the SPMD partitioner, which would replicate
its operands on every device; the vocab-sharded pass runs before this one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging

import jax
import jax.numpy as jnp
from jaxlib.mlir import ir

from gshard_op import kernels
from gshard_op.ir.splice import spec_of
from gshard_op.kernels import BlockSizes
from gshard_op.passes import composites
from gshard_op.passes.errors import RewriteError
from gshard_op.passes.rewrite import CompositeRewrite, replace_by_call

log = logging.getLogger("gshard.passes")

# pass option -> (pallas backend, jax.export platform; None: the default backend's)
PLATFORMS = {"interpret": ("interpret", None), "cuda": ("triton", "cuda"),
             "tpu": ("mosaic_tpu", "tpu")}
# Triton: every array a power of two and dots at least 16 wide.
TRITON_MIN_BLOCK = 16
TRITON_STAGES = 2  # the kernels' `num_stages`: loads in a loop are buffered twice
# Mosaic TPU: blocks in (8, 128) tiles (tokens, classes; features in lanes of
# 128) unless a block is the whole dimension.
TPU_TILE = (8, 128)
# What one program may keep on chip (see `on_chip_bytes`); blocks the options
# leave free shrink until they fit.
#   cuda "shared": shared memory of one SM. H100 and H200 have 228 KiB (227 KiB
#     for one block); 160 KiB leaves Triton room for its own scratch (layout
#     conversions, reductions) and errs on the safe side of the estimate.
#   cuda "registers": the float32 tiles in registers; with 8 warps, 128 of the
#     255 registers each thread may have (half of an SM's 256 KiB file).
# On a TPU, VMEM: the scoped VMEM the kernels ask Mosaic for, per chip (`TPU_CHIPS`).
ON_CHIP_BYTES = {"cuda": {"shared": 160 * 2**10, "registers": 128 * 2**10}}


@dataclasses.dataclass(frozen=True)
class TpuChip:
  """A TPU generation as the kernels see it: the scoped VMEM they ask Mosaic
  for (`vmem_limit_bytes`, also what their blocks are sized to fit), and the
  `device_kind`s JAX reports for it."""

  vmem_limit_bytes: int
  device_kinds: tuple[str, ...] = ()


# Half of each generation's VMEM per TensorCore (Google's published figures),
# leaving Mosaic the rest for its own buffers; never below the 16 MiB every
# generation grants by default. "" is any TPU: 16 MiB, which v4, v5e and v5p
# scope by default and v6e and v7x exceed.
TPU_CHIPS = {
    "": TpuChip(16 * 2**20),
    "v4": TpuChip(16 * 2**20, ("TPU v4",)),                     # 32 MiB VMEM
    "v5e": TpuChip(64 * 2**20, ("TPU v5 lite", "TPU v5e")),      # 128 MiB
    "v5p": TpuChip(48 * 2**20, ("TPU v5", "TPU v5p")),           # 95 MiB
    "v6e": TpuChip(64 * 2**20, ("TPU v6 lite", "TPU v6e")),      # 128 MiB
    "v7x": TpuChip(32 * 2**20, ("TPU7x", "TPU v7x")),            # 64 MiB per core
}


def tpu_chip_of(device_kind: str) -> str:
  """The `TPU_CHIPS` name of a JAX `device_kind` ("TPU v5 lite" -> "v5e"); ""
  (any TPU) for a kind not listed."""
  return next((name for name, chip in TPU_CHIPS.items() if device_kind in chip.device_kinds), "")


# 32 threads x 128 four-byte registers: the register tiles one warp holds.
TRITON_REGISTERS_PER_WARP = 16 * 2**10
# On cuda the gradients' column block shrinks to this before the token and
# class blocks do: each column block recomputes the logits once more.
GRAD_FEATURES_FLOOR = 256


def _is_power_of_two(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


def _floor_power_of_two(n: int) -> int:
  return 1 << (n.bit_length() - 1)


def _itemsize(value: ir.Value) -> int:
  return jnp.dtype(spec_of(value).dtype).itemsize


def on_chip_bytes(platform: str, site: composites.SoftmaxComposite, blocks: BlockSizes) -> dict:
  """An estimate of what one program of the kernels keeps on chip, by the
  memory it is checked against (`on_chip_budget`).

  cuda, shared memory: the dot operands, `TRITON_STAGES` times over: the
  `[T, K]` and `[C, K]` blocks of the logits' feature loop, the `[C, F]` or
  `[T, F]` block of the gradient's columns; and the cotangent block `[T, C]`.
  cuda, registers: three float32 `[T, C]` tiles (logits before and after
  cap/clip, their cotangent) and the float32 gradient accumulator, `[T, F]` or
  `[C, F]`. Neither grows with `M` once `K` and `F` are fixed.
  tpu, VMEM (the largest of the three kernels, checked against Mosaic by
  compiling with `vmem_limit_bytes` set to it, tests/aot): the copy buffers of
  the operand blocks (also the `F`-wide ones when the features are blocked)
  and, as large again, the values loaded and scaled from them; the gradient's
  float32 accumulator three times (the loop's carry in and out, and the
  matmul's result added to it); six float32 `[T, C]` tiles (logits before and
  after cap and clip, exponentials, cotangent, masks); a probability block
  and its copy."""
  t, c, k, f = dataclasses.astuple(blocks)
  m, itemsize = site.in_features, _itemsize(site.args.embedding)
  if platform == "cuda":
    return {"shared": (TRITON_STAGES * ((t + c) * k + max(t, c) * f) + t * c) * itemsize,
            "registers": 4 * (3 * t * c + max(t, c) * f)}
  labels = 0 if site.labels_are_ids else 2 * t * c * _itemsize(site.args.labels)
  buffers = 2 * (t + c) * (k if (k, f) == (m, m) else k + f) * itemsize
  return {"vmem": buffers + 3 * max(t, c) * f * 4 + 6 * t * c * 4 + labels}


def on_chip_budget(platform: str, tpu_chip: str = "") -> dict:
  """What one program may keep on chip (`ON_CHIP_BYTES`, on a TPU its chip's)."""
  if platform == "tpu":
    return {"vmem": TPU_CHIPS[tpu_chip].vmem_limit_bytes}
  return ON_CHIP_BYTES[platform]


def over_budget(platform: str, site: composites.SoftmaxComposite, blocks: BlockSizes,
                tpu_chip: str = "") -> list[str]:
  """The memories (`on_chip_budget`) these blocks would overflow: `[]` when they fit."""
  budget = on_chip_budget(platform, tpu_chip)
  return [name for name, used in on_chip_bytes(platform, site, blocks).items()
          if used > budget[name]]


def triton_num_warps(site: composites.SoftmaxComposite, blocks: BlockSizes) -> int:
  """4 warps, or 8 when the register tiles need more than 4 hold."""
  registers = on_chip_bytes("cuda", site, blocks)["registers"]
  return 4 if registers <= 4 * TRITON_REGISTERS_PER_WARP else 8


@functools.lru_cache(maxsize=64)
def lower_kernel(is_grad: bool, specs: tuple[jax.ShapeDtypeStruct, ...],
                 config: kernels.KernelConfig, platform: str | None) -> str:
  """The StableHLO text of the kernels' `@main` for these operand types."""
  fn = kernels.grad if is_grad else kernels.forward
  jitted = jax.jit(functools.partial(fn, cfg=config))
  exported = jax.export.export(
      jitted, platforms=[platform or jax.export.default_export_platform()],
      disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*specs)
  return exported.mlir_module()


def splice(module: ir.Operation, text: str, name: str) -> str:
  """Copies the functions of module `text` into `module` as private functions,
  `@main` as `@name` and every other `@f` as `@name.f`; returns `name`. Does
  nothing when `module` already has `@name` (the same kernel spliced before)."""
  table = ir.SymbolTable(module)
  if name in table:
    return name
  source = ir.Module.parse(text, context=module.context)
  functions = [op for op in source.body.operations if op.operation.name == "func.func"]
  renames = {}
  for f in functions:
    old = ir.StringAttr(f.attributes["sym_name"]).value
    new = name if old == "main" else f"{name}.{old}"
    suffix = 0
    while (new if not suffix else f"{new}_{suffix}") in table:
      suffix += 1
    renames[old] = new if not suffix else f"{new}_{suffix}"
  for f in functions:
    old = ir.StringAttr(f.attributes["sym_name"]).value
    ir.SymbolTable.replace_all_symbol_uses(old, renames[old], source.operation)
  body = module.regions[0].blocks[0]
  for f in functions:
    f.attributes["sym_name"] = ir.StringAttr.get(renames[ir.StringAttr(f.attributes["sym_name"]).value])
    f.attributes["sym_visibility"] = ir.StringAttr.get("private")
    for attr in ("arg_attrs", "res_attrs"):  # jax's result names and layouts
      if attr in f.attributes:
        del f.attributes[attr]
    f.operation.move_after(list(body.operations)[-1])
  return name


@dataclasses.dataclass
class PallasPass(CompositeRewrite):
  """Options: `platform` (interpret | cuda | tpu); `block-tokens`,
  `block-vocab`, `block-features` (the logits' feature block) and
  `block-grad-features` (the gradients' column block): 0 is the platform's
  default, shrunk to fit the shapes and the chip; `max-grad-column-blocks`
  (0: any): the most column blocks of `in_features` the gradient kernels may
  split into, each of which recomputes the logits (about `2K + 1` logit
  matmuls for `K` blocks, against the fused XLA sweep's 3); `tpu-chip` (with
  platform=tpu: v4, v5e, v5p, v6e, v7x, or empty for any TPU): the generation
  whose VMEM the blocks are sized for and whose scoped limit the kernels ask
  for (`TPU_CHIPS`)."""

  name = "gshard-pallas"
  summary = "Replace gshard composites by calls of Pallas kernels lowered for a platform"

  platform: str = "interpret"
  block_tokens: int = 0
  block_vocab: int = 0
  block_features: int = 0
  block_grad_features: int = 0
  max_grad_column_blocks: int = 0
  tpu_chip: str = ""

  def __post_init__(self):
    if self.platform not in PLATFORMS:
      raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}, got '{self.platform}'")
    if self.tpu_chip not in TPU_CHIPS:
      raise ValueError(f"tpu-chip must be one of {', '.join(c for c in TPU_CHIPS if c)} (or "
                       f"empty: any TPU), got '{self.tpu_chip}'")
    if self.tpu_chip and self.platform != "tpu":
      raise ValueError(f"tpu-chip={self.tpu_chip} needs platform=tpu, got "
                       f"platform={self.platform}")
    options = (("block-tokens", self.block_tokens), ("block-vocab", self.block_vocab),
               ("block-features", self.block_features),
               ("block-grad-features", self.block_grad_features))
    for what, block in options + (("max-grad-column-blocks", self.max_grad_column_blocks),):
      if block < 0:
        raise ValueError(f"{what} must be >= 0")
    if self.platform == "cuda":
      for what, block in options:
        if block and (not _is_power_of_two(block) or block < TRITON_MIN_BLOCK):
          raise ValueError(f"{what} must be 0 or a power of two >= {TRITON_MIN_BLOCK} "
                           f"for platform=cuda, got {block}")

  def blocks(self, site: composites.SoftmaxComposite) -> BlockSizes:
    """The blocks for the site (tokens and classes at least 1: an empty site is
    declined first): the options, else the kernels' defaults for the
    platform's backend (`BlockSizes.get_default`), never larger than `N`, `V`,
    `M` (0: the whole dimension); on cuda powers of two.
    On a GPU or TPU, blocks the options leave free are halved until they fit
    on chip (`over_budget`): on cuda the gradients' columns down to
    `GRAD_FEATURES_FLOOR`, then tokens and classes (the larger first), then the
    columns again, then the logits' feature block; on a TPU classes, then
    tokens while they outnumber the classes, then both feature blocks together."""
    n, m, v = site.num_tokens, site.in_features, site.num_classes
    options = (self.block_tokens, self.block_vocab, self.block_features,
               self.block_grad_features)
    defaults = dataclasses.astuple(BlockSizes.get_default(PLATFORMS[self.platform][0], n, v, m))
    blocks = [min(option, size) if option else default
              for option, default, size in zip(options, defaults, (n, v, m, m))]
    if self.platform == "interpret" or min(blocks) == 0:
      return BlockSizes(*blocks)
    if self.platform == "cuda":
      blocks = [_floor_power_of_two(x) for x in blocks]
    free = [not option for option in options]
    while over_budget(self.platform, site, BlockSizes(*blocks), self.tpu_chip):
      halve = self._next_to_halve(blocks, free)
      if not halve:
        break
      for i in halve:
        blocks[i] //= 2
    return BlockSizes(*blocks)

  def _next_to_halve(self, blocks: list[int], free: list[bool]) -> tuple[int, ...]:
    """Indices into `BlockSizes` to halve next (see `blocks`); () when none can be."""
    t, c, k, f = blocks
    ok = [free[i] and self._halvable(blocks[i], i) for i in range(4)]
    tokens_or_vocab = ((1,) if ok[1] and (c >= t or not ok[0]) else (0,) if ok[0] else ())
    if self.platform == "tpu":
      # Classes, then tokens while they outnumber the classes, then the
      # features: the gradient's [C, F] accumulator shrinks only with C or F,
      # and tokens below the classes leave the MXU's 128 rows idle.
      if ok[1] and c >= t:
        return (1,)
      if ok[0] and t > c:
        return (0,)
      return (2, 3) if ok[2] and ok[3] else tokens_or_vocab
    if ok[3] and f > GRAD_FEATURES_FLOOR:
      return (3,)
    return tokens_or_vocab or ((3,) if ok[3] else (2,) if ok[2] else ())

  def _halvable(self, block: int, index: int) -> bool:
    if self.platform == "cuda":
      return block // 2 >= TRITON_MIN_BLOCK
    return block % (2 * (TPU_TILE[0] if index == 0 else TPU_TILE[1])) == 0

  def unsuitable(self, site: composites.SoftmaxComposite, blocks: BlockSizes) -> str | None:
    """Why the kernels cannot take this composite on this platform (None: they can)."""
    n, m, v = site.num_tokens, site.in_features, site.num_classes
    t, c, k, f = dataclasses.astuple(blocks)
    if n == 0 or v == 0:
      return "empty batch or vocabulary"
    if self.platform == "interpret":
      return None
    if self.platform == "cuda":
      if m < TRITON_MIN_BLOCK:
        return f"in_features {m} below the Triton minimum block of {TRITON_MIN_BLOCK}"
      if min(t, c) < TRITON_MIN_BLOCK:
        return f"N={n} or V={v} below the Triton minimum block of {TRITON_MIN_BLOCK}"
    if self.platform == "tpu":
      if (t % TPU_TILE[0] and t != n) or (c % TPU_TILE[1] and c != v):
        return f"blocks {t} x {c} are not in {TPU_TILE} tiles"
      if (k % TPU_TILE[1] and k != m) or (f % TPU_TILE[1] and f != m):
        return f"feature blocks {k} and {f} of {m} are not in lanes of {TPU_TILE[1]}"
    over = over_budget(self.platform, site, blocks, self.tpu_chip)
    if over:
      used = on_chip_bytes(self.platform, site, blocks)
      budget = on_chip_budget(self.platform, self.tpu_chip)
      return (f"blocks of {t} tokens, {c} classes, {k} features and {f} gradient columns "
              f"(in_features {m}) need more on chip than there is: "
              + ", ".join(f"{used[name]} > {budget[name]} bytes of {name}" for name in over))
    column_blocks = -(-m // f)
    if self.max_grad_column_blocks and column_blocks > self.max_grad_column_blocks:
      return (f"the gradient kernels would split in_features {m} into {column_blocks} column "
              f"blocks of {f}, recomputing the logits for each (about {2 * column_blocks + 1} "
              f"logit matmuls against the fused passes' 3); max-grad-column-blocks="
              f"{self.max_grad_column_blocks}")
    return None

  def rewrite(self, site: composites.SoftmaxComposite, module: ir.Operation) -> bool:
    partitions = (ir.IntegerAttr(module.attributes["mhlo.num_partitions"]).value
                  if "mhlo.num_partitions" in module.attributes else 1)
    if partitions > 1:
      self.decline(site.op, f"the module is partitioned over {partitions} devices")
      return False
    backend, platform = PLATFORMS[self.platform]
    kind = composites.composite_name(site.op)
    if site.num_tokens == 0 or site.num_classes == 0:
      self.decline(site.op, "empty batch or vocabulary")
      return False
    blocks = self.blocks(site)
    reason = self.unsuitable(site, blocks)
    if reason:
      self.decline(site.op, reason)
      return False
    config = kernels.KernelConfig(options=site.options, logit_scale=site.logit_scale,
                                  labels_are_ids=site.labels_are_ids, block_sizes=blocks,
                                  backend=backend,
                                  num_warps=(triton_num_warps(site, blocks)
                                             if self.platform == "cuda" else 4),
                                  vmem_limit_bytes=(TPU_CHIPS[self.tpu_chip].vmem_limit_bytes
                                                    if self.platform == "tpu" else 0))
    specs = tuple(spec_of(x) for x in site.operands)
    try:
      text = lower_kernel(site.is_grad, specs, config, platform)
    except Exception as e:  # a lowering JAX refuses: report it against the op
      raise RewriteError(site.op, f"{self.name}: lowering the kernel for "
                                  f"{self.platform} failed: {type(e).__name__}: {e}") from e
    key = repr((site.is_grad, specs, config, platform)).encode()
    stem = "gshard.pallas_grad" if site.is_grad else "gshard.pallas_forward"
    callee = splice(module, text, f"{stem}_{hashlib.sha256(key).hexdigest()[:12]}")
    log.info("%s: %s -> @%s (%s, blocks %d x %d x %d, gradient columns %d)", self.name, kind,
             callee, self.platform, *dataclasses.astuple(blocks))
    call = replace_by_call(site.op, callee, site.operands)
    call.attributes["gshard.plan"] = ir.StringAttr.get(
        f"{self.name}: platform={self.platform} block_tokens={blocks.tokens} "
        f"block_vocab={blocks.vocab} block_features={blocks.features} "
        f"block_grad_features={blocks.grad_features}"
        + (f" tpu_chip={self.tpu_chip}" if self.tpu_chip else ""))
    return True
