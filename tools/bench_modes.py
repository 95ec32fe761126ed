"""tools/bench.py's modes and shapes: what is measured.

The `gshard_op.jit` pipelines the benchmark times (`MODES`, one line each), the
error accepted against dense per dtype, and each backend's default shapes.
"""

from __future__ import annotations

import dataclasses

from gshard_op.passes.pipelines import default_pipeline

CLEANUP = "canonicalize,cse"
FUSE = "gshard-fuse-fwd-bwd"
CHUNK = "gshard-chunk-softmax"


@dataclasses.dataclass(frozen=True)
class Mode:
  """One `gshard_op.jit` configuration.

  matmuls: `[N, M] x [M, V]`-sized matmuls the step performs (for TFLOP/s);
    None: read it off the rewritten IR's `gshard.plan` tags (4 when the
    gradient recomputes the logits, 3 when fused or dense).
  tol: the largest relative error accepted against dense (None: per dtype).
  entropy: the loss adds the mean `per_example_entropy` (`with_entropy=True`),
    checked against dense XLA's same loss; its temp against the mode without.
  """
  name: str
  pipeline: str
  matmuls: int | None = None
  tol: float | None = None
  entropy: bool = False


# --- the modes: one line each --------------------------------------------------
# gshard-chunk-softmax after the fuse pass rewrites whatever it left alone.
MODES = [
    Mode("speed", default_pipeline()),                          # what gshard_op.jit runs
    Mode("memory", f"{CHUNK}{{memory-budget-mib=4}},{CLEANUP}"),  # recompute, small chunks
    Mode("fused", f"{FUSE},{CHUNK},{CLEANUP}"),  # the fuse pass's own defaults
    Mode("fused-bf16acc", f"{FUSE}{{accumulate-bf16=true}},{CHUNK},{CLEANUP}", tol=5e-2),
    Mode("fused-4mib", f"{FUSE}{{memory-budget-mib=4}},{CHUNK},{CLEANUP}"),
    # The default pipeline on `avg_xent + mean(per_example_entropy)` (issue 23):
    # its temp against speed's is what asking for the entropy costs.
    Mode("speed+entropy", default_pipeline(), entropy=True),
]
# gshard-shard-vocab only acts on an embedding sharded over a mesh of several
# devices; on one device the default pipeline (speed) runs it as a no-op.

# Relative error accepted against dense, per input dtype.
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}

DEFAULT_SHAPES = {
    # 3 rounds keep the CPU default near 5 minutes on 2 cores (7 candidates x 2 shapes).
    "cpu": ("2048x512x32768,4096x256x32768", "float32", 3),
    "gpu": ("8192x2304x256000,8192x4096x128256", "bfloat16", 10),
}
QUICK = ("256x64x3000", 1)  # V not a power of two: partial last chunks
TORCH_SHAPES = "2048x512x32768"  # --torch's default, in the input dtype's default (float32 on CPU)
