"""The Flax NNX layer `GShardSharedEmbeddingSoftmax`.

Its parameter (shape, dtype, Gaussian init, sharding metadata), the computation
dtype, the lookup, `get_logits`, `__call__` and its `SoftmaxOutput`, label
smoothing in training only, `nnx.jit` / `nnx.value_and_grad`, every argument
check, and a vocab-sharded model on 8 host devices (tests/conftest.py's).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gshard_op
import numpy_reference as npref
from arrays import assert_close, make_labels, make_weights
from conftest import assert_argmax_ok, seed_of
from gshard_op import GShardSharedEmbeddingSoftmax, SoftmaxOutput
from gshard_op.outputs import FIELDS

M, V = 16, 37


def make_layer(seed=0, in_features=M, num_classes=V, **kwargs):
  return GShardSharedEmbeddingSoftmax(in_features, num_classes, rngs=nnx.Rngs(seed), **kwargs)


def embedding_of(layer) -> np.ndarray:
  return np.asarray(layer.embedding[...])


def random_call_args(rng, batch=(3, 5), labels="ids", num_classes=V, in_features=M):
  inputs = (2.0 * rng.standard_normal(batch + (in_features,))).astype(np.float32)
  class_ids, class_probabilities = make_labels(rng, batch, num_classes, labels)
  weights = make_weights(rng, batch, "random_with_zeros")
  return inputs, weights, class_ids, class_probabilities


# --- the parameter ------------------------------------------------------------------

def test_embedding_is_a_float32_param_of_shape_v_by_m():
  layer = make_layer()
  assert isinstance(layer.embedding, nnx.Param)
  assert layer.embedding.shape == (V, M)
  assert layer.embedding.dtype == jnp.float32
  params = nnx.state(layer, nnx.Param)
  leaves = jax.tree.leaves(params)
  assert len(leaves) == 1 and leaves[0].shape == (V, M), "one weight, no bias"


def test_embedding_sharding_metadata():
  """`embedding_metadata` and `nnx.with_partitioning` both annotate the
  parameter; `nnx.get_partition_spec` reads the spec back. (Placement on a mesh
  is checked on 8 devices below; here eager sharding is off, as no mesh is set.)"""
  spec = jax.sharding.PartitionSpec("vocab", None)
  with nnx.use_eager_sharding(False):
    by_metadata = make_layer(embedding_metadata={"out_sharding": ("vocab", None)})
    by_init = make_layer(embedding_init=nnx.with_partitioning(
        nnx.initializers.normal(stddev=1.0), ("vocab", None)))
  for layer in (by_metadata, by_init):
    assert layer.embedding.out_sharding == ("vocab", None)
    assert nnx.get_partition_spec(nnx.state(layer))["embedding"].get_value() == spec
  np.testing.assert_array_equal(embedding_of(by_init), embedding_of(make_layer()))
  np.testing.assert_array_equal(embedding_of(by_metadata), embedding_of(make_layer()))
  assert nnx.get_partition_spec(nnx.state(make_layer()))["embedding"].get_value() == (
      jax.sharding.PartitionSpec())


def test_promote_dtype_is_used(rng):
  """A custom `promote_dtype` (Flax's hook) decides the computation dtype."""
  calls = []

  def to_bfloat16(args, *, dtype=None):
    calls.append((tuple(None if a is None else jnp.asarray(a).dtype for a in args), dtype))
    return tuple(None if a is None else jnp.asarray(a, jnp.bfloat16) for a in args)

  layer = make_layer(promote_dtype=to_bfloat16)
  inputs, weights, ids, _ = random_call_args(rng)
  assert layer(inputs, weights, class_ids=ids).per_example_xent.dtype == jnp.bfloat16
  assert layer.get_logits(inputs).dtype == jnp.bfloat16
  assert layer.emb_lookup(ids[..., 0]).dtype == jnp.bfloat16
  assert calls == [((jnp.float32, jnp.float32), None)] * 2 + [((jnp.float32,), None)]


def test_param_dtype():
  layer = make_layer(param_dtype=jnp.bfloat16)
  assert layer.embedding.dtype == jnp.bfloat16


def test_gaussian_init_statistics():
  """Mean 0 and std 1 within 5 standard errors of the sample size; Gaussian
  shape (mass within one and two std); seeds give different draws."""
  layer = make_layer(seed=3, in_features=256, num_classes=512)
  e = embedding_of(layer).astype(np.float64).ravel()
  n = e.size
  assert abs(e.mean()) < 5 / np.sqrt(n)  # std error of the mean: 1/sqrt(n)
  assert abs(e.std() - 1.0) < 5 / np.sqrt(2 * n)  # std error of the std: 1/sqrt(2n)
  for k, p in ((1, 0.682689), (2, 0.954500)):
    frac = np.mean(np.abs(e) < k)
    assert abs(frac - p) < 5 * np.sqrt(p * (1 - p) / n), (k, frac)
  other = embedding_of(make_layer(seed=4, in_features=256, num_classes=512))
  assert not np.array_equal(other, embedding_of(layer))
  np.testing.assert_array_equal(
      embedding_of(make_layer(seed=3, in_features=256, num_classes=512)), embedding_of(layer))


# --- emb_lookup and get_logits -------------------------------------------------------------

@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 1, 4)], ids=str)
def test_emb_lookup_rows(shape, rng):
  layer = make_layer()
  ids = rng.integers(0, V, size=shape).astype(np.int32)
  rows = layer.emb_lookup(ids)
  assert rows.shape == shape + (M,) and rows.dtype == jnp.float32
  np.testing.assert_array_equal(rows, embedding_of(layer)[ids])


