"""The default pipeline that `gshard_op.jit` runs."""

from __future__ import annotations

DEFAULT_MEMORY_BUDGET_MIB = 32.0


def default_pipeline(memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB) -> str:
  """Chunked rewrite of every gshard composite within the budget, then cleanup."""
  return (f"gshard-chunk-softmax{{memory-budget-mib={memory_budget_mib}}},"
          "canonicalize,cse")
