"""Keras 3 entry point: the shared embedding softmax as a `keras.layers.Layer`.

    from gshard_op.keras import GShardSharedEmbeddingSoftmax   # first: Keras on JAX
    import keras

    @keras.saving.register_keras_serializable(package="my_models")
    class LM(keras.Model):
      def __init__(self, vocab, dim, **kwargs):
        super().__init__(**kwargs)
        self.vocab, self.dim = vocab, dim
        self.softmax = GShardSharedEmbeddingSoftmax(dim, vocab)
        self.mlp = keras.layers.Dense(dim, activation="gelu")

      def build(self, input_shape=None):   # weights made here, so .keras loading builds it
        self.mlp.build((None, None, self.dim))
        self.built = True

      def call(self, batch, training=None):
        x = self.mlp(self.softmax.emb_lookup(batch["ids"]))
        out = self.softmax(x, batch.get("weights"), class_ids=batch.get("targets"),
                           training=training)
        return out["logits"]

      def get_config(self):                # what .keras loading rebuilds it from
        return {**super().get_config(), "vocab": self.vocab, "dim": self.dim}

    model = LM(32768, 512)
    model.compile(optimizer="adam")          # no `loss=`: the layer adds its own
    model.fit({"ids": ids, "targets": targets}, epochs=1, batch_size=8)
    model.predict({"ids": ids})              # logits, no labels needed
    model.save("lm.keras")

(`ids` int32 `[B, T]`, `targets` int32 `[B, T, 1]`, the next tokens; the README's
Keras section runs this end to end.)

The layer runs the functional op (`gshard_op.shared_embedding_softmax`) on its
`embeddings` weight and adds the mean cross-entropy plus the z-loss to the
model's losses (`Layer.add_loss`), so `compile(optimizer=...)` + `fit` trains
it with no `loss=`. Keras's JAX trainer compiles `train_step` with plain
`jax.jit`, so the primitives' own lowering decides what XLA sees; a model that
also mixes in `GShardJitTrainer` compiles its train and test steps with
`gshard_op.jit` instead, which runs the pass pipeline (the fused forward and
backward sweep) on the whole step. `lowered_train_step(model, x, y)` and
`compiled_train_step(model, x, y)` give the step Keras runs, to read its IR or
memory.

Only the JAX backend can run the op. Importing this module before Keras
selects it (`KERAS_BACKEND=jax` unless the environment names another backend),
without leaving the `keras.json` that Keras writes on its first import behind;
importing it after Keras was imported with another backend, under a
`KERAS_BACKEND` whose framework is not installed, or constructing the layer
under another backend, raises an error that names `KERAS_BACKEND=jax`. (A plain
`import keras` first, with no `KERAS_BACKEND`, starts Keras on tensorflow and
fails inside Keras when TensorFlow is missing, before this module can run.)
"""

from __future__ import annotations

import dataclasses
import os
import sys


def _import_keras_on_jax():
  """Imports Keras, on the JAX backend if Keras was not imported yet.

  Keras reads `KERAS_BACKEND` once, on its first import, and then writes
  `$KERAS_HOME/keras.json` (default `~/.keras/keras.json`) with its default
  backend, tensorflow, if the file did not exist. A file that this import
  made is removed again (with the folder, if that was made too and is empty),
  so that it does not name tensorflow for later programs.
  """
  if "keras" in sys.modules:
    return sys.modules["keras"]
  os.environ.setdefault("KERAS_BACKEND", "jax")
  if "KERAS_HOME" in os.environ:
    folder = os.environ["KERAS_HOME"]
  else:  # as keras/src/backend/config.py picks it
    home = os.path.expanduser("~")
    folder = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
  config = os.path.join(os.path.expanduser(folder), "keras.json")
  had_folder, had_config = os.path.isdir(os.path.dirname(config)), os.path.exists(config)
  try:
    import keras
  except ModuleNotFoundError as err:
    if (err.name or "").partition(".")[0] == "keras":
      raise  # Keras itself is not installed: its own message says so
    # Keras starts its backend on import: a KERAS_BACKEND whose framework is not
    # installed ends in a bare "No module named 'tensorflow'" from deep inside it.
    raise ImportError(
        f"gshard_op.keras needs the JAX backend of Keras, but Keras failed to start its "
        f"{os.environ.get('KERAS_BACKEND')!r} backend ({err}): set KERAS_BACKEND=jax "
        f"before Keras is first imported, or leave it unset and import gshard_op.keras "
        f"before keras.") from err
  finally:
    if not had_config:
      try:
        os.remove(config)
        if not had_folder:
          os.rmdir(os.path.dirname(config))
      except OSError:
        pass  # not written (read-only home), or the folder holds more
  return keras