def test_emb_lookup_out_of_range_and_negative_ids_give_zero_rows():
  layer = make_layer()
  ids = np.array([[0, V - 1, V, V + 7], [-1, -V, 2**30, 5]], np.int32)
  rows = np.asarray(layer.emb_lookup(ids))
  e = embedding_of(layer)
  np.testing.assert_array_equal(rows[0, 0], e[0])
  np.testing.assert_array_equal(rows[0, 1], e[V - 1])
  np.testing.assert_array_equal(rows[1, 3], e[5])
  for i, j in ((0, 2), (0, 3), (1, 0), (1, 1), (1, 2)):
    np.testing.assert_array_equal(rows[i, j], 0.0, err_msg=f"id {ids[i, j]}")


def test_emb_lookup_int64_and_jitted():
  layer = make_layer()
  ids = np.array([1, 4, V], np.int64)
  rows = nnx.jit(lambda l, i: l.emb_lookup(i))(layer, ids)
  np.testing.assert_array_equal(rows[:2], embedding_of(layer)[[1, 4]])
  np.testing.assert_array_equal(rows[2], 0.0)


@pytest.mark.parametrize("options", [
    {}, dict(soft_cap_logits=2.0), dict(logits_abs_max=1.0),
    dict(soft_cap_logits=3.0, logits_abs_max=2.0)], ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("batch", [(), (6,), (2, 3, 4)], ids=lambda b: "batch" + str(list(b)))
def test_get_logits(options, batch, rng):
  layer = make_layer(seed=1, **options)
  x = (2.5 * rng.standard_normal(batch + (M,))).astype(np.float32)
  logits = layer.get_logits(x)
  assert logits.shape == batch + (V,) and logits.dtype == jnp.float32
  want = npref.final_logits(npref.raw_logits(x, embedding_of(layer)), npref.Options(**options))
  assert_close(logits, want, np.float32, "get_logits")


# --- __call__ --------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", ["ids", "probs"])
def test_call_returns_softmax_output_with_every_field(labels, rng):
  options = dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1,
                 label_smoothing_prob=0.1, use_tgt_labels_size_as_loss_denominator=False)
  layer = make_layer(seed=2, **options)
  inputs, weights, ids, probs = random_call_args(rng, labels=labels)
  out = layer(inputs, weights, class_ids=ids, class_probabilities=probs)
  assert isinstance(out, SoftmaxOutput)
  assert tuple(out.keys()) == FIELDS
  expected = npref.forward(inputs, embedding_of(layer), weights, ids, probs,
                           npref.Options(**options))
  for name in FIELDS:
    assert getattr(out, name) is out[name], name
    if name == "per_example_argmax":
      assert_argmax_ok(out[name], expected["logits"], tol=1e-4 * 3, what=name)
    else:
      assert_close(out[name], expected[name], np.float32, name)
  with pytest.raises(AttributeError, match="no field 'nope'"):
    out.nope  # noqa: B018
  with pytest.raises(AttributeError, match="read-only"):
    out.avg_xent = 0.0
  leaves = jax.tree.leaves(out)
  assert len(leaves) == len(FIELDS)


