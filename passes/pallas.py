"""`gshard-pallas`: composites -> calls of Pallas kernels lowered by JAX for a platform.

For each composite whose shapes suit the platform, the pass lowers
`passes/pallas_kernels.forward` (or `.grad`) for the composite's operand types
with `jax.export` (`platform=cuda`: Triton, `custom_call @__gpu$xla.gpu.triton`;
`tpu`: Mosaic, `custom_call @tpu_custom_call`; `interpret`: the kernels in
Pallas's interpreter, plain StableHLO for the default backend), parses that
module into the target's context, copies its functions in as private functions
under a name unique to the kernel instance, and replaces the composite by a
`func.call` of the copied `@main`. A kernel is lowered once per (operand
types, options, platform, blocks) and spliced once per module: two composites
of the same signature call one function.

Composites that do not suit (see `PallasPass.unsuitable`) stay as they are, for
the passes after this one (the default pipeline's fuse and chunk passes). So do
all composites of a module XLA will partition (`mhlo.num_partitions > 1`): a
kernel's custom call is opaque to the SPMD partitioner, which would replicate
its operands on every device; the vocab-sharded pass runs before this one.
"""

from __future__ import annotations

import functools
import hashlib
import logging

import jax
import jax.numpy as jnp
from jaxlib.mlir import ir
from jaxlib.mlir.dialects import func

from gshard_op.passes import builders as b
from gshard_op.passes import composites
from gshard_op.passes import pallas_kernels as kernels
from gshard_op.passes.framework import ModulePass, RewriteError, register

log = logging.getLogger("gshard.passes")

# pass option -> (pallas backend, jax.export platform; None: the default backend's)
PLATFORMS = {"interpret": ("interpret", None), "cuda": ("triton", "cuda"),
             "tpu": ("mosaic_tpu", "tpu")}
# Triton: every array a power of two and dots at least 16 wide.
TRITON_MIN_BLOCK = 16
# Mosaic TPU: blocks in (8, 128) tiles (tokens, classes) unless a block is the
# whole dimension.
TPU_TILE = (8, 128)
# What one program may keep on chip (see `on_chip_bytes`): blocks are halved
# until they fit. Triton: registers and shared memory of one SM; Mosaic: the
# default scoped VMEM limit.
ON_CHIP_BYTES = {"cuda": 192 * 2**10, "tpu": 16 * 2**20}
DEFAULT_BLOCKS = {"interpret": (128, 512), "cuda": (64, 128), "tpu": (128, 512)}

_DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16, "f64": jnp.float64,
           "i32": jnp.int32}


