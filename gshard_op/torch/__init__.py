"""`gshard_op.torch`: the shared embedding softmax for PyTorch.

    import gshard_op.torch as gt
    layer = gt.GShardSharedEmbeddingSoftmax(512, 32768, z_loss_weight=1e-4)
    out = layer(layer.emb_lookup(ids), None, class_ids=labels)   # ignore_index=-100
    (out["avg_xent"] + out["z_loss"]).backward()

    loss = gt.cross_entropy(x, layer.embedding, labels, label_smoothing=0.1)
    loss = gt.linear_cross_entropy(hidden, lm_head.weight, labels)  # F.linear_cross_entropy's

Torch semantics at the edges: `avg_xent` (and `z_loss`) divide by the weight
of the tokens that are not ignored, as `F.cross_entropy`'s mean does, so a
batch whose labels are all `ignore_index` gives NaN with zero gradients, as
torch does (`use_tgt_labels_size_as_loss_denominator=True` restores Praxis's
count of all tokens). `cross_entropy` takes `F.cross_entropy`'s arguments
(`weight`, `reduction`, `ignore_index`, `label_smoothing`) and equals it on
the scaled logits; `linear_cross_entropy` is `F.linear_cross_entropy`, its
arguments and its unscaled logits. Second derivatives are refused with an
error that says what to use instead, as torch's own chunked
`F.linear_cross_entropy` refuses them.

The compute is JAX's: the op's body hands the torch tensors to JAX with DLPack
(zero-copy for contiguous tensors whose data is aligned as XLA wants it, as
torch's own allocations are; JAX copies a misaligned view; on CUDA, on the
same device, ordered after the work queued on torch's current stream), runs
`gshard_op.jit` (jax.jit plus the gshard passes, so the `[tokens, classes]`
logits never exist) and hands the results back the same way. Compiled
executables are cached per option set and per shape and dtype.

One module per concern:

* `_allocator`: one GPU, two runtimes. Imported first, before JAX's backend
  starts, it lets JAX allocate GPU memory on demand (`JAX_ALLOCATOR`).
* `_jax_step`: the jitted JAX functions, one per option set, and the string
  the options cross the ops' schemas as.
* `_dlpack`: torch <-> JAX with DLPack, ordered on torch's current stream.
* `_ops`: the two `torch.library.custom_op`s (forward with the fused gradient,
  and the backward) with their fakes and autograd registration.
* `_functional`: `shared_embedding_softmax`, Praxis's fields on torch tensors.
* `_cross_entropy`: `cross_entropy` and `linear_cross_entropy`, torch's
  arguments on the op.
* `_layer`: the `nn.Module`, `GShardSharedEmbeddingSoftmax`.
"""

from gshard_op.torch._allocator import JAX_ALLOCATOR  # first: before JAX's backend starts

from gshard_op.outputs import FIELDS  # noqa: F401  (gt.FIELDS: the order of the returned dict)
from gshard_op.torch._cross_entropy import cross_entropy, linear_cross_entropy
from gshard_op.torch._functional import TORCH_DEFAULTS  # noqa: F401  (the options' defaults here)
from gshard_op.torch._functional import shared_embedding_softmax
from gshard_op.torch._layer import GShardSharedEmbeddingSoftmax

__all__ = ["JAX_ALLOCATOR", "GShardSharedEmbeddingSoftmax", "cross_entropy",
           "linear_cross_entropy", "shared_embedding_softmax"]