def test_compute_dtype_bfloat16(rng):
  """`dtype=bfloat16`: the float32 parameter and inputs are cast to bf16 for the
  computation; outputs follow bf16; gradients reach the float32 parameter."""
  layer = make_layer(seed=5, dtype=jnp.bfloat16, z_loss_weight=0.1)
  assert layer.embedding.dtype == jnp.float32
  inputs, weights, ids, _ = random_call_args(rng)
  out = layer(inputs, weights, class_ids=ids)
  for name in ("logits", "log_probs", "per_example_xent"):
    assert out[name].dtype == jnp.bfloat16, name
  for name in ("avg_xent", "total_xent", "z_loss"):  # scalar losses: float32 (issue 28)
    assert out[name].dtype == jnp.float32, name
  x16 = npref.as_f64(jnp.asarray(inputs, jnp.bfloat16))
  e16 = npref.as_f64(jnp.asarray(embedding_of(layer), jnp.bfloat16))
  opts = npref.Options(z_loss_weight=0.1)
  expected = npref.forward(x16, e16, weights, ids, opts=opts)
  for name in ("logits", "log_probs", "per_example_xent", "total_xent", "avg_xent", "z_loss"):
    assert_close(out[name], expected[name], jnp.bfloat16, name)
  assert layer.get_logits(inputs).dtype == jnp.bfloat16
  assert layer.emb_lookup(ids[..., 0]).dtype == jnp.bfloat16

  def loss(l):
    o = l(inputs, weights, class_ids=ids)
    return o.avg_xent.astype(jnp.float32) + o.z_loss

  grads = nnx.grad(loss)(layer)
  assert grads.embedding.dtype == jnp.float32
  _, want = npref.loss_grads("avg_xent_plus_z_loss", x16, e16, weights, ids, opts=opts)
  assert_close(grads.embedding[...], want, jnp.bfloat16, "d_embedding (bf16 compute)", kind="grads")


def test_label_smoothing_only_in_training(rng):
  p = 0.2
  layer = make_layer(seed=6, label_smoothing_prob=p)
  inputs, weights, _, _ = random_call_args(rng)
  e = embedding_of(layer)
  # Each token's label is its most likely class, so that the two modes differ on
  # every token by construction, whatever the draw: smoothing moves mass from the
  # label to every class, which adds p * (max logit - mean logit) to the token's
  # cross-entropy (about 0.8 here: logits of std 2 over 37 classes).
  logits = npref.raw_logits(inputs, e)
  ids = logits.argmax(-1)[..., None].astype(np.int32)
  smoothed = npref.forward(inputs, e, weights, ids, opts=npref.Options(label_smoothing_prob=p))
  plain = npref.forward(inputs, e, weights, ids)
  gap = smoothed["per_example_xent"] - plain["per_example_xent"]
  np.testing.assert_allclose(gap, p * (logits.max(-1) - logits.mean(-1)), rtol=1e-9)
  assert gap.min() > 0.05, gap  # the two are distinguishable on every token
  assert abs(smoothed["avg_xent"] - plain["avg_xent"]) > 0.05

  def xent(**kw):
    return layer(inputs, weights, class_ids=ids, **kw).per_example_xent

  assert layer.deterministic is False
  assert_close(xent(), smoothed["per_example_xent"], np.float32, "train")
  assert_close(xent(deterministic=True), plain["per_example_xent"], np.float32,
               "deterministic=True argument")
  layer.eval()
  assert layer.deterministic is True
  assert_close(xent(), plain["per_example_xent"], np.float32, "eval()")
  assert_close(xent(deterministic=False), smoothed["per_example_xent"], np.float32,
               "deterministic=False argument overrides eval()")
  layer.train()
  assert layer.deterministic is False
  assert_close(xent(), smoothed["per_example_xent"], np.float32, "train() again")
  assert_close(
      make_layer(seed=6, label_smoothing_prob=p, deterministic=True)(
          inputs, weights, class_ids=ids).per_example_xent,
      plain["per_example_xent"], np.float32, "deterministic=True at construction")