keras = _import_keras_on_jax()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import gshard_op  # noqa: E402
from gshard_op import functional, reference  # noqa: E402
from gshard_op._private import keras_trainer  # noqa: E402
from gshard_op.functional import IMPLEMENTATIONS  # noqa: E402
from gshard_op.options import (SoftmaxOptions, for_layer_call, layer_options,  # noqa: E402
                               option_arguments, tied_head_keywords)


def check_backend() -> None:
  """Raises unless Keras runs on JAX, naming the backend it runs on."""
  backend = keras.config.backend()
  if backend != "jax":
    raise RuntimeError(
        f"gshard_op.keras needs the JAX backend of Keras, but Keras is running on "
        f"{backend!r}: set KERAS_BACKEND=jax before Keras is first imported "
        f"(KERAS_BACKEND is {os.environ.get('KERAS_BACKEND')!r} here).")


check_backend()  # Keras imported before this module on another backend: say so now


@keras.saving.register_keras_serializable(package="gshard_op")
class GShardSharedEmbeddingSoftmax(keras.layers.Layer):
  """One `[num_classes, in_features]` weight `embeddings` used for the token
  lookup (`emb_lookup`) and the output softmax (`call`), with Praxis's semantics.

  Args:
    in_features: `M`, the width of the inputs and of the embedding rows.
    num_classes: `V`, the vocabulary.
    soft_cap_logits, logits_abs_max, z_loss_weight, label_smoothing_prob,
      use_tgt_labels_size_as_loss_denominator: Praxis's options (see
      `gshard_op.SoftmaxOptions`); label smoothing applies only in training.
    precision: of the op's matmuls (`jax.lax.Precision` names); None follows
      `jax.default_matmul_precision`.
    temperature, with_entropy, logit_scale: as `gshard_op.SoftmaxOptions`
      (`logit_scale=1.0`: the plain tied head of `ReversibleEmbedding`).
    options: all the options as one `gshard_op.SoftmaxOptions`, instead of the
      keywords above (both: an error); an option with no keyword here is
      reached this way.
    embeddings_initializer: any `keras.initializers` initializer; default
      (None) `RandomNormal(mean=0, stddev=1)`, Praxis's Gaussian.
    embeddings_regularizer, embeddings_constraint: as `keras.layers.Embedding`.
    add_xent_loss: when a call has labels, add `avg_xent + z_loss` (float32)
      to the layer's losses, which `fit` and `evaluate` minimise and report.
    implementation: "composite" (the primitive) or "reference" (dense math).
    **kwargs: `keras.layers.Layer`'s (`name`, `dtype` policy, `trainable`).

  `call(inputs, class_weights=None, class_ids=None, class_probabilities=None,
  training=None)` returns a dict of Praxis's fields (`logits`, `log_probs`,
  `per_example_argmax`, `per_example_xent`, `per_example_weight`,
  `total_xent`, `total_weight`, `avg_xent`, `avg_xent_weight`, `z_loss`);
  `class_weights=None` weighs every token 1. With no labels at all (predicting),
  it returns only `logits`, `log_probs` and `per_example_argmax` and adds no
  loss. Under a mixed policy (`mixed_bfloat16`) the matmuls run in the compute
  dtype and the softmax in float32, as in the functional op.
  """

  def __init__(self, in_features: int, num_classes: int, *,
               soft_cap_logits: float = 0.0, logits_abs_max: float = 0.0,
               z_loss_weight: float = 0.0, label_smoothing_prob: float = 0.0,
               use_tgt_labels_size_as_loss_denominator: bool = True,
               precision: str | None = None, temperature: float = 1.0,
               with_entropy: bool = False, logit_scale: float | None = None,
               options: SoftmaxOptions | None = None,
               embeddings_initializer=None, embeddings_regularizer=None,
               embeddings_constraint=None, add_xent_loss: bool = True,
               implementation: str = "composite", embeddings=None, **kwargs):
    check_backend()
    if implementation not in IMPLEMENTATIONS:
      raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    super().__init__(**kwargs)
    # Checks the sizes and options now rather than at the first call.
    self.options = layer_options(in_features, num_classes, options,
                                 **option_arguments(locals()))
    self.in_features = in_features
    self.num_classes = num_classes
    if embeddings_initializer is None:
      embeddings_initializer = keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
    self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
    self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
    self.embeddings_constraint = keras.constraints.get(embeddings_constraint)
    self.add_xent_loss = bool(add_xent_loss)
    self.implementation = implementation
    if embeddings is not None:
      functional.check_shared_embedding("embeddings", embeddings, keras.Variable,
                                        "a keras.Variable", num_classes, in_features)
    self._shared_embeddings = embeddings
    # The sizes are known now, and `emb_lookup` may run before `call`.
    self.build()

  @classmethod
  def from_embedding(cls, embedding: keras.layers.Embedding, *,
                     logit_scale: float | None = 1.0, **kwargs) -> "GShardSharedEmbeddingSoftmax":
    """The layer on a `keras.layers.Embedding`'s (or a Keras-Hub-style
    `ReversibleEmbedding`'s) own `embeddings` variable, shared (tied): one
    variable in `model.trainable_variables`, one optimizer slot.

    The logits are those of `embedding(x, reverse=True)`: `logit_scale`
    defaults to 1.0 here (None: Praxis's `in_features ** -0.5`), and a
    `ReversibleEmbedding`'s `logit_soft_cap` is the default `soft_cap_logits`.
    `kwargs` are the constructor's. An untied `ReversibleEmbedding`
    (`tie_weights=False`) and LoRA or quantized embeddings are refused. The
    tie is made by the call, not by `get_config`: a model that calls this in
    its own `__init__` makes it again when it is loaded from a `.keras` file.

    Example::

      self.embed = keras.layers.ReversibleEmbedding(32000, 512)
      self.head = GShardSharedEmbeddingSoftmax.from_embedding(self.embed)
    """
    if not isinstance(embedding, keras.layers.Embedding):
      raise TypeError(f"from_embedding takes a keras.layers.Embedding (or a "
                      f"ReversibleEmbedding), got {type(embedding).__name__}")
    if not getattr(embedding, "tie_weights", True):
      raise ValueError("this ReversibleEmbedding is untied (tie_weights=False): its reverse "
                       "projection is a second weight, not the embedding")
    embedding.build()  # a no-op once built
    variable = embedding.embeddings
    if not isinstance(variable, keras.Variable) or embedding.quantization_mode:
      raise ValueError("from_embedding needs the embedding's own float variable; LoRA-enabled "
                       "or quantized embeddings are not supported")
    cap = getattr(embedding, "logit_soft_cap", None)
    if cap:
      kwargs.setdefault("soft_cap_logits", float(cap))
    return cls(embedding.output_dim, embedding.input_dim, embeddings=variable,
               **tied_head_keywords(logit_scale, kwargs))

  def build(self, input_shape=None):
    if self._shared_embeddings is not None:
      self.embeddings = self._shared_embeddings
      self.built = True
      return
    self.embeddings = self.add_weight(
        name="embeddings", shape=(self.num_classes, self.in_features),
        initializer=self.embeddings_initializer, regularizer=self.embeddings_regularizer,
        constraint=self.embeddings_constraint, trainable=True)
    self.built = True

  def _embeddings(self):
    """The weight as a JAX array in the compute dtype (the stateless value under `fit`)."""
    return jnp.asarray(self.embeddings.value, self.compute_dtype)

  def emb_lookup(self, ids) -> jax.Array:
    """The rows `embeddings[ids]`: `[...]` ids give `[..., in_features]`.

    An id outside `[0, num_classes)` gives a row of zeros, like Praxis's
    one-hot matmul (no wrap-around).
    """
    return functional.emb_lookup(self._embeddings(), ids)

  def get_logits(self, inputs) -> jax.Array:
    """`[..., in_features]` to `[..., num_classes]` logits, capped and clipped."""
    inputs = jnp.asarray(inputs, self.compute_dtype)
    return functional.get_logits(inputs, self._embeddings(), self.options)

  def call(self, inputs, class_weights=None, class_ids=None, class_probabilities=None,
           training=None) -> dict:
    inputs = jnp.asarray(inputs, self.compute_dtype)
    if class_ids is None and class_probabilities is None:
      logits = self.get_logits(inputs)
      log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
      out = {"logits": logits, "log_probs": log_probs.astype(logits.dtype),
             "per_example_argmax": jnp.argmax(logits, axis=-1).astype(jnp.int32)}
      if self.options.with_entropy:  # the logits exist here anyway
        z = logits.astype(jnp.float32)
        out["per_example_entropy"] = reference.entropy(
            z, jax.nn.logsumexp(z, axis=-1)).astype(logits.dtype)
      return out
    if class_weights is None:
      class_weights = jnp.ones(inputs.shape[:-1] + (1,), jnp.float32)
    out = functional.shared_embedding_softmax(
        inputs, self._embeddings(), class_weights, class_ids, class_probabilities,
        options=for_layer_call(self.options, training=bool(training)),
        implementation=self.implementation)
    if self.add_xent_loss:
      self.add_loss(out.avg_xent + out.z_loss)  # float32 whatever the compute dtype
    return dict(out)

  def compute_output_spec(self, inputs, class_weights=None, class_ids=None,
                          class_probabilities=None, training=None) -> dict:
    # Written out rather than traced: a functional model's batch size is
    # symbolic, and the loss denominator is a Python count of tokens.
    batch, dtype = tuple(inputs.shape[:-1]), self.compute_dtype
    spec = lambda shape, dtype: keras.KerasTensor(shape, dtype=dtype)
    specs = {"logits": spec(batch + (self.num_classes,), dtype),
             "log_probs": spec(batch + (self.num_classes,), dtype),
             "per_example_argmax": spec(batch, "int32")}
    if self.options.with_entropy:
      specs["per_example_entropy"] = spec(batch, dtype)
    if class_ids is None and class_probabilities is None:
      return specs
    return {**specs, "per_example_xent": spec(batch, dtype),
            "per_example_weight": spec(batch + (1,), "float32"),
            "total_xent": spec((), "float32"), "total_weight": spec((), "float32"),
            "avg_xent": spec((), "float32"), "avg_xent_weight": spec((), "float32"),
            "z_loss": spec((), "float32")}

  def get_config(self) -> dict:
    opts = self.options
    return {
        **super().get_config(),
        "in_features": self.in_features,
        "num_classes": self.num_classes,
        # Every option as the keyword it is (a config that names options= would
        # not load in an older gshard_op).
        **{f.name: getattr(opts, f.name) for f in dataclasses.fields(SoftmaxOptions)},
        "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        "embeddings_regularizer": keras.regularizers.serialize(self.embeddings_regularizer),
        "embeddings_constraint": keras.constraints.serialize(self.embeddings_constraint),
        "add_xent_loss": self.add_xent_loss,
        "implementation": self.implementation,
    }


