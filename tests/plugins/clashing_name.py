"""A pass plugin that registers a name a built-in pass already has: loading it
must fail (and leave its other pass unregistered)."""

from gshard_op.passes.framework import ModulePass, register


@register
class Fine(ModulePass):
  name = "test-clash-first"
  summary = "Registered before the clash, removed again when the plugin fails"

  def run(self, module):
    pass


@register
class Clash(ModulePass):
  name = "gshard-inline"
  summary = "Takes the built-in pass's name"

  def run(self, module):
    pass