@pytest.mark.parametrize("implementation", ["composite", "reference"])
def test_nnx_jit_and_value_and_grad(implementation, rng):
  """A training step under `nnx.jit` with `nnx.value_and_grad` of the layer:
  loss and parameter gradient equal the float64 model; eval mode retraces."""
  opts = dict(soft_cap_logits=3.0, z_loss_weight=0.05, label_smoothing_prob=0.1)
  layer = make_layer(seed=7, implementation=implementation, **opts)
  inputs, weights, ids, _ = random_call_args(rng, batch=(4, 6))

  @nnx.jit
  def step(layer, inputs):
    def loss_fn(layer, inputs):
      out = layer(inputs, weights, class_ids=ids)
      return out.avg_xent + out.z_loss
    return nnx.value_and_grad(loss_fn, argnums=(0, 1))(layer, inputs)

  loss, (grads, d_inputs) = step(layer, inputs)
  e = embedding_of(layer)
  train_opts = npref.Options(**opts)
  expected = npref.forward(inputs, e, weights, ids, opts=train_opts)
  assert_close(loss, expected["avg_xent"] + expected["z_loss"], np.float32, "loss")
  want_x, want_e = npref.loss_grads("avg_xent_plus_z_loss", inputs, e, weights, ids,
                                    opts=train_opts)
  assert isinstance(grads.embedding, nnx.Param)
  assert_close(grads.embedding[...], want_e, np.float32, "d_embedding", kind="grads")
  assert_close(d_inputs, want_x, np.float32, "d_inputs", kind="grads")

  layer.eval()
  eval_loss, _ = step(layer, inputs)
  eval_opts = npref.Options(**{**opts, "label_smoothing_prob": 0.0})
  expected = npref.forward(inputs, e, weights, ids, opts=eval_opts)
  assert_close(eval_loss, expected["avg_xent"] + expected["z_loss"], np.float32,
               "loss in eval mode")

  # A plain SGD update through nnx: the parameter moves by -lr * grad.
  layer.train()
  lr = 0.5
  nnx.update(layer, jax.tree.map(lambda p, g: p - lr * g, nnx.state(layer, nnx.Param),
                                 nnx.state(grads, nnx.Param)))
  np.testing.assert_allclose(embedding_of(layer), e - lr * np.asarray(grads.embedding[...]),
                             rtol=1e-6)


# --- the functional op's options= and its labels -------------------------------------------

def test_options_object_equals_the_keywords(rng):
  """`options=SoftmaxOptions(...)` gives what the same keywords give, and the
  layer hands its own `options` to the functional op (smoothing dropped when
  deterministic)."""
  opts = dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.05,
              label_smoothing_prob=0.1, use_tgt_labels_size_as_loss_denominator=False,
              precision="highest")
  layer = make_layer(seed=11, **opts)
  assert layer.options == gshard_op.SoftmaxOptions(**opts)
  inputs, weights, ids, _ = random_call_args(rng)
  e = layer.embedding[...]
  by_keywords = gshard_op.shared_embedding_softmax(inputs, e, weights, ids, **opts)
  by_object = gshard_op.shared_embedding_softmax(inputs, e, weights, ids,
                                                 options=gshard_op.SoftmaxOptions(**opts))
  for name in FIELDS:
    np.testing.assert_array_equal(by_object[name], by_keywords[name], err_msg=name)
  np.testing.assert_array_equal(layer(inputs, weights, class_ids=ids).avg_xent,
                                by_keywords.avg_xent)
  evaluation = gshard_op.shared_embedding_softmax(
      inputs, e, weights, ids, **{**opts, "label_smoothing_prob": 0.0})
  np.testing.assert_array_equal(layer(inputs, weights, class_ids=ids, deterministic=True).avg_xent,
                                evaluation.avg_xent)


def test_options_object_and_keywords_together_are_refused(rng):
  inputs, weights, ids, _ = random_call_args(rng)
  e = make_layer().embedding[...]
  options = gshard_op.SoftmaxOptions(z_loss_weight=0.1)
  with pytest.raises(ValueError, match=r"options= and the option keywords \['soft_cap_logits', "
                                       r"'precision'\] were both given"):
    gshard_op.shared_embedding_softmax(inputs, e, weights, ids, options=options,
                                       soft_cap_logits=1.0, precision="high")
  with pytest.raises(TypeError, match="options must be a gshard_op.SoftmaxOptions, got dict"):
    gshard_op.shared_embedding_softmax(inputs, e, weights, ids, options={"z_loss_weight": 0.1})
  # Keywords at their defaults are not a second set of options.
  out = gshard_op.shared_embedding_softmax(inputs, e, weights, ids, options=options,
                                           z_loss_weight=0.0, precision=None)
  assert float(out.z_loss) > 0


