"""gshard passes: Python MLIR passes over jaxlib's bindings.

Importing this package registers every pass in `REGISTRY`:

  gshard-inline          composites -> calls of their dense decomposition
  gshard-chunk-softmax   composites -> while loops over vocab (and token) chunks
  gshard-shard-vocab     vocab-sharded composites -> per-shard loops + all-reduces
  gshard-fuse-fwd-bwd    forward + gradient pair -> one loop over token blocks
  gshard-pallas          composites -> calls of Pallas kernels (interpret, cuda, tpu)

Plugins register more (`framework.load_pass_plugin`, the `gshard_op.passes`
entry-point group).
"""

from passes import framework, inline  # noqa: F401  (registers)
from passes import chunk, fuse, pallas, shard  # noqa: F401  (registers)
from passes.framework import (REGISTRY, ModulePass, PassError, PipelineError, PluginError,
                              RewriteError, load_pass_plugin, parse_pipeline, register,
                              run_pipeline)

__all__ = ["REGISTRY", "ModulePass", "PassError", "PipelineError", "PluginError",
           "RewriteError", "load_pass_plugin", "parse_pipeline", "register", "run_pipeline"]
