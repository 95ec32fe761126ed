"""`gshard-inline`: each gshard composite becomes a call of its decomposition.

The fallback: the module then computes exactly the dense reference, with no
composite left for anyone to rewrite. Useful to test the other passes against.
"""

from __future__ import annotations

import dataclasses

from jaxlib.mlir import ir

from gshard_op.passes import composites
from gshard_op.passes.rewrite import CompositeRewrite, replace_by_call


@dataclasses.dataclass
class InlinePass(CompositeRewrite):
  name = "gshard-inline"
  summary = "Replace gshard composites by calls to their decomposition"
  erases_dead_functions = False  # the decompositions are called now

  def rewrite(self, site: composites.SoftmaxComposite, module: ir.Operation) -> bool:
    replace_by_call(site.op, site.decomposition, site.operands)
    return True
