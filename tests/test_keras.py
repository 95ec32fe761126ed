"""The Keras 3 layer (`gshard_op.keras`) trained, evaluated, saved and compiled by Keras itself.

Keras runs on JAX here (`KERAS_BACKEND=jax`, set before Keras is imported); the
module is skipped if Keras is missing or was imported with another backend. The
model is a small causal LM: the layer's `emb_lookup`, the previous token mixed
in through two Dense layers, and the layer's softmax, whose loss the layer adds
itself (`add_loss`), so `compile(optimizer=...)` + `fit` trains it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:  # Keras through gshard_op.keras: on JAX, and no keras.json naming tensorflow left in HOME
  keras = pytest.importorskip("gshard_op.keras").keras
except RuntimeError as err:  # Keras was imported first on another backend
  pytest.skip(str(err), allow_module_level=True)
if keras.config.backend() != "jax":
  pytest.skip(f"Keras was imported with the {keras.config.backend()!r} backend; "
              "these tests need KERAS_BACKEND=jax", allow_module_level=True)
from keras import ops  # noqa: E402

import gshard_op  # noqa: E402
from gshard_op.keras import (GShardJitTrainer, GShardSharedEmbeddingSoftmax,  # noqa: E402
                             compiled_train_step, lowered_train_step)
from gshard_op.outputs import FIELDS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import keras_memory  # noqa: E402

OPTIONS = dict(z_loss_weight=1e-3, label_smoothing_prob=0.1)


@keras.saving.register_keras_serializable(package="gshard_op_tests")
class TinyLM(keras.Model):
  """ids -> emb_lookup -> x + Dense(Dense([x, x_prev], tanh)) -> the layer's softmax.

  `call({"ids", "targets", "weights"})` returns the logits; without
  `"targets"` (prediction) the layer adds no loss.
  """

  def __init__(self, vocab, dim, softmax_options=None, **kwargs):
    super().__init__(**kwargs)
    self.vocab, self.dim = vocab, dim
    self.softmax_options = dict(softmax_options or {})
    self.softmax = GShardSharedEmbeddingSoftmax(dim, vocab, **self.softmax_options)
    self.mix = keras.layers.Dense(dim, activation="tanh")
    self.out = keras.layers.Dense(dim)

  def build(self, input_shape=None):
    # Every weight's shape follows from the constructor: `.keras` loading
    # builds the model (and then its optimizer) before it loads the variables.
    self.mix.build((None, None, 2 * self.dim))
    self.out.build((None, None, self.dim))
    self.built = True

  def hidden(self, ids):
    x = self.softmax.emb_lookup(ids)
    prev = ops.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    return x + self.out(self.mix(ops.concatenate([x, prev], axis=-1)))

  def call(self, batch, training=None):
    out = self.softmax(self.hidden(batch["ids"]), batch.get("weights"),
                       class_ids=batch.get("targets"), training=training)
    return out["logits"]

  def get_config(self):
    return {**super().get_config(), "vocab": self.vocab, "dim": self.dim,
            "softmax_options": self.softmax_options}


class FusedTinyLM(GShardJitTrainer, TinyLM):
  # Blocks of 16 tokens: the fused sweep's `[16, V]` buffers, not `[N, V]`.
  gshard_pipeline = ("gshard-fuse-fwd-bwd{token-chunk=16},"
                     "gshard-chunk-softmax{memory-budget-mib=1},canonicalize,cse")


def lm_data(rng, batch, seq, vocab):
  """A learnable sequence (each token a fixed function of the two before it),
  its next-token targets, and weights that mask a padded tail."""
  tokens = np.zeros((batch, seq + 1), np.int64)
  tokens[:, :2] = rng.integers(0, vocab, (batch, 2))
  for t in range(2, seq + 1):
    tokens[:, t] = (7 * tokens[:, t - 1] + 3 * tokens[:, t - 2] + 1) % vocab
  weights = np.ones((batch, seq, 1), np.float32)
  weights[:, -3:] = 0.0
  return {"ids": tokens[:, :-1].astype(np.int32),
          "targets": tokens[:, 1:, None].astype(np.int32), "weights": weights}


def make_model(cls, vocab, dim, data, options=OPTIONS, weights=None, lr=1e-2):
  keras.utils.set_random_seed(0)
  model = cls(vocab, dim, options)
  model.compile(optimizer=keras.optimizers.Adam(lr))
  model(data)  # builds every layer
  if weights is not None:
    model.set_weights(weights)
  return model


def fit_curve(model, data, steps):
  """Losses of `steps` single-batch epochs (one per optimizer step)."""
  history = model.fit(data, batch_size=len(data["ids"]), epochs=steps, shuffle=False, verbose=0)
  return np.asarray(history.history["loss"])


def largest_tensor(compiled) -> int:
  return keras_memory.largest_tensor(compiled.as_text())[0]


@pytest.fixture
def bf16_policy():
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("mixed_bfloat16")
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


# --- the layer ------------------------------------------------------------------

def test_weight_init_and_lookup(rng):
  layer = GShardSharedEmbeddingSoftmax(32, 300)
  (weight,) = layer.weights
  assert weight is layer.embeddings and weight.path.endswith("embeddings")
  assert tuple(weight.shape) == (300, 32) and weight.dtype == "float32"
  e = np.asarray(weight.value)
  assert abs(e.mean()) < 0.05 and abs(e.std() - 1.0) < 0.05  # Gaussian, std 1
  ids = np.array([[0, 299, 300, -1], [5, 2**30, 7, 7]], np.int32)
  rows = np.asarray(layer.emb_lookup(ids))
  valid = (ids >= 0) & (ids < 300)
  np.testing.assert_array_equal(rows[valid], e[ids[valid]])
  assert not rows[~valid].any()  # out of range: zeros, no wrap-around
  with pytest.raises(TypeError, match="integers"):
    layer.emb_lookup(np.zeros(3, np.float32))

  custom = GShardSharedEmbeddingSoftmax(4, 10, embeddings_initializer="zeros")
  assert not np.asarray(custom.embeddings.value).any()


@pytest.mark.parametrize("labels", ["ids", "probs"])
def test_call_matches_functional_op(rng, labels):
  options = dict(soft_cap_logits=3.0, z_loss_weight=1e-2, label_smoothing_prob=0.2,
                 use_tgt_labels_size_as_loss_denominator=False)
  layer = GShardSharedEmbeddingSoftmax(8, 23, **options)
  x = rng.standard_normal((3, 5, 8)).astype(np.float32)
  w = rng.uniform(0.5, 1.5, (3, 5, 1)).astype(np.float32)
  if labels == "ids":
    kw = dict(class_ids=rng.integers(0, 23, (3, 5, 1)).astype(np.int32))
  else:
    p = rng.uniform(size=(3, 5, 23)).astype(np.float32)
    kw = dict(class_probabilities=p / p.sum(-1, keepdims=True))
  e = layer.embeddings.value
  for training, smoothing in ((True, 0.2), (False, 0.0), (None, 0.0)):
    got = layer(x, w, training=training, **kw)
    want = gshard_op.shared_embedding_softmax(
        x, e, w, **kw, implementation="reference",
        **{**options, "label_smoothing_prob": smoothing})
    assert isinstance(got, dict) and tuple(got) == FIELDS
    for name in FIELDS:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name} training={training}")
    (loss,) = layer.losses  # the layer's own loss, in float32
    np.testing.assert_allclose(loss, want.total_xent / want.avg_xent_weight + want.z_loss,
                               rtol=1e-6)


def test_call_without_labels_gives_logits_and_no_loss(rng):
  layer = GShardSharedEmbeddingSoftmax(8, 23, logits_abs_max=1.5)
  x = rng.standard_normal((4, 8)).astype(np.float32)
  out = layer(x)
  assert set(out) == {"logits", "log_probs", "per_example_argmax"} and not layer.losses
  np.testing.assert_allclose(out["logits"], layer.get_logits(x), rtol=1e-6)
  assert np.abs(out["logits"]).max() <= 1.5
  np.testing.assert_allclose(np.exp(out["log_probs"]).sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(out["per_example_argmax"], np.argmax(out["logits"], -1))
  no_loss = GShardSharedEmbeddingSoftmax(8, 23, add_xent_loss=False)
  no_loss(x, class_ids=np.zeros((4, 1), np.int32))
  assert not no_loss.losses


def test_config_round_trip_and_validation():
  layer = GShardSharedEmbeddingSoftmax(
      8, 23, soft_cap_logits=2.0, logits_abs_max=1.0, z_loss_weight=1e-4,
      label_smoothing_prob=0.1, use_tgt_labels_size_as_loss_denominator=False,
      embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.5, seed=3),
      embeddings_regularizer="l2", add_xent_loss=False, implementation="reference",
      name="softmax", dtype="bfloat16")
  config = layer.get_config()
  clone = GShardSharedEmbeddingSoftmax.from_config(config)
  assert clone.get_config() == config
  assert clone.options == layer.options and clone.compute_dtype == "bfloat16"
  assert isinstance(clone.embeddings_initializer, keras.initializers.TruncatedNormal)
  for bad, error in ((dict(in_features=0), ValueError), (dict(num_classes=2.5), ValueError),
                     (dict(implementation="dense"), ValueError),
                     (dict(z_loss_weight=-1.0), ValueError),
                     (dict(label_smoothing_prob="0.1"), TypeError)):
    with pytest.raises(error):
      GShardSharedEmbeddingSoftmax(**{"in_features": 8, "num_classes": 23, **bad})


def test_options_object_is_the_keywords_and_round_trips():
  """`options=SoftmaxOptions(...)` builds the layer the keywords build; its
  config names every option as a keyword, so it loads back; both is an error."""
  options = gshard_op.SoftmaxOptions(z_loss_weight=1e-4, temperature=0.5, logit_scale=1.0,
                                     with_entropy=True)
  layer = GShardSharedEmbeddingSoftmax(8, 23, options=options)
  keywords = GShardSharedEmbeddingSoftmax(8, 23, z_loss_weight=1e-4, temperature=0.5,
                                          logit_scale=1.0, with_entropy=True)
  assert layer.options == keywords.options == options
  config = layer.get_config()
  assert "options" not in config and config["temperature"] == 0.5
  assert GShardSharedEmbeddingSoftmax.from_config(config).options == options
  with pytest.raises(ValueError, match="both given"):
    GShardSharedEmbeddingSoftmax(8, 23, options=options, temperature=2.0)


def test_other_backend_is_refused_at_construction(tmp_path):
  code = ("import keras\n"
          "from gshard_op.keras import GShardSharedEmbeddingSoftmax\n"
          "GShardSharedEmbeddingSoftmax(8, 16)\n")
  # A HOME of its own: Keras imported first on another backend writes its
  # keras.json (naming tensorflow) there, not in the user's (issue 30).
  proc = _fresh_python(code, tmp_path, KERAS_BACKEND="numpy")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("RuntimeError") and "JAX backend" in last and "'numpy'" in last, (
      proc.stderr[-2000:])


def _fresh_python(code: str, home, **env) -> subprocess.CompletedProcess:
  """`code` in a new interpreter with HOME at `home` and no Keras settings but `env`."""
  base = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env={**base, "HOME": str(home), "JAX_PLATFORMS": "cpu",
                                          **env})


def test_import_selects_the_jax_backend_and_leaves_no_keras_json(tmp_path):
  """Without KERAS_BACKEND, importing gshard_op.keras first puts Keras on JAX;
  the keras.json Keras writes on its first import (naming tensorflow) is gone."""
  code = ("import gshard_op.keras, keras, os\n"
          "print(keras.config.backend(), os.environ['KERAS_BACKEND'])\n"
          "gshard_op.keras.GShardSharedEmbeddingSoftmax(8, 16)\n")
  proc = _fresh_python(code, tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split() == ["jax", "jax"]
  assert not (tmp_path / ".keras" / "keras.json").exists()
  assert not (tmp_path / ".keras").exists()


def test_import_keeps_a_keras_json_of_the_users_own(tmp_path):
  config = tmp_path / ".keras" / "keras.json"
  config.parent.mkdir()
  text = '{"floatx": "float32", "epsilon": 1e-07, "backend": "tensorflow", ' \
         '"image_data_format": "channels_last"}'
  config.write_text(text)
  proc = _fresh_python("import gshard_op.keras, keras; print(keras.config.backend())", tmp_path)
  assert (proc.returncode, proc.stdout.strip()) == (0, "jax"), proc.stderr[-2000:]
  assert config.read_text() == text


def test_import_after_keras_on_another_backend_names_keras_backend(tmp_path):
  code = "import keras\nimport gshard_op.keras\n"
  proc = _fresh_python(code, tmp_path, KERAS_BACKEND="numpy")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("RuntimeError") and "set KERAS_BACKEND=jax" in last, proc.stderr[-2000:]
  assert "'numpy'" in last


_NO_TENSORFLOW = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                                    reason="TensorFlow is installed: Keras starts on it")


@_NO_TENSORFLOW
def test_a_backend_keras_cannot_start_names_keras_backend(tmp_path):
  """KERAS_BACKEND names a framework that is not installed: the import says
  what to set, not Keras's bare "No module named 'tensorflow'", and leaves no
  keras.json."""
  proc = _fresh_python("import gshard_op.keras", tmp_path, KERAS_BACKEND="tensorflow")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("ImportError: gshard_op.keras needs the JAX backend"), proc.stderr[-2000:]
  assert "'tensorflow'" in last and "set KERAS_BACKEND=jax" in last, last
  assert not (tmp_path / ".keras").exists()


@_NO_TENSORFLOW
def test_import_after_a_failed_import_of_keras_runs_on_jax(tmp_path):
  """`import keras` first, with no KERAS_BACKEND and no TensorFlow, fails in
  Keras itself (it starts on tensorflow; nothing of gshard_op has run yet: the
  README says so). Caught, as a notebook cell's error is, gshard_op.keras
  then starts Keras on JAX and builds the layer."""
  code = ("try:\n"
          "  import keras\n"
          "except ModuleNotFoundError as err:\n"
          "  print('keras:', err)\n"
          "import gshard_op.keras, keras\n"
          "gshard_op.keras.GShardSharedEmbeddingSoftmax(8, 16)\n"
          "print(keras.config.backend())\n")
  proc = _fresh_python(code, tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.splitlines() == ["keras: No module named 'tensorflow'", "jax"], proc.stdout


def test_functional_model_trains(rng):
  layer = GShardSharedEmbeddingSoftmax(8, 23, z_loss_weight=1e-3)
  h = keras.Input((6, 8))
  t = keras.Input((6, 1), dtype="int32")
  out = layer(keras.layers.Dense(8)(h), class_ids=t)
  assert out["logits"].shape == (None, 6, 23) and out["avg_xent"].shape == ()
  model = keras.Model([h, t], out["per_example_argmax"])
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  x = [rng.standard_normal((8, 6, 8)).astype(np.float32),
       rng.integers(0, 23, (8, 6, 1)).astype(np.int32)]
  losses = model.fit(x, epochs=5, batch_size=8, verbose=0).history["loss"]
  assert losses[-1] < losses[0]
  assert model.predict(x, verbose=0).shape == (8, 6)


# --- model.fit, evaluate, predict ------------------------------------------------

def test_fit_matches_reference_and_has_no_tokens_by_vocab_tensor(rng):
  # A small budget makes the chunked lowering split this vocabulary into 256
  # classes a chunk, the last one ragged (4099 = 16 * 256 + 3).
  vocab, dim, steps = 4099, 16, 30
  data = lm_data(rng, 4, 16, vocab)
  ours = make_model(TinyLM, vocab, dim, data)
  reference = make_model(TinyLM, vocab, dim, data,
                         {**OPTIONS, "implementation": "reference"}, ours.get_weights())
  with gshard_op.lowering(memory_budget_mib=0.25):
    compiled = compiled_train_step(ours, data)
    got = fit_curve(ours, data, steps)
  assert largest_tensor(compiled) < 64 * vocab, "Keras's train step holds a [tokens, V] tensor"
  assert largest_tensor(compiled_train_step(reference, data)) >= 64 * vocab  # the check sees it
  want = fit_curve(reference, data, steps)
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert want[-1] < 0.8 * want[0], want  # it learns
  for a, b in zip(ours.get_weights(), reference.get_weights()):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)


def test_evaluate_and_predict(rng):
  vocab, dim = 97, 12
  data = lm_data(rng, 6, 10, vocab)
  model = make_model(TinyLM, vocab, dim, data)
  fit_curve(model, data, 3)
  h = np.asarray(model.hidden(data["ids"]))
  e = np.array(model.softmax.embeddings.value)  # a copy: Keras's steps donate the buffers
  # evaluate: the layer's loss without label smoothing (not training).
  want = gshard_op.shared_embedding_softmax(
      h, e, data["weights"], class_ids=data["targets"], implementation="reference",
      z_loss_weight=OPTIONS["z_loss_weight"])
  loss = model.evaluate(data, batch_size=6, verbose=0)
  np.testing.assert_allclose(loss, want.total_xent / want.avg_xent_weight + want.z_loss,
                             rtol=1e-5)
  smoothed = gshard_op.shared_embedding_softmax(
      h, e, data["weights"], class_ids=data["targets"], implementation="reference", **OPTIONS)
  assert abs(float(smoothed.avg_xent) - float(want.avg_xent)) > 1e-3  # smoothing matters
  # predict: logits from ids alone, in batches.
  logits = model.predict({"ids": data["ids"]}, batch_size=4, verbose=0)
  assert logits.shape == (6, 10, vocab)
  np.testing.assert_allclose(logits, want.logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(logits.argmax(-1), want.per_example_argmax)


def test_keras_file_round_trip(rng, tmp_path):
  vocab, dim = 97, 12
  options = dict(soft_cap_logits=4.0, **OPTIONS)
  data = lm_data(rng, 4, 8, vocab)
  model = make_model(TinyLM, vocab, dim, data, options)
  fit_curve(model, data, 2)
  path = str(tmp_path / "tiny_lm.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert isinstance(loaded, TinyLM) and isinstance(loaded.softmax, GShardSharedEmbeddingSoftmax)
  unnamed = lambda layer: {k: v for k, v in layer.get_config().items() if k != "name"}
  assert unnamed(loaded.softmax) == unnamed(model.softmax)
  for a, b in zip(loaded.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(a, b)
  ids = {"ids": data["ids"]}
  np.testing.assert_array_equal(loaded.predict(ids, verbose=0), model.predict(ids, verbose=0))
  assert loaded.evaluate(data, verbose=0) == model.evaluate(data, verbose=0)
  # The optimizer state came along: one more step gives the same loss.
  assert fit_curve(loaded, data, 2).tolist() == fit_curve(model, data, 2).tolist()


def test_mixed_bfloat16(rng, bf16_policy):
  vocab, dim = 97, 16
  data = lm_data(rng, 4, 12, vocab)
  ours = make_model(TinyLM, vocab, dim, data)
  reference = make_model(TinyLM, vocab, dim, data, {**OPTIONS, "implementation": "reference"},
                         ours.get_weights())
  layer = ours.softmax
  assert layer.compute_dtype == "bfloat16" and layer.embeddings.dtype == "float32"
  out = layer(ours.hidden(data["ids"]), data["weights"], class_ids=data["targets"])
  assert out["logits"].dtype == jnp.bfloat16 and out["per_example_xent"].dtype == jnp.bfloat16
  assert out["total_xent"].dtype == jnp.float32 and layer.losses[0].dtype == jnp.float32
  got, want = fit_curve(ours, data, 10), fit_curve(reference, data, 10)
  assert np.all(np.isfinite(got)) and got[-1] < 0.9 * got[0], got
  np.testing.assert_allclose(got[0], want[0], rtol=1e-2)  # the same weights, bf16 rounding
  np.testing.assert_allclose(got, want, rtol=5e-2)
  assert all(w.dtype == "float32" for w in ours.weights)


# --- the compiled train step at the shape --------------------------------

def test_train_step_memory_vs_dense_tied_softmax():
  shape = dict(batch=8, seq=128, dim=64, vocab=32768)  # N=1024, M=64, V=32768
  rows = {kind: keras_memory.measure(kind, **shape) for kind in ("dense", "layer")}
  assert rows["dense"]["has_tokens_by_vocab"] and not rows["layer"]["has_tokens_by_vocab"], rows
  assert rows["layer"]["temp_bytes"] * 8 <= rows["dense"]["temp_bytes"], rows


def test_gshard_jit_trainer(rng):
  vocab, dim = 4099, 16
  data = lm_data(rng, 4, 16, vocab)
  fused = make_model(FusedTinyLM, vocab, dim, data)
  reference = make_model(TinyLM, vocab, dim, data, {**OPTIONS, "implementation": "reference"},
                         fused.get_weights())
  # fit's step went through the pipeline: one fused sweep, no composite left.
  lowered = lowered_train_step(fused, data)
  text = lowered.as_text()
  assert re.search(r'gshard\.plan = "gshard-fuse-fwd-bwd', text) and "composite" not in text
  assert largest_tensor(lowered.compile()) < 64 * vocab
  assert "gshard-fuse-fwd-bwd" not in lowered_train_step(reference, data).as_text()

  got, want = fit_curve(fused, data, 5), fit_curve(reference, data, 5)
  np.testing.assert_allclose(got, want, rtol=1e-4)
  loss = fused.evaluate(data, verbose=0)  # the test step compiles with gshard_op.jit too
  np.testing.assert_allclose(loss, reference.evaluate(data, verbose=0), rtol=1e-4)


def _tensorflow_configs(home) -> list[str]:
  return [str(p) for p in home.rglob("keras.json") if "tensorflow" in p.read_text()]


def test_collecting_the_keras_tests_leaves_no_keras_json(tmp_path):
  """`make test` imports Keras at collection (this module, test_entropy,
  test_private): with an empty HOME, no keras.json naming tensorflow remains."""
  base = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
       "tests/test_keras.py", "tests/test_entropy.py", "tests/test_private.py"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**base, "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert not _tensorflow_configs(tmp_path)


def test_keras_memory_tool_refuses_a_bogus_kind_and_leaves_no_keras_json(tmp_path):
  code = ("import runpy, sys\nsys.argv = ['keras_memory.py', '--kinds', 'dense,bogus']\n"
          "runpy.run_path('tools/keras_memory.py', run_name='__main__')\n")
  proc = _fresh_python(code, tmp_path)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "argument --kinds: unknown kind(s) ['bogus']" in proc.stderr, proc.stderr[-2000:]
  assert "KeyError" not in proc.stderr
  assert not _tensorflow_configs(tmp_path)


def test_package_version():
  from importlib import metadata
  assert gshard_op.__version__ == metadata.version("gshard-op")
