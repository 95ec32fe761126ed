"""gshard passes: Python MLIR passes over jaxlib's bindings.

Importing this package registers every pass in `REGISTRY`:

  gshard-inline          composites -> calls of their dense decomposition
  gshard-chunk-softmax   composites -> while loops over vocab (and token) chunks
  gshard-shard-vocab     vocab-sharded composites -> per-shard loops + all-reduces
  gshard-fuse-fwd-bwd    forward + gradient pair -> one loop over token blocks
"""

from passes import framework, inline  # noqa: F401  (registers)
from passes import chunk, fuse, pallas, shard  # noqa: F401  (registers)
from passes.framework import (REGISTRY, ModulePass, PassError, PipelineError,
                              RewriteError, parse_pipeline, run_pipeline)

__all__ = ["REGISTRY", "ModulePass", "PassError", "PipelineError", "RewriteError",
           "parse_pipeline", "run_pipeline"]