def test_labels_as_a_list_of_traced_scalars_under_jit(rng):
  """Ids given as a Python list of traced scalars (a pytree argument of a
  jitted function) work, as an array of the same ids does (issue 20, 11b)."""
  e = make_layer(seed=12).embedding[...]
  inputs, weights, ids, _ = random_call_args(rng, batch=(5,))
  ids = np.asarray(ids).reshape(5)

  @jax.jit
  def avg_xent(inputs, id_list):
    return gshard_op.shared_embedding_softmax(inputs, e, weights, id_list).avg_xent

  want = gshard_op.shared_embedding_softmax(inputs, e, weights, ids).avg_xent
  got = avg_xent(inputs, [jnp.int32(i) for i in ids])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  nested = jax.jit(lambda x, rows: gshard_op.shared_embedding_softmax(
      x, e, weights, rows).avg_xent)(inputs, [[jnp.int32(i)] for i in ids])  # [5, 1]
  np.testing.assert_allclose(nested, want, rtol=1e-6)
  with pytest.raises(TypeError, match="class_ids must be integers"):
    avg_xent(inputs, [jnp.float32(i) for i in ids])


# --- argument checks ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def layer():
  return make_layer(seed=8)


@pytest.fixture
def args(rng):
  inputs, weights, ids, _ = random_call_args(rng, batch=(7,))
  return inputs, weights, ids


def test_neither_labels(layer, args):
  inputs, weights, _ = args
  with pytest.raises(ValueError, match="exactly one of class_ids and class_probabilities.*neither"):
    layer(inputs, weights)


def test_both_labels(layer, args):
  inputs, weights, ids = args
  probs = np.full((7, V), 1.0 / V, np.float32)
  with pytest.raises(ValueError, match="exactly one of class_ids and class_probabilities.*both"):
    layer(inputs, weights, class_ids=ids, class_probabilities=probs)


def test_inputs_last_dim(layer, args):
  _, weights, ids = args
  with pytest.raises(ValueError, match=r"inputs must be \[\.\.\., in_features=16\], got \[7, 15\]"):
    layer(np.zeros((7, M - 1), np.float32), weights, class_ids=ids)
  with pytest.raises(ValueError, match=r"inputs must be \[\.\.\., in_features=16\]"):
    layer.get_logits(np.zeros((7, M + 1), np.float32))


def test_inputs_must_be_float(args):
  _, weights, ids = args
  layer = make_layer(seed=8, dtype=None)
  with pytest.raises(TypeError, match="inputs must be floating point"):
    gshard_op.shared_embedding_softmax(np.zeros((7, M), np.int32), layer.embedding[...],
                                       weights, ids)


def test_class_ids_not_integer(layer, args):
  inputs, weights, ids = args
  with pytest.raises(TypeError, match="class_ids must be integers, got float32"):
    layer(inputs, weights, class_ids=ids.astype(np.float32))


@pytest.mark.parametrize("shape", [(7, 2), (6, 1), (1, 7), (7, 1, 1), ()], ids=str)
def test_class_ids_wrong_shape(layer, args, shape):
  inputs, weights, _ = args
  with pytest.raises(ValueError, match=r"class_ids must have shape \[7, 1\] \(or \[7\]\)"):
    layer(inputs, weights, class_ids=np.zeros(shape, np.int32))


@pytest.mark.parametrize("shape", [(7, V - 1), (7, V + 1), (7, 1), (V,)], ids=str)
def test_class_probabilities_wrong_shape(layer, args, shape):
  inputs, weights, _ = args
  with pytest.raises(ValueError, match=r"class_probabilities must have shape \[7, 37\]"):
    layer(inputs, weights, class_probabilities=np.zeros(shape, np.float32))


def test_class_probabilities_not_float(layer, args):
  inputs, weights, _ = args
  with pytest.raises(TypeError, match="class_probabilities must be floating point"):
    layer(inputs, weights, class_probabilities=np.zeros((7, V), np.int32))


