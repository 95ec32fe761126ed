"""`gshard-chunk-softmax`: composites -> loops over vocab (and token) chunks.

Each composite becomes the loops of `gshard_op/chunked.py` (`forward` /
`grad`: an online softmax over vocab chunks, token blocks when the budget
says so), sized by `ChunkingOptions.plan`, as JAX lowers them for the
composite's operand types; the plan is recorded as a `gshard.plan` attribute
on the loops. The primitives' chunked lowering emits the same programs at the
point JAX lowers them.
"""

from __future__ import annotations

import dataclasses
import logging

from jaxlib.mlir import ir

from gshard_op import chunked
from gshard_op.passes import composites
from gshard_op.passes.chunking import ChunkingOptions
from gshard_op.passes.rewrite import CompositeRewrite, replace_with_program

__all__ = ["ChunkSoftmaxPass"]

log = logging.getLogger("gshard.passes")


@dataclasses.dataclass
class ChunkSoftmaxPass(ChunkingOptions, CompositeRewrite):
  """Options: see `ChunkingOptions`."""

  name = "gshard-chunk-softmax"
  summary = "Rewrite gshard composites into while loops over vocab/token chunks (online softmax)"

  def rewrite(self, site: composites.SoftmaxComposite, module: ir.Operation) -> bool:
    plan = self.plan(site.num_tokens, site.num_classes)
    log.info("%s: %s %s", self.name, composites.composite_name(site.op), plan.attribute())
    program = chunked.grad if site.is_grad else chunked.forward
    replace_with_program(site.op, program, (site.spec, plan),
                         plan=f"{self.name}: {plan.attribute()}")
    return True
