"""A pass plugin that does not import: loading it must fail with the reason."""

from gshard_op.passes.framework import ModulePass, register
import gshard_op.no_such_module  # noqa: F401


@register
class Unreachable(ModulePass):
  name = "test-unreachable"
  summary = "Never registered"

  def run(self, module):
    pass