class GShardJitTrainer:
  """A `keras.Model` mixin whose `fit` and `evaluate` steps compile with `gshard_op.jit`.

  Keras's JAX trainer compiles `train_step` with plain `jax.jit`; this mixin
  builds the same steps with `gshard_op.jit`, so the pass pipeline sees the
  whole training step and can fuse the softmax's forward and gradient into one
  sweep (three matmuls instead of four). Put it before `keras.Model`:

    class LM(gshard_op.keras.GShardJitTrainer, keras.Model):
      gshard_memory_budget_mib = 256     # or gshard_pipeline = "..."

  Attributes:
    gshard_pipeline: pass pipeline text; None for the default pipeline.
    gshard_memory_budget_mib: the default pipeline's budget; None for its default.
  """

  gshard_pipeline: str | None = None
  gshard_memory_budget_mib: float | None = None

  def _gshard_jit(self, step, *, with_optimizer: bool):
    if keras.config.is_nnx_enabled():
      raise NotImplementedError("GShardJitTrainer does not support Keras's NNX mode "
                                "(KERAS_NNX_ENABLED); use plain Keras on JAX")
    out_shardings = None
    if keras.distribution.distribution() is not None:  # as Keras's own trainer
      trainable, non_trainable, optimizer, metrics = keras_trainer.state_sharding_spec(self)
      state = ((trainable, non_trainable, optimizer, metrics) if with_optimizer
               else (trainable, non_trainable, metrics))
      out_shardings = (None, state)
    return gshard_op.jit(step, pipeline=self.gshard_pipeline,
                         memory_budget_mib=self.gshard_memory_budget_mib,
                         donate_argnums=0, out_shardings=out_shardings)

  def make_train_function(self, force=False):
    if self.train_function is not None and not force:
      return
    if self.run_eagerly or not self.jit_compile:
      return super().make_train_function(force=force)
    self.train_function = keras_trainer.make_function(
        self, self._gshard_jit(self.train_step, with_optimizer=True))

  def make_test_function(self, force=False):
    if self.test_function is not None and not force:
      return
    if self.run_eagerly or not self.jit_compile:
      return super().make_test_function(force=force)
    self.test_function = keras_trainer.make_function(
        self, self._gshard_jit(self.test_step, with_optimizer=False))


