"""The default pipeline of `gshard_op.jit`, and its memory budget.

    gshard-shard-vocab     vocab-sharded composites -> per-shard loops + all-reduces
    gshard-fuse-fwd-bwd    a forward+gradient pair -> one sweep over token blocks (3 matmuls)
    gshard-chunk-softmax   whatever is left -> vocab-chunked loops (recompute, 4 matmuls)

Each pass sizes its loop bodies from the same budget: the bytes of float32
`[tokens, classes]` buffers a loop body may keep live. The fused sweep needs a
`[T, V]` block of at least `fuse.MIN_TOKEN_CHUNK` tokens; below that the
chunked form takes over, whose `[T, C]` chunks fit any budget.
"""

from __future__ import annotations

# One budget for both routes: the primitives' chunked lowering and these passes.
from gshard_op.lowering import CPU_MEMORY_BUDGET_MIB, default_memory_budget_mib  # noqa: F401


def default_pipeline(memory_budget_mib: float | None = None) -> str:
  """Shard, else fuse, else chunk, all within the budget; then clean up."""
  budget = default_memory_budget_mib() if memory_budget_mib is None else memory_budget_mib
  return (f"gshard-shard-vocab{{memory-budget-mib={budget}}},"
          f"gshard-fuse-fwd-bwd{{memory-budget-mib={budget}}},"
          f"gshard-chunk-softmax{{memory-budget-mib={budget}}},"
          "canonicalize,cse")
