"""`CompositeRewrite`: the skeleton of every pass that rewrites the gshard
composites, so that each pass writes only what is its own.

    for site in self.sites(module):         # find + match (RewriteError if malformed)
      self.rewrite(site, module)             # plan, emit, replace; or decline
    erase the decompositions left dead       # once, if anything was rewritten

`rewrite` returns whether it replaced the site; a site it leaves is declined
with `ModulePass.decline` (or skipped silently: nothing to do there).
`replace_with_program` splices a JAX program (`gshard_op/ir/splice.py`) in
front of a composite and swaps its results in; `replace_by_call` makes the
composite a `func.call`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import ClassVar

from jaxlib.mlir import ir
from jaxlib.mlir.dialects import func

from gshard_op.ir.splice import lowered, replace, spec_of, splice, tagging_new_loops
from gshard_op.passes import composites
from gshard_op.passes.module_pass import ModulePass


@dataclasses.dataclass
class CompositeRewrite(ModulePass):
  """A pass over the composites named `names`, one site at a time."""

  names: ClassVar[tuple[str, ...]] = composites.NAMES
  # Whether `run` erases the private functions nobody calls once a site was
  # rewritten (the decompositions); `gshard-inline` calls them instead.
  erases_dead_functions: ClassVar[bool] = True

  def sites(self, module: ir.Operation) -> Sequence:
    """What `rewrite` is called with, in order: every composite named `names`,
    each checked against the contract (`composites.match`) before any is
    rewritten."""
    return [composites.match(op) for op in composites.find(module, self.names)]

  def rewrite(self, site, module: ir.Operation) -> bool:
    """Replaces `site`; returns False when it leaves it as it is."""
    raise NotImplementedError

  def run(self, module: ir.Operation) -> None:
    rewritten = False
    for site in self.sites(module):
      rewritten |= bool(self.rewrite(site, module))
    if rewritten and self.erases_dead_functions:
      composites.erase_dead_functions(module)


def replace_with_program(op: ir.Operation, fn: Callable, static: tuple,
                         operands: Sequence[ir.Value] | None = None, *,
                         plan: str | None = None) -> list[ir.Value]:
  """Splices `partial(fn, *static)` applied to `operands` (default: `op`'s)
  in front of `op`, as JAX lowers it, marks the `stablehlo.while` loops it
  made with `gshard.plan = plan` if given, then replaces `op`'s results by
  the program's leading results and erases `op`. Returns all of them."""
  operands = list(op.operands) if operands is None else list(operands)
  text = lowered(fn, static, tuple(spec_of(v) for v in operands))
  tagging = tagging_new_loops(op.block, plan) if plan is not None else contextlib.nullcontext()
  with tagging:
    results = splice(text, operands, ir.InsertionPoint(op))
  replace(op, results[:len(op.results)])
  return results


def replace_by_call(op: ir.Operation, callee: str, operands: Sequence[ir.Value]) -> ir.Operation:
  """Replaces `op` by a `func.call @callee(operands)` of its result types;
  returns the call."""
  with op.location, ir.InsertionPoint(op):
    call = func.CallOp([r.type for r in op.results], ir.FlatSymbolRefAttr.get(callee),
                       list(operands))
  replace(op, call.results)
  return call.operation
