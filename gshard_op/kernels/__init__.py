"""Pallas kernels of the shared embedding softmax, callable from JAX.

    from gshard_op.kernels import BlockSizes, shared_embedding_softmax
    xent, argmax, lse, lse_squared = shared_embedding_softmax(
        x, embedding, ids, block_sizes=BlockSizes(tokens=128, vocab=512),
        backend="interpret")   # "triton" on a GPU, "mosaic_tpu" on a TPU

Three kernels recompute blocks of logits on chip, so that no `[N, V]`
tensor reaches HBM: a forward over token blocks and two gradients (`d_x`
over token blocks, `d_embedding` over vocab blocks). Their math is
`gshard_op/online_softmax.py`'s, the same functions the XLA loops call: the
results are `gshard_op/reference.py`'s, non-finite logits included. The
inputs are scaled by `M**-0.5` in their own dtype (with a `logit_scale`
option, the float32 logits by it instead), matmuls take the operand dtype and
accumulate in float32 at the op's precision, all softmax statistics are
float32.

  config.py   `BlockSizes` (with each backend's defaults) and `KernelConfig`
  memory.py   reading and writing blocks (refs, or VMEM buffers on a TPU),
              `pallas_call` with each backend's parameters
  bodies.py   the kernel bodies
  softmax.py  `forward` and `grad` (what `gshard-pallas` splices into a
              module), and the `custom_vjp` entry `shared_embedding_softmax`

`gshard-pallas` (`passes/pallas.py`) decides only whether the kernels suit a
composite on a platform and which blocks fit the chip's memories.
"""

from gshard_op.kernels.config import BACKENDS, DEFAULT_BLOCK_SIZES, BlockSizes, KernelConfig
from gshard_op.kernels.softmax import forward, grad, shared_embedding_softmax

__all__ = ["BACKENDS", "DEFAULT_BLOCK_SIZES", "BlockSizes", "KernelConfig", "forward", "grad",
           "shared_embedding_softmax"]
