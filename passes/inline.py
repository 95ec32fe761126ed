"""`gshard-inline`: each gshard composite becomes a call of its decomposition.

The fallback: the module then computes exactly the dense reference, with no
composite left for anyone to rewrite. Useful to test the other passes against.
"""

from __future__ import annotations

from jaxlib.mlir import ir
from jaxlib.mlir.dialects import func

from gshard_op.passes import composites
from gshard_op.passes.framework import ModulePass, register


@register
class InlinePass(ModulePass):
  name = "gshard-inline"
  summary = "Replace gshard composites by calls to their decomposition"

  def run(self, module: ir.Operation) -> None:
    for op in composites.find(module):
      site = composites.match(op)
      with op.location, ir.InsertionPoint(op):
        call = func.CallOp([r.type for r in op.results],
                           ir.FlatSymbolRefAttr.get(site.decomposition), list(site.args))
      for old, new in zip(op.results, call.results):
        old.replace_all_uses_with(new)
      op.erase()
