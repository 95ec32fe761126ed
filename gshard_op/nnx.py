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
from gshard_op.options import (SoftmaxOptions, for_layer_call, layer_options,
                               option_arguments, tied_head_keywords)
from gshard_op.outputs import SoftmaxOutput


class GShardSharedEmbeddingSoftmax(nnx.Module):
  """One `[num_classes, in_features]` embedding used for both the token lookup
  and the output softmax (Praxis's `GShardSharedEmbeddingSoftmax`).

  The weight is `self.embedding`, an `nnx.Param` initialised Gaussian with
  mean 0 and std 1, or one the model has already, shared (`embedding=`, or
  `from_embed(nnx.Embed)`, whose `attend` this layer's `attend` then equals).
  Label smoothing applies in training only: it is skipped when `deterministic`
  is True (`layer.eval()` sets it, `layer.train()` clears it) or when
  `__call__` is given `deterministic=True`.
  The options are keywords, as Praxis's, or one `options=SoftmaxOptions(...)`
  (not both).

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
               options: SoftmaxOptions | None = None,
               dtype=None, param_dtype=jnp.float32,
               embedding_init=nnx.initializers.normal(stddev=1.0),
               promote_dtype=dtypes.promote_dtype,
               embedding_metadata: Mapping[str, Any] = MappingProxyType({}),
               deterministic: bool = False, implementation: str = "composite",
               embedding: nnx.Param | None = None, rngs: nnx.Rngs | None = None):
    if implementation not in IMPLEMENTATIONS:
      raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    # Checks the sizes and options now rather than at the first call.
    self.options = layer_options(in_features, num_classes, options,
                                 **option_arguments(locals()))
    self.in_features = in_features
    self.num_classes = num_classes
    self.dtype = dtype
    self.deterministic = deterministic
    self.implementation = implementation
    self.promote_dtype = promote_dtype
    if embedding is None:
      if rngs is None:
        raise TypeError("GShardSharedEmbeddingSoftmax needs rngs= to initialise its embedding "
                        "(or embedding=, an existing [num_classes, in_features] nnx.Param)")
      embedding = nnx.Param(
          embedding_init(rngs.params(), (num_classes, in_features), param_dtype),
          **embedding_metadata)
    else:
      functional.check_shared_embedding("embedding", embedding, nnx.Param, "an nnx.Param",
                                        num_classes, in_features)
    # A given Param is the same Variable in both modules: NNX's graph keeps
    # one copy of it in `nnx.state`, one gradient and one optimizer state.
    self.embedding = embedding

  @classmethod
  def from_embed(cls, embed: nnx.Embed, *, logit_scale: float | None = 1.0,
                 **kwargs) -> "GShardSharedEmbeddingSoftmax":
    """The layer on an `nnx.Embed`'s own `embedding` Param, shared (tied):
    sizes, `dtype` and `promote_dtype` come from it, so `layer.attend(x)` is
    `embed.attend(x)`. `logit_scale` defaults to 1.0 here, as `attend` has no
    scale (None: Praxis's `in_features ** -0.5`); `kwargs` are the
    constructor's options. Lookups stay `embed(ids)`.

    Example::

      embed = nnx.Embed(32000, 512, rngs=rngs)
      head = GShardSharedEmbeddingSoftmax.from_embed(embed, z_loss_weight=1e-4)
      out = head(hidden, weights, class_ids=targets)   # logits never formed
    """
    if not isinstance(embed, nnx.Embed):
      raise TypeError(f"from_embed takes an nnx.Embed, got {type(embed).__name__}")
    kwargs = {"dtype": embed.dtype, "promote_dtype": embed.promote_dtype, **kwargs}
    return cls(embed.features, embed.num_embeddings, embedding=embed.embedding,
               **tied_head_keywords(logit_scale, kwargs))

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

  def attend(self, query: jax.Array) -> jax.Array:
    """`nnx.Embed.attend`'s name for the tied logits: `get_logits(query)`, the
    `[..., num_classes]` logits the softmax sees (with `logit_scale=1.0` and no
    cap, clip or temperature, `query @ embedding.T` as `nnx.Embed.attend`)."""
    return self.get_logits(query)

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