def _is_power_of_two(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


def _floor_power_of_two(n: int) -> int:
  return 1 << (n.bit_length() - 1)


def _spec(value: ir.Value) -> jax.ShapeDtypeStruct:
  element = str(b.element_of(value))
  if element not in _DTYPES:
    raise ValueError(f"no JAX dtype for {element}")
  return jax.ShapeDtypeStruct(b.shape_of(value), _DTYPES[element])


def _itemsize(value: ir.Value) -> int:
  return jnp.dtype(_spec(value).dtype).itemsize


def on_chip_bytes(platform: str, site: composites.SoftmaxComposite, t: int, c: int) -> int:
  """What one program of the kernels keeps on chip with blocks of `t` tokens and
  `c` classes. Triton: the `[T, M]` and `[C, M]` operand blocks and three
  float32 `[T, C]` temporaries (logits before and after cap/clip, their
  cotangent). Mosaic TPU: also the float32 `[T, M]` or `[C, M]` gradient
  accumulator, the VMEM copy buffers, and a probability block."""
  m, itemsize = site.in_features, _itemsize(site.args.embedding)
  if platform == "cuda":
    return (t + c) * m * itemsize + 3 * t * c * 4
  labels = 0 if site.labels_are_ids else t * c * _itemsize(site.args.labels)
  return (t + c) * m * (itemsize + 4) + 4 * t * c * 4 + labels


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


@register
class PallasPass(ModulePass):
  """Options: `platform` (interpret | cuda | tpu), `block-tokens` and
  `block-vocab` (0: the platform's default, shrunk to fit the shapes)."""

  name = "gshard-pallas"
  summary = "Replace gshard composites by calls of Pallas kernels lowered for a platform"

  platform: str = "interpret"
  block_tokens: int = 0
  block_vocab: int = 0

  def __post_init__(self):
    if self.platform not in PLATFORMS:
      raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}, got '{self.platform}'")
    if self.block_tokens < 0 or self.block_vocab < 0:
      raise ValueError("block-tokens and block-vocab must be >= 0")
    if self.platform == "cuda":
      for what, block in (("block-tokens", self.block_tokens), ("block-vocab", self.block_vocab)):
        if block and (not _is_power_of_two(block) or block < TRITON_MIN_BLOCK):
          raise ValueError(f"{what} must be 0 or a power of two >= {TRITON_MIN_BLOCK} "
                           f"for platform=cuda, got {block}")

  def blocks(self, site: composites.SoftmaxComposite) -> tuple[int, int]:
    """`(T, C)` for the site: the options, else the platform's defaults; never
    larger than `N`, `V`; on cuda powers of two; on a GPU or TPU, blocks the
    options leave free are halved (the larger first) until they fit on chip."""
    n, v = site.num_tokens, site.num_classes
    default_t, default_c = DEFAULT_BLOCKS[self.platform]
    t, c = min(self.block_tokens or default_t, n), min(self.block_vocab or default_c, v)
    if self.platform == "interpret" or min(t, c) == 0:
      return t, c
    if self.platform == "cuda":
      t, c = _floor_power_of_two(t), _floor_power_of_two(c)
    while on_chip_bytes(self.platform, site, t, c) > ON_CHIP_BYTES[self.platform]:
      shrink_c = not self.block_vocab and self._halvable(c, 1)
      shrink_t = not self.block_tokens and self._halvable(t, 0)
      if shrink_c and (c >= t or not shrink_t):
        c //= 2
      elif shrink_t:
        t //= 2
      else:
        break
    return t, c

  def _halvable(self, block: int, dim: int) -> bool:
    if self.platform == "cuda":
      return block // 2 >= TRITON_MIN_BLOCK
    return block % (2 * TPU_TILE[dim]) == 0

  def unsuitable(self, site: composites.SoftmaxComposite, blocks: tuple[int, int]) -> str | None:
    """Why the kernels cannot take this composite on this platform (None: they can)."""
    n, m, v = site.num_tokens, site.in_features, site.num_classes
    t, c = blocks
    if n == 0 or v == 0:
      return "empty batch or vocabulary"
    if self.platform == "interpret":
      return None
    if self.platform == "cuda":
      if not _is_power_of_two(m) or m < TRITON_MIN_BLOCK:
        return f"in_features {m} is not a power of two >= {TRITON_MIN_BLOCK} (Triton)"
      if min(t, c) < TRITON_MIN_BLOCK:
        return f"N={n} or V={v} below the Triton minimum block of {TRITON_MIN_BLOCK}"
    if self.platform == "tpu" and ((t % TPU_TILE[0] and t != n) or (c % TPU_TILE[1] and c != v)):
      return f"blocks {t} x {c} are not in {TPU_TILE} tiles"
    if on_chip_bytes(self.platform, site, t, c) > ON_CHIP_BYTES[self.platform]:
      return (f"blocks of {t} tokens and {c} classes by {m} features take more than "
              f"{ON_CHIP_BYTES[self.platform]} bytes on chip")
    return None

  def run(self, module: ir.Operation) -> None:
    backend, platform = PLATFORMS[self.platform]
    sites = [composites.match(op) for op in composites.find(module)]
    partitions = module.attributes["mhlo.num_partitions"] if "mhlo.num_partitions" in module.attributes else None
    if sites and partitions is not None and ir.IntegerAttr(partitions).value > 1:
      for site in sites:
        self.decline(site.op, f"the module is partitioned over "
                              f"{ir.IntegerAttr(partitions).value} devices")
      return
    rewritten = 0
    for site in sites:
      kind = composites.composite_name(site.op)
      blocks = self.blocks(site)
      reason = self.unsuitable(site, blocks)
      if reason:
        self.decline(site.op, reason)
        continue
      config = kernels.KernelConfig(options=site.options, logit_scale=site.logit_scale,
                                    labels_are_ids=site.labels_are_ids,
                                    block_tokens=blocks[0], block_vocab=blocks[1],
                                    backend=backend)
      specs = tuple(_spec(x) for x in site.operands)
      try:
        text = lower_kernel(site.is_grad, specs, config, platform)
      except Exception as e:  # a lowering JAX refuses: report it against the op
        raise RewriteError(site.op, f"{self.name}: lowering the kernel for "
                                    f"{self.platform} failed: {type(e).__name__}: {e}") from e
      key = repr((site.is_grad, specs, config, platform)).encode()
      stem = "gshard.pallas_grad" if site.is_grad else "gshard.pallas_forward"
      callee = splice(module, text, f"{stem}_{hashlib.sha256(key).hexdigest()[:12]}")
      log.info("%s: %s -> @%s (%s, blocks %d x %d)", self.name, kind, callee, self.platform,
               *blocks)
      with site.op.location, ir.InsertionPoint(site.op):
        call = func.CallOp([r.type for r in site.op.results],
                           ir.FlatSymbolRefAttr.get(callee), site.operands)
        call.operation.attributes["gshard.plan"] = ir.StringAttr.get(
            f"{self.name}: platform={self.platform} block_tokens={blocks[0]} "
            f"block_vocab={blocks[1]}")
      for old, new in zip(site.op.results, call.results):
        old.replace_all_uses_with(new)
      site.op.erase()
      rewritten += 1
    if rewritten:
      composites.erase_dead_functions(module)
