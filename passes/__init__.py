"""gshard passes: Python MLIR passes over jaxlib's bindings.

`REGISTRY` names every pass; a built-in one is imported the first time a
pipeline (or `REGISTRY[name]`) asks for it (`registry.BUILTIN`):

  gshard-inline          composites -> calls of their dense decomposition
  gshard-chunk-softmax   composites -> while loops over vocab (and token) chunks
  gshard-shard-vocab     vocab-sharded composites -> per-shard loops + all-reduces
  gshard-fuse-fwd-bwd    forward + gradient pair -> one loop over token blocks
  gshard-pallas          composites -> calls of Pallas kernels (interpret, cuda, tpu)

Plugins register more (`framework.load_pass_plugin`, the `gshard_op.passes`
entry-point group).

This folder installs as `gshard_op.passes`; imported from a checkout by its old
top-level name `passes`, it becomes an alias of that package (for one release).
"""

if __name__ == "passes":
  from gshard_op.legacy_passes import install as _install
  _install()
else:
  from gshard_op.passes import framework  # noqa: F401
  from gshard_op.passes.framework import (REGISTRY, ModulePass, PassError, PipelineError,
                                          PluginError, RewriteError, load_pass_plugin,
                                          parse_pipeline, register, run_pipeline)

  __all__ = ["REGISTRY", "ModulePass", "PassError", "PipelineError", "PluginError",
             "RewriteError", "load_pass_plugin", "parse_pipeline", "register", "run_pipeline"]
