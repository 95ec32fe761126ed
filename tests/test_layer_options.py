"""The NNX and PyTorch layers take their options as keywords or as one
`options=SoftmaxOptions(...)` (as the functional op does), never both; an
option with no keyword of its own is reached that way. (Keras:
`test_keras.py::test_options_object_is_the_keywords_and_round_trips`.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import gshard_op
from gshard_op import nnx as gnnx
from gshard_op import torch as gt

OPTIONS = gshard_op.SoftmaxOptions(z_loss_weight=1e-3, temperature=0.7, soft_cap_logits=5.0,
                                   logit_scale=1.0, use_tgt_labels_size_as_loss_denominator=False)
KEYWORDS = dict(z_loss_weight=1e-3, temperature=0.7, soft_cap_logits=5.0, logit_scale=1.0,
                use_tgt_labels_size_as_loss_denominator=False)


def test_nnx_layer_options_object(rng):
  by_options = gnnx.GShardSharedEmbeddingSoftmax(8, 40, options=OPTIONS, rngs=nnx.Rngs(0))
  by_keywords = gnnx.GShardSharedEmbeddingSoftmax(8, 40, rngs=nnx.Rngs(0), **KEYWORDS)
  assert by_options.options == by_keywords.options == OPTIONS
  x = rng.normal(size=(6, 8)).astype(np.float32)
  ids = rng.integers(0, 40, size=(6, 1)).astype(np.int32)
  got, want = (layer(x, np.ones((6, 1), np.float32), class_ids=ids)
               for layer in (by_options, by_keywords))
  np.testing.assert_array_equal(got.avg_xent, want.avg_xent)
  with pytest.raises(ValueError, match="both given"):
    gnnx.GShardSharedEmbeddingSoftmax(8, 40, options=OPTIONS, z_loss_weight=0.5,
                                      rngs=nnx.Rngs(0))
  # from_embed's logit_scale=1.0 gives way to the options' own scale
  embed = nnx.Embed(40, 8, rngs=nnx.Rngs(1))
  praxis = gshard_op.SoftmaxOptions(z_loss_weight=1e-3)
  assert gnnx.GShardSharedEmbeddingSoftmax.from_embed(embed, options=praxis).options == praxis
  with pytest.raises(ValueError, match="both given"):
    gnnx.GShardSharedEmbeddingSoftmax.from_embed(embed, options=praxis, logit_scale=0.5)


def test_torch_layer_options_object():
  by_options = gt.GShardSharedEmbeddingSoftmax(8, 40, options=OPTIONS)
  by_keywords = gt.GShardSharedEmbeddingSoftmax(8, 40, **KEYWORDS)
  assert by_options.options == by_keywords.options == OPTIONS
  with torch.no_grad():
    by_options.embedding.copy_(by_keywords.embedding)
  g = torch.Generator().manual_seed(0)
  x, ids = torch.randn(6, 8, generator=g), torch.randint(0, 40, (6, 1), generator=g)
  got, want = (layer(x, None, class_ids=ids) for layer in (by_options, by_keywords))
  torch.testing.assert_close(got["avg_xent"], want["avg_xent"], rtol=0, atol=0)
  # The torch layer's own default (a mean over the tokens) is no keyword given.
  assert gt.GShardSharedEmbeddingSoftmax(8, 40, options=gshard_op.SoftmaxOptions()).options == (
      gshard_op.SoftmaxOptions())
  with pytest.raises(ValueError, match="both given"):
    gt.GShardSharedEmbeddingSoftmax(8, 40, options=OPTIONS, temperature=2.0)
  embedding = torch.nn.Embedding(40, 8)
  praxis = gshard_op.SoftmaxOptions(z_loss_weight=1e-3)
  assert gt.GShardSharedEmbeddingSoftmax.from_embedding(embedding, options=praxis).options == (
      praxis)
