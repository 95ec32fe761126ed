"""Passes that misbehave on purpose, for the tests of `gshard-opt`'s debugging
flags (`--no-verify-each`, `--show-traceback`, `--mlir-print-ir-after-failure`)."""

from __future__ import annotations

from jaxlib.mlir import ir

from gshard_op.passes.framework import ModulePass, register, walk


@register
class BreakDominance(ModulePass):
  """Moves the producer of each `stablehlo.sine`'s operand after the sine."""

  name = "test-break-dominance"
  summary = "Leave IR that does not verify (a use before its definition)"

  def run(self, module: ir.Operation) -> None:
    for sine in walk(module, lambda op: op.operation.name == "stablehlo.sine"):
      sine.operands[0].owner.move_after(sine)


def _divide(numerator: int, denominator: int) -> float:
  return numerator / denominator


@register
class Crash(ModulePass):
  """A bug: divides by zero two frames below `run`."""

  name = "test-crash"
  summary = "Raise ZeroDivisionError from a helper (a pass's own bug)"

  def run(self, module: ir.Operation) -> None:
    _divide(1, 0)
