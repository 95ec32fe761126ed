"""gshard-op: the shared embedding softmax as a JAX primitive with MLIR passes.

Public API:
  GShardSharedEmbeddingSoftmax  the Flax NNX layer
  shared_embedding_softmax      its functional form
  SoftmaxOutput, SoftmaxOptions
  lowering                      choose the primitives' lowering route (gshard_op/lowering.py)
  jit                           `jax.jit` that runs the gshard passes before XLA
  nnx_jit                       `nnx.jit` that runs them

Layering (no import cycle): `contract`, `options` are leaves; the math is
JAX code on them (`online_softmax`, and the programs `chunked`, `fused`,
`sharded`); the primitives' lowering rules lower those programs
(`mlir.lower_fun`) and the passes (`passes`) splice what JAX lowers for a
composite (`gshard_op/ir`: splicing, the manual computation); `jit` sits on
top and is loaded on first use, as is the Flax layer.
"""

from importlib import metadata as _metadata

from gshard_op.functional import shared_embedding_softmax
from gshard_op.lowering import lowering
from gshard_op.options import SoftmaxOptions
from gshard_op.outputs import SoftmaxOutput

try:
  __version__ = _metadata.version("gshard-op")
except _metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
  __version__ = "0+unknown"

_LAZY = {
    "GShardSharedEmbeddingSoftmax": ("gshard_op.nnx", "GShardSharedEmbeddingSoftmax"),
    "jit": ("gshard_op.pipelined_jit", "jit"),
    "nnx_jit": ("gshard_op.pipelined_jit", "nnx_jit"),
}


def __getattr__(name):
  # The layer needs flax and `jit` the passes: neither loads until asked for,
  # so that `import gshard_op` stays light and the passes can import the
  # contract without importing `jit` back.
  if name in _LAZY:
    import importlib
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)
  raise AttributeError(f"module 'gshard_op' has no attribute {name!r}")


__all__ = ["GShardSharedEmbeddingSoftmax", "SoftmaxOptions", "SoftmaxOutput",
           "jit", "lowering", "nnx_jit", "shared_embedding_softmax"]
