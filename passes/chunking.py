"""The loop-sizing options of the passes that emit chunked loops.

`vocab-chunk` and `token-chunk` (0: from the budget) and `memory-budget-mib`
(the loop body's float32 `[T, C]` buffers; 0: the platform's default of
`gshard_op/budget.py`, the one the primitives' lowering also uses).
"""

from __future__ import annotations

import dataclasses

from gshard_op import budget
from gshard_op.chunked import ChunkPlan, plan_chunks
from gshard_op.passes.framework import ModulePass


@dataclasses.dataclass
class ChunkingOptions(ModulePass):
  """Options as the module docstring says, for `gshard-chunk-softmax` and
  `gshard-shard-vocab` (whose devices each get a share of the budget)."""

  vocab_chunk: int = 0
  token_chunk: int = 0
  memory_budget_mib: float = 0.0

  def __post_init__(self):
    if self.vocab_chunk < 0 or self.token_chunk < 0:
      raise ValueError("vocab-chunk and token-chunk must be >= 0, got "
                       f"{self.vocab_chunk} and {self.token_chunk}")
    budget.check_option(self.memory_budget_mib)

  def plan(self, num_tokens: int, num_classes: int, budget_share: float = 1.0) -> ChunkPlan:
    return plan_chunks(num_tokens, num_classes, vocab_chunk=self.vocab_chunk,
                       token_chunk=self.token_chunk,
                       memory_budget_mib=budget.resolve(self.memory_budget_mib) * budget_share)
