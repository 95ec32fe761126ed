"""The NNX and Keras layers built on a model's existing embedding (the torch
module's case is in test_torch.py): the embedding's own variable is shared,
not copied, and a training step the way users run it (an `nnx.jit` optax step,
Keras `model.fit`) equals the same model with the framework's own tied head
(`nnx.Embed.attend`, `ReversibleEmbedding(reverse=True)`) and a dense loss."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from gshard_op.nnx import GShardSharedEmbeddingSoftmax  # noqa: E402

V, M = 37, 16
B, T = 3, 5
CAP, Z_LOSS = 3.0, 1e-2


def tokens(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, V, (B, T)).astype(np.int32),
          rng.integers(0, V, (B, T)).astype(np.int32))


# --- Flax NNX ---------------------------------------------------------------------------

class NnxLM(nnx.Module):
  """A tied LM: `head` on `embed`'s Param, or (`head=None`) `embed.attend`
  with the dense loss written out."""

  def __init__(self, rngs, tied_head: bool):
    self.embed = nnx.Embed(V, M, rngs=rngs)
    self.mix = nnx.Linear(M, M, rngs=rngs)
    self.head = (GShardSharedEmbeddingSoftmax.from_embed(
        self.embed, soft_cap_logits=CAP, z_loss_weight=Z_LOSS) if tied_head else None)

  def loss(self, ids, targets):
    h = jnp.tanh(self.mix(self.embed(ids)))
    if self.head is not None:
      out = self.head(h, jnp.ones(targets.shape + (1,)), class_ids=targets[..., None])
      return out.avg_xent + out.z_loss
    z = CAP * jnp.tanh(self.embed.attend(h) / CAP)
    lse = jax.nn.logsumexp(z, -1)
    nll = lse - jnp.take_along_axis(z, targets[..., None], -1)[..., 0]
    return nll.mean() + Z_LOSS * (lse**2).mean()


def test_nnx_layer_on_an_embed_shares_its_param():
  model = NnxLM(nnx.Rngs(0), tied_head=True)
  assert model.head.embedding is model.embed.embedding
  assert model.head.options.logit_scale == 1.0
  params = nnx.state(model, nnx.Param)
  assert len(jax.tree.leaves(params)) == 3  # the embedding once, the Linear's kernel and bias
  h = jax.random.normal(jax.random.key(1), (B, T, M))
  plain = GShardSharedEmbeddingSoftmax.from_embed(model.embed)
  np.testing.assert_allclose(plain.attend(h), model.embed.attend(h), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match=r"embedding must be \[num_classes=37, in_features=8\]"):
    GShardSharedEmbeddingSoftmax(8, V, embedding=model.embed.embedding)
  with pytest.raises(TypeError, match="needs rngs="):
    GShardSharedEmbeddingSoftmax(M, V)
  with pytest.raises(TypeError, match="from_embed takes an nnx.Embed"):
    GShardSharedEmbeddingSoftmax.from_embed(model.mix)


def test_nnx_jit_optax_step_equals_the_attend_model():
  """One `nnx.jit` AdamW step of each model from the same weights: the losses
  and the updated parameters agree, and the head still shares the Param."""
  import optax
  ids, targets = tokens()
  models = [NnxLM(nnx.Rngs(0), tied_head=True), NnxLM(nnx.Rngs(0), tied_head=False)]
  results = []
  for model in models:
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, ids, targets):
      loss, grads = nnx.value_and_grad(lambda m: m.loss(ids, targets))(model)
      optimizer.update(model, grads)
      return loss

    loss = step(model, optimizer, ids, targets)
    results.append((float(loss), nnx.state(model, nnx.Param)))
  (ours, ours_params), (dense, dense_params) = results
  np.testing.assert_allclose(ours, dense, rtol=1e-5)
  assert models[0].head.embedding is models[0].embed.embedding
  for got, want in zip(jax.tree.leaves(ours_params), jax.tree.leaves(dense_params)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


# --- Keras ------------------------------------------------------------------------------

def keras_module():
  try:
    return pytest.importorskip("gshard_op.keras").keras
  except RuntimeError as err:  # Keras was imported first on another backend
    pytest.skip(str(err))


def keras_lm(keras, tied_head: bool):
  from gshard_op.keras import GShardSharedEmbeddingSoftmax as KerasLayer

  class LM(keras.Model):
    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self.embed = keras.layers.ReversibleEmbedding(V, M, logit_soft_cap=CAP)
      self.mix = keras.layers.Dense(M, activation="tanh")
      self.head = KerasLayer.from_embedding(self.embed) if tied_head else None

    def call(self, batch, training=None):
      h = self.mix(self.embed(batch["ids"]))
      if self.head is not None:
        return self.head(h, None, class_ids=batch["targets"][..., None],
                         training=training)["per_example_xent"]
      logits = self.embed(h, reverse=True)
      self.add_loss(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
          batch["targets"], logits, from_logits=True)))
      return logits

  return LM()


def test_keras_layer_on_an_embedding_trains_as_reverse_true():
  """`model.fit` of a model whose head is built on its `ReversibleEmbedding`
  equals the same model with `embed(h, reverse=True)` and Keras's dense loss
  (the soft cap taken from the embedding), and the variable stays one."""
  keras = keras_module()
  ids, targets = tokens()
  batch = {"ids": ids, "targets": targets}
  models = [keras_lm(keras, tied_head=True), keras_lm(keras, tied_head=False)]
  for model in models:
    model(batch)  # builds
  models[1].set_weights(models[0].get_weights())
  head = models[0].head
  assert head.embeddings is models[0].embed.embeddings
  assert head.options.soft_cap_logits == CAP and head.options.logit_scale == 1.0
  assert len(models[0].trainable_variables) == 3
  histories = []
  for model in models:
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    histories.append(model.fit(batch, epochs=2, batch_size=B, verbose=0).history["loss"])
  np.testing.assert_allclose(histories[0], histories[1], rtol=1e-5)
  assert len(models[0].optimizer.variables) == len(models[1].optimizer.variables)
  for got, want in zip(models[0].get_weights(), models[1].get_weights()):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_keras_from_embedding_refusals_and_plain_embedding():
  keras = keras_module()
  from gshard_op.keras import GShardSharedEmbeddingSoftmax as KerasLayer
  embed = keras.layers.Embedding(V, M)
  head = KerasLayer.from_embedding(embed)  # builds the embedding if need be
  assert head.embeddings is embed.embeddings and head.num_classes == V
  with pytest.raises(ValueError, match="untied"):
    KerasLayer.from_embedding(keras.layers.ReversibleEmbedding(V, M, tie_weights=False))
  with pytest.raises(ValueError, match=r"embeddings must be \[num_classes=37, in_features=8\]"):
    KerasLayer(8, V, embeddings=embed.embeddings)
  with pytest.raises(TypeError, match="from_embedding takes a keras.layers.Embedding"):
    KerasLayer.from_embedding(keras.layers.Dense(M))
