"""The default pipeline of `gshard_op.jit`, and its memory budget.

    gshard-shard-vocab     vocab-sharded composites -> per-shard loops + all-reduces
    gshard-pallas          on a GPU or TPU: composites whose shapes suit -> Pallas kernels
    gshard-fuse-fwd-bwd    a forward+gradient pair -> one sweep over token blocks (3 matmuls)
    gshard-chunk-softmax   whatever is left -> vocab-chunked loops (recompute, 4 matmuls)

Each pass sizes its loop bodies from the same budget: the bytes of float32
`[tokens, classes]` buffers a loop body may keep live. The fused sweep needs a
`[T, V]` block of at least `fuse.MIN_TOKEN_CHUNK` tokens; below that the
chunked form takes over, whose `[T, C]` chunks fit any budget.
"""

from __future__ import annotations

import jax

# One budget for both routes: the primitives' chunked lowering and these passes.
from gshard_op import budget


# `jax.export` platform -> `gshard-pallas{platform=...}`; other platforms get no kernels.
PALLAS_PLATFORMS = {"cuda": "cuda", "tpu": "tpu"}
MAX_GRAD_COLUMN_BLOCKS = 1


def default_pipeline(memory_budget_mib: float | None = None, platform: str | None = None,
                     device_kind: str | None = None) -> str:
  """Shard, then the Pallas kernels (GPU, TPU), else fuse, else chunk, all within
  the budget; then clean up.

  `platform` is the `jax.export` platform name of the target (default: the
  default backend's; `gshard_op.jit` passes the one the program was lowered
  for), and the budget defaults to that platform's; on the CPU the pipeline
  has no kernels. `device_kind` (a JAX device's, e.g. "TPU v5 lite") picks
  the TPU generation whose VMEM the kernels are sized for."""
  if platform is None:
    platform = jax.export.default_export_platform()
  mib = budget.default_mib(platform) if memory_budget_mib is None else memory_budget_mib
  chip = ""
  if platform == "tpu" and device_kind:
    from gshard_op.passes.pallas import tpu_chip_of  # the kernels' module: only for a TPU
    chip = tpu_chip_of(device_kind)
  # Kernels only where their gradient keeps whole rows: a width they must
  # split into column blocks (Gemma's 2304 on a GPU) recomputes the logits per
  # block, ~2K+1 logit matmuls against the fused sweep's 3, so until a device
  # measures otherwise (tools/device_check.py) the fused passes take it here;
  # `gshard-pallas` named by hand takes any width.
  pallas = (f"gshard-pallas{{platform={PALLAS_PLATFORMS[platform]} "
            f"max-grad-column-blocks={MAX_GRAD_COLUMN_BLOCKS}"
            f"{f' tpu-chip={chip}' if chip else ''}}},"
            if platform in PALLAS_PLATFORMS else "")
  return (f"gshard-shard-vocab{{memory-budget-mib={mib}}},"
          f"{pallas}"
          f"gshard-fuse-fwd-bwd{{memory-budget-mib={mib}}},"
          f"gshard-chunk-softmax{{memory-budget-mib={mib}}},"
          "canonicalize,cse")
