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
from gshard_op.passes.framework import RewriteError, register
from gshard_op.chunked import ChunkPlan, forward
from gshard_op.passes.rewrite import CompositeRewrite, replace_with_program


@register
class VocabTilesPass(CompositeRewrite):
  """Options are the dataclass fields: `tiles` is `{tiles=N}` in a pipeline."""

  name = "example-vocab-tiles"
  summary = "Rewrite forward gshard composites into a loop over equal vocab tiles"
  names = (contract.FORWARD,)  # the composites `rewrite` gets, each matched first

  tiles: int = 4

  def __post_init__(self):
    if self.tiles < 1:
      raise ValueError(f"tiles must be at least 1, got {self.tiles}")

  def rewrite(self, site: composites.SoftmaxComposite, module: ir.Operation) -> bool:
    if self.tiles > site.num_classes:
      raise RewriteError(site.op, f"{self.tiles} tiles for {site.num_classes} classes")
    # The last tile starts at V - C when `tiles` does not divide V, and masks
    # the classes the tile before it already covered.
    plan = ChunkPlan(token_chunk=site.num_tokens,
                     vocab_chunk=math.ceil(site.num_classes / self.tiles))
    # The chunked forward, as JAX lowers it for the composite's operands.
    replace_with_program(site.op, forward, (site.spec, plan))
    return True  # rewritten: `run` erases the decomposition nobody calls now
