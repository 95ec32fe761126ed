"""The pass framework, one name for what its modules hold.

A pass is a dataclass subclass of `ModulePass` whose class attribute `name` is
its pipeline name and whose fields are its options; `run(module_op)` rewrites
the `builtin.module` in place (`CompositeRewrite` in `rewrite.py` is the base of
the passes that rewrite the gshard composites one at a time). `@register` adds
it to `REGISTRY`, which serves the Python API, `gshard_op.jit` and
`gshard-opt` alike.

  errors.py           PipelineError, RewriteError, PassError, PluginError
  module_pass.py      ModulePass, its `decline`, `reporting_declines`, `walk`
  options.py          options from pipeline text (`typing.get_type_hints`), `options_help`
  registry.py         REGISTRY (built-in passes imported lazily), `register`
  pipeline.py         parse_pipeline, run_pipeline, make_context, check_pass_name
  pipeline_syntax.py  MLIR's textual pipeline syntax (nested `anchor(...)`) read into a tree
  instrumentation.py  Instrumentation, PassTiming: mlir-opt's debugging flags
  plugins.py          load_pass_plugin, entry points, isolated_registry

Plugins and tests import from here (`from gshard_op.passes.framework import
ModulePass, register, walk`).
"""

from __future__ import annotations

from gshard_op.passes.errors import PassError, PipelineError, PluginError, RewriteError
from gshard_op.passes.instrumentation import Instrumentation, PassTiming
from gshard_op.passes.module_pass import ModulePass, reporting_declines, walk
from gshard_op.passes.options import options_help
from gshard_op.passes.pipeline import (check_pass_name, make_context, make_pass,
                                       parse_pipeline, run_pipeline)
from gshard_op.passes.plugins import (ENTRY_POINT_GROUP, PLUGINS, SOURCE_TREE, SOURCES,
                                      find_pass_plugin, isolated_registry,
                                      load_entry_point_plugins, load_pass_plugin)
from gshard_op.passes.registry import REGISTRY, register

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS", "REGISTRY", "SOURCES", "SOURCE_TREE",
           "Instrumentation", "ModulePass", "PassError", "PassTiming", "PipelineError",
           "PluginError", "RewriteError", "check_pass_name", "find_pass_plugin",
           "isolated_registry", "load_entry_point_plugins", "load_pass_plugin",
           "make_context", "make_pass", "options_help", "parse_pipeline", "register",
           "reporting_declines", "run_pipeline", "walk"]
