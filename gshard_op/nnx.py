"""`GShardSharedEmbeddingSoftmax`: the Flax NNX layer."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from gshard_op import functional
from gshard_op.functional import IMPLEMENTATIONS
from gshard_op.options import for_layer_call, layer_options, option_arguments
from gshard_op.outputs import SoftmaxOutput


class GShardSharedEmbeddingSoftmax(nnx.Module):
  """One `[num_classes, in_features]` embedding used for both the token lookup
  and the output softmax (Praxis's `GShardSharedEmbeddingSoftmax`).

  The weight is `self.embedding`, an `nnx.Param` initialised Gaussian with
  mean 0 and std 1. Label smoothing applies in training only: it is skipped
  when `deterministic` is True (`layer.eval()` sets it, `layer.train()`
  clears it) or when `__call__` is given `deterministic=True`.

  As in `nnx.Embed`: `dtype` is the computation dtype (None: promote the
  inputs' and the embedding's dtypes with `promote_dtype`), `param_dtype` the
  embedding's, and `embedding_metadata` goes to the `nnx.Param`. Sharding
  metadata (`out_sharding`) makes a vocab-sharded model; built inside
  `jax.set_mesh(mesh)` the embedding is placed on the mesh at once (Flax's
  eager sharding), `nnx.get_partition_spec(nnx.state(layer))` gives the specs
  for `nnx.jit`'s shardings, and `gshard_op.jit`'s `gshard-shard-vocab` keeps
  the softmax per shard. Either of::

    GShardSharedEmbeddingSoftmax(512, 32000, rngs=rngs,
                                 embedding_metadata={"out_sharding": ("vocab", None)})
    GShardSharedEmbeddingSoftmax(512, 32000, rngs=rngs, embedding_init=nnx.with_partitioning(
        nnx.initializers.normal(1.0), ("vocab", None)))

  Example::

    layer = GShardSharedEmbeddingSoftmax(512, 32000, rngs=nnx.Rngs(0))
    x = layer.emb_lookup(ids)                 # [B, T, 512]
    out = layer(x, weights, class_ids=ids[..., None])
    out.avg_xent, out["per_example_xent"]
  """

  def __init__(self, in_features: int, num_classes: int, *,
               soft_cap_logits: float = 0.0, logits_abs_max: float = 0.0,
               z_loss_weight: float = 0.0, label_smoothing_prob: float = 0.0,
               use_tgt_labels_size_as_loss_denominator: bool = True,
               precision: str | None = None, temperature: float = 1.0,
               with_entropy: bool = False, logit_scale: float | None = None,
               dtype=None, param_dtype=jnp.float32,
               embedding_init=nnx.initializers.normal(stddev=1.0),
               promote_dtype=dtypes.promote_dtype,
               embedding_metadata: Mapping[str, Any] = MappingProxyType({}),
               deterministic: bool = False, implementation: str = "composite",
               rngs: nnx.Rngs):
    if implementation not in IMPLEMENTATIONS:
      raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    # Checks the sizes and options now rather than at the first call.
    self.options = layer_options(in_features, num_classes, **option_arguments(locals()))
    self.in_features = in_features
    self.num_classes = num_classes
    self.dtype = dtype
    self.deterministic = deterministic
    self.implementation = implementation
    self.promote_dtype = promote_dtype
    self.embedding = nnx.Param(
        embedding_init(rngs.params(), (num_classes, in_features), param_dtype),
        **embedding_metadata)

  def emb_lookup(self, ids: jax.Array) -> jax.Array:
    """The rows `embedding[ids]`: `[...]` ids give `[..., in_features]`.

    Like Praxis's one-hot matmul, an id outside `[0, num_classes)` gives a row
    of zeros (it does not wrap around).
    """
    (embedding,) = self.promote_dtype((self.embedding[...],), dtype=self.dtype)
    return functional.emb_lookup(embedding, ids)

  def get_logits(self, inputs: jax.Array) -> jax.Array:
    """`[..., in_features]` to `[..., num_classes]` logits, capped and clipped."""
    inputs, embedding = self.promote_dtype((inputs, self.embedding[...]), dtype=self.dtype)
    return functional.get_logits(inputs, embedding, self.options)

  def __call__(self, inputs: jax.Array, class_weights: jax.Array,
               class_ids: jax.Array | None = None,
               class_probabilities: jax.Array | None = None, *,
               deterministic: bool | None = None) -> SoftmaxOutput:
    """Logits, cross-entropy and z-loss; see `gshard_op.shared_embedding_softmax`."""
    deterministic = self.deterministic if deterministic is None else deterministic
    inputs, embedding = self.promote_dtype((inputs, self.embedding[...]), dtype=self.dtype)
    return functional.shared_embedding_softmax(
        inputs, embedding, class_weights, class_ids, class_probabilities,
        options=for_layer_call(self.options, training=not deterministic),
        implementation=self.implementation)