@pytest.mark.parametrize("shape", [(7,), (6, 1), (7, 2), (2, 7, 1), (3,)], ids=str)
def test_class_weights_not_broadcastable(layer, args, shape):
  inputs, _, ids = args
  with pytest.raises(ValueError, match=r"class_weights of shape .* does not broadcast to \[7, 1\]"):
    layer(inputs, np.ones(shape, np.float32), class_ids=ids)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (7, 1)], ids=str)
def test_class_weights_broadcastable_shapes_accepted(layer, args, shape):
  inputs, _, ids = args
  out = layer(inputs, np.full(shape, 0.5, np.float32), class_ids=ids)
  np.testing.assert_array_equal(out.per_example_weight, np.full((7, 1), 0.5, np.float32))
  assert float(out.total_weight) == pytest.approx(3.5)


@pytest.mark.parametrize("name, bad", [
    ("in_features", 0), ("in_features", -3), ("in_features", 2.0), ("in_features", True),
    ("num_classes", 0), ("num_classes", -1), ("num_classes", None)])
def test_non_positive_sizes(name, bad):
  sizes = dict(in_features=M, num_classes=V)
  sizes[name] = bad
  with pytest.raises(ValueError, match=f"{name} must be a positive int"):
    GShardSharedEmbeddingSoftmax(sizes["in_features"], sizes["num_classes"], rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name, bad, error", [
    ("soft_cap_logits", -1.0, ValueError), ("logits_abs_max", -0.5, ValueError),
    ("z_loss_weight", -1e-4, ValueError), ("label_smoothing_prob", -0.1, ValueError),
    ("label_smoothing_prob", 1.5, ValueError), ("soft_cap_logits", float("nan"), ValueError),
    ("logits_abs_max", float("inf"), ValueError), ("z_loss_weight", "0.1", TypeError),
    ("soft_cap_logits", True, TypeError)])
def test_bad_options(name, bad, error):
  with pytest.raises(error, match=name):
    make_layer(**{name: bad})
  with pytest.raises(error, match=name):
    gshard_op.shared_embedding_softmax(np.zeros((2, M), np.float32), np.zeros((V, M), np.float32),
                                       np.ones((2, 1), np.float32), np.zeros((2, 1), np.int32),
                                       **{name: bad})


def test_bad_implementation_name(args):
  inputs, weights, ids = args
  with pytest.raises(ValueError, match="implementation must be one of .*'fused'"):
    make_layer(implementation="fused")  # rejected when the layer is built
  layer = make_layer()
  with pytest.raises(ValueError, match="implementation must be one of"):
    gshard_op.shared_embedding_softmax(inputs, layer.embedding[...], weights, ids,
                                       implementation="dense")


def test_emb_lookup_ids_not_integer(layer):
  with pytest.raises(TypeError, match="ids must be integers"):
    layer.emb_lookup(np.zeros((3,), np.float32))


def test_errors_raise_under_nnx_jit(layer, args):
  inputs, weights, _ = args

  @nnx.jit
  def f(layer, inputs, ids):
    return layer(inputs, weights, class_ids=ids).avg_xent

  with pytest.raises(ValueError, match="class_ids must have shape"):
    f(layer, inputs, np.zeros((7, 2), np.int32))


# --- vocab-sharded on 8 host devices ------------------------------------------------------

SHARDED_V = 64  # V / 4 = 16 classes a shard
SHARDED_OPTIONS = dict(soft_cap_logits=3.0, z_loss_weight=0.05, label_smoothing_prob=0.1,
                       use_tgt_labels_size_as_loss_denominator=False)


