"""`ModulePass`, the base of every gshard pass, and how a pass says why it
leaves a composite as it is (`ModulePass.decline`, `reporting_declines`).

A pass is a dataclass subclass of `ModulePass` whose class attribute `name` is
its pipeline name and whose fields are its options; `run(module_op)` rewrites
the `builtin.module` in place.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import ClassVar

from jaxlib.mlir import ir

from gshard_op.passes import options

log = logging.getLogger("gshard.passes")


@dataclasses.dataclass
class ModulePass:
  """Base of every gshard pass; subclasses are dataclasses of their options."""

  name: ClassVar[str] = ""
  summary: ClassVar[str] = ""

  def run(self, module: ir.Operation) -> None:
    raise NotImplementedError

  def decline(self, op: ir.Operation | ir.OpView, why: str, *, action: str = "rewritten",
              left_to: str = "later passes", warn: bool = False) -> str:
    """Says in one line why this pass leaves the composite `op` as it is, and
    returns the line: `<pass>: <composite> at <location> not <action> (<why>);
    left to <left_to>`.

    The line goes where `reporting_declines` sends it (`gshard-opt`: stderr,
    unless `--quiet`); elsewhere to the `gshard.passes` logger at WARNING,
    which Python prints by default, or with `warn` as a `UserWarning` (logged
    at INFO then, so that it shows once).
    """
    line = (f"{self.name}: {composite_name(op) or op.name} at {op.location} not {action} ({why}); "
            f"left to {left_to}")
    sink = _decline_sink.get()
    if sink is not _DEFAULT_SINK:
      if sink is not None:
        sink(line)
    elif warn:
      warnings.warn(line, UserWarning, stacklevel=2)
      log.info("%s", line)
    else:
      log.warning("%s", line)
    return line

  def pipeline_text(self) -> str:
    """The pass as pipeline text, with every option spelled out."""
    return options.pipeline_text(self)


_DEFAULT_SINK = object()  # Python's logging (or warnings), as `ModulePass.decline` says
_decline_sink = contextvars.ContextVar("gshard_decline_sink", default=_DEFAULT_SINK)


@contextlib.contextmanager
def reporting_declines(sink: Callable[[str], None] | None) -> Iterator[None]:
  """Inside the block, each `ModulePass.decline` line goes to `sink(line)`
  instead of Python's logging or warnings; `None` drops the lines (`gshard-opt
  --quiet`)."""
  token = _decline_sink.set(sink)
  try:
    yield
  finally:
    _decline_sink.reset(token)


def composite_name(op: ir.Operation | ir.OpView) -> str | None:
  """`gshard.shared_embedding_softmax` for that composite; None for an op
  that is not a `stablehlo.composite`."""
  op = op.operation if isinstance(op, ir.OpView) else op
  if op.name == "stablehlo.composite" and "name" in op.attributes:
    return ir.StringAttr(op.attributes["name"]).value
  return None


def walk(op: ir.Operation, predicate) -> list[ir.Operation]:
  """Every operation under `op` (pre-order) for which `predicate(op)` holds."""
  found = []

  def visit(o):
    if predicate(o):
      found.append(o.operation if isinstance(o, ir.OpView) else o)
    return ir.WalkResult.ADVANCE

  op.walk(visit)
  return found
