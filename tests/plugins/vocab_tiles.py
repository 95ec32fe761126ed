"""`example-vocab-tiles`: the worked example of `docs/writing-a-pass.md`.

Rewrites each forward composite (`gshard.shared_embedding_softmax`) into one
loop over `tiles` vocabulary tiles of equal size, with the online softmax of
`gshard-chunk-softmax`; the gradient composite is left as it is (XLA inlines
its dense decomposition). Load it without installing anything:

  gshard-opt step.mlir --load-pass-plugin=tests/plugins/vocab_tiles.py \
      --pass-pipeline='example-vocab-tiles{tiles=4}'
"""

from __future__ import annotations

import math

from jaxlib.mlir import ir

from gshard_op import contract
from gshard_op.passes import composites
from gshard_op.passes.framework import ModulePass, RewriteError, register
from gshard_op.ir.loops import ChunkPlan, emit_forward, replace
from gshard_op.ir.softmax import Softmax


@register
class VocabTilesPass(ModulePass):
  """Options are the dataclass fields: `tiles` is `{tiles=N}` in a pipeline."""

  name = "example-vocab-tiles"
  summary = "Rewrite forward gshard composites into a loop over equal vocab tiles"

  tiles: int = 4

  def __post_init__(self):
    if self.tiles < 1:
      raise ValueError(f"tiles must be at least 1, got {self.tiles}")

  def run(self, module: ir.Operation) -> None:
    rewritten = False
    for op in composites.find(module, names=(contract.FORWARD,)):
      site = composites.match(op)  # a RewriteError unless the op keeps the contract
      if self.tiles > site.num_classes:
        raise RewriteError(op, f"{self.tiles} tiles for {site.num_classes} classes")
      operand = dict(zip(contract.FORWARD_OPERANDS, site.operands))
      # The last tile starts at V - C when `tiles` does not divide V, and masks
      # the classes the tile before it already covered.
      plan = ChunkPlan(token_chunk=site.num_tokens,
                       vocab_chunk=math.ceil(site.num_classes / self.tiles))
      with op.location, ir.InsertionPoint(op):
        results = emit_forward(Softmax.of(site), plan, operand["x"],
                               operand["embedding"], operand["labels"])
      replace(op, results)  # results in the order of contract.FORWARD_RESULTS; erases op
      rewritten = True
    if rewritten:
      composites.erase_dead_functions(module)  # the decomposition nobody calls now
