"""gshard-op: the shared embedding softmax as a JAX primitive with MLIR passes.

Public API:
  GShardSharedEmbeddingSoftmax  the Flax NNX layer
  shared_embedding_softmax      its functional form
  SoftmaxOutput, SoftmaxOptions
  jit                           `jax.jit` that runs the gshard passes before XLA
"""

from gshard_op.functional import shared_embedding_softmax
from gshard_op.jit import jit
from gshard_op.options import SoftmaxOptions
from gshard_op.outputs import SoftmaxOutput


def __getattr__(name):
  # The layer needs flax; load it on first use so that the passes (and
  # gshard-opt, which import gshard_op.contract) start without it.
  if name == "GShardSharedEmbeddingSoftmax":
    from gshard_op.layer import GShardSharedEmbeddingSoftmax
    return GShardSharedEmbeddingSoftmax
  raise AttributeError(f"module 'gshard_op' has no attribute {name!r}")


__all__ = ["GShardSharedEmbeddingSoftmax", "SoftmaxOptions", "SoftmaxOutput",
           "jit", "shared_embedding_softmax"]