@functools.cache
def _sharded() -> dict:
  """A layer built inside `jax.set_mesh` on a ("data", "vocab") = (2, 4) mesh
  with its embedding annotated ("vocab", None): placed on the mesh at once,
  trained under `nnx.jit` (parameters constrained to `nnx.get_partition_spec`)
  and under `gshard_op.jit` (the default pipeline, with `gshard-shard-vocab`),
  against the same layer unsharded on one device. Returns the checks by name,
  built once for the four tests."""
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  rng = np.random.default_rng(seed_of("test_nnx::sharded"))
  inputs, weights, ids, _ = random_call_args(rng, batch=(4, 6), num_classes=SHARDED_V)
  mesh = jax.make_mesh((2, 4), ("data", "vocab"), axis_types=(AxisType.Auto,) * 2)
  vocab = NamedSharding(mesh, P("vocab", None))
  plain = make_layer(seed=9, num_classes=SHARDED_V, **SHARDED_OPTIONS)
  with jax.set_mesh(mesh):
    sharded = make_layer(seed=9, num_classes=SHARDED_V,
                         embedding_metadata={"out_sharding": ("vocab", None)},
                         **SHARDED_OPTIONS)
    by_init = make_layer(seed=9, num_classes=SHARDED_V, embedding_init=nnx.with_partitioning(
        nnx.initializers.normal(stddev=1.0), ("vocab", None)), **SHARDED_OPTIONS)
  tokens = NamedSharding(mesh, P("data"))
  placed = [jax.device_put(a, tokens) for a in (inputs, weights, ids)]

  def loss_fn(layer, x, w, i):
    out = layer(x, w, class_ids=i)
    return out.avg_xent + out.z_loss

  @nnx.jit
  def nnx_step(layer, x, w, i):
    state = nnx.state(layer)
    nnx.update(layer, jax.lax.with_sharding_constraint(
        state, nnx.get_named_sharding(state, mesh)))
    return nnx.value_and_grad(loss_fn, argnums=(0, 1))(layer, x, w, i)

  want_loss, (want_grads, want_dx) = nnx_step(plain, inputs, weights, ids)
  want_de = np.asarray(want_grads.embedding[...])
  e = embedding_of(plain)

  def check(loss, d_e, d_x, what):
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6, err_msg=f"{what} loss")
    np.testing.assert_allclose(d_e, want_de, rtol=1e-5, atol=1e-7, err_msg=f"{what} d_e")
    np.testing.assert_allclose(d_x, want_dx, rtol=1e-5, atol=1e-7, err_msg=f"{what} d_x")

  def placement():
    for layer in (sharded, by_init):
      assert layer.embedding[...].sharding.is_equivalent_to(vocab, 2), layer.embedding[...].sharding
      assert nnx.get_partition_spec(nnx.state(layer))["embedding"].get_value() == P("vocab", None)
      np.testing.assert_array_equal(embedding_of(layer), e)

  def numpy_model():
    opts = npref.Options(**SHARDED_OPTIONS)
    expected = npref.forward(inputs, e, weights, ids, opts=opts)
    assert_close(want_loss, expected["avg_xent"] + expected["z_loss"], np.float32, "loss")
    want_x, want_e = npref.loss_grads("avg_xent_plus_z_loss", inputs, e, weights, ids, opts=opts)
    assert_close(want_de, want_e, np.float32, "d_embedding", kind="grads")
    assert_close(want_dx, want_x, np.float32, "d_inputs", kind="grads")

  def under_nnx_jit():
    loss, (grads, d_x) = nnx_step(sharded, *placed)
    d_e = grads.embedding[...]
    assert d_e.sharding.is_equivalent_to(vocab, 2), d_e.sharding
    check(loss, d_e, d_x, "nnx.jit")

  def under_gshard_jit():
    graphdef, state = nnx.split(sharded)

    def loss(state, x, w, i):
      return loss_fn(nnx.merge(graphdef, state), x, w, i)

    step = gshard_op.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    lowered = step.lower(state, *placed)
    text = lowered.as_text()
    assert "stablehlo.composite" not in text and "sdy.manual_computation" in text
    assert "all-gather" not in lowered.compile().as_text()
    value, (grads, d_x) = step(state, *placed)
    check(value, grads["embedding"][...], d_x, "gshard_op.jit")

  return {"placement": placement, "numpy_model": numpy_model, "nnx_jit": under_nnx_jit,
          "gshard_jit": under_gshard_jit}


@pytest.mark.parametrize("name", ["placement", "numpy_model", "nnx_jit", "gshard_jit"])
def test_vocab_sharded_layer(host_devices, name):
  """On a (2, 4) mesh with the embedding over "vocab": the parameter is placed
  by its metadata; loss and gradients under `nnx.jit` and `gshard_op.jit`
  equal the unsharded layer's (which equal the float64 model)."""
  _sharded()[name]()