def lowered_train_step(model: keras.Model, x, y=None, sample_weight=None):
  """The lowered (not yet compiled) step `model.fit` runs on the batch `(x, y, sample_weight)`.

  The model must be compiled; it is built from the batch if need be (as `fit`
  builds it), and its `train_step` is jitted exactly as `fit` jits it
  (`make_train_function`, with whatever jit the model uses) and lowered
  without running. `.as_text()` is the StableHLO XLA gets (after the passes,
  for a `GShardJitTrainer` model); `.compile()` the executable.
  """
  check_backend()
  if model.optimizer is None:
    raise ValueError("compile the model (model.compile(optimizer=...)) first")
  data = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
  keras_trainer.symbolic_build(model, data)  # what fit does before its first step
  if not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  with keras_trainer.capturing_steps(model) as steps:
    model.make_train_function(force=True)
  if not hasattr(steps[-1], "lower"):
    raise ValueError("the model's train step is not compiled (run_eagerly=True or "
                     "jit_compile=False)")
  state = tuple([v.value for v in variables] for variables in (
      model.trainable_variables, model.non_trainable_variables,
      model.optimizer.variables, model.metrics_variables))
  return steps[-1].lower(state, data)


def compiled_train_step(model: keras.Model, x, y=None, sample_weight=None) -> jax.stages.Compiled:
  """`lowered_train_step(...).compile()`: the executable `fit` runs, for
  `.memory_analysis().temp_size_in_bytes` or `.as_text()` (XLA's HLO)."""
  return lowered_train_step(model, x, y, sample_weight).compile()
