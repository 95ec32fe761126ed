"""What the pass framework raises: a bad pipeline, a refused rewrite, a failed
pass, a plugin that does not load."""

from __future__ import annotations

from jaxlib.mlir import ir


class PipelineError(ValueError):
  """A pipeline that does not parse: unknown pass or option, bad value."""


class RewriteError(Exception):
  """Raised by a pass about one operation it cannot (or must not) rewrite."""

  def __init__(self, op: ir.Operation | ir.OpView, message: str):
    super().__init__(message)
    self.op = op.operation if isinstance(op, ir.OpView) else op


class PassError(RuntimeError):
  """A pass failed; the message names the pass and shows the offending op.

  Its `__cause__` is the original exception: a bug in a pass keeps its traceback.
  """


class PluginError(Exception):
  """A pass plugin that cannot be loaded: it does not import, registers no
  pass, or registers a name that is already taken."""
