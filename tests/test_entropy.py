"""`per_example_entropy`: the policy's entropy per token, without the logits.

`with_entropy=True` adds `per_example_entropy = logsumexp(z) - sum(softmax(z) *
z)` over the final logits (after scale, cap, clip and temperature), computed
in the same sweep as the loss and differentiable. Every route is checked
against the float64 NumPy model, values and gradients of a loss mixing
`per_example_xent`, `per_example_entropy` and `z_loss` with arbitrary per-token
cotangents (as a GRPO-style loss does); `-inf` logits give a one-hot
distribution entropy 0, and no NaN anywhere. The vocab-sharded routes run on 8 host
devices (tests/conftest.py's).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

OPTION_SETS = {
    "plain": {},
    "tempered": dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1,
                     label_smoothing_prob=0.1, temperature=0.7),
}
PIPELINES = {
    "default pipeline": None,
    "chunk, tiny budget": "gshard-chunk-softmax{memory-budget-mib=0.0005}",
    "fuse, token blocks": "gshard-fuse-fwd-bwd{token-chunk=5},gshard-chunk-softmax",
    "pallas interpret": ("gshard-pallas{platform=interpret block-tokens=8 block-vocab=16},"
                         "gshard-chunk-softmax"),
    "pallas interpret, feature blocks": (
        "gshard-pallas{platform=interpret block-tokens=8 block-vocab=16 block-features=8 "
        "block-grad-features=8},gshard-chunk-softmax"),
}


def _loss(case, options, coeffs, label):
  import jax.numpy as jnp

  import gshard_op

  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, case.class_weights, **label, **options,
                                             with_entropy=True)
    value = (out.avg_xent + out.z_loss + jnp.sum(coeffs[0] * out.per_example_xent)
             + jnp.sum(coeffs[1] * out.per_example_entropy))
    return value, (out.per_example_entropy, out.per_example_xent)
  return loss


def _check(case, options, coeffs, label, result):
  """`result = ((value, (entropy, xent)), (d_x, d_e))` against float64."""
  import numpy_reference as npref
  from arrays import assert_close
  from conftest import np_options

  opts = npref.Options(**{**np_options(options).__dict__, "with_entropy": True})
  ref = npref.forward(case.inputs, case.embedding, case.class_weights, opts=opts, **label)
  (value, (entropy, xent)), (d_x, d_e) = result
  assert_close(entropy, ref["per_example_entropy"], np.float32, "per_example_entropy")
  assert_close(xent, ref["per_example_xent"], np.float32, "per_example_xent")
  assert_close(value, ref["avg_xent"] + ref["z_loss"]
               + np.sum(coeffs[0] * ref["per_example_xent"])
               + np.sum(coeffs[1] * ref["per_example_entropy"]), np.float32, "loss")
  cot = npref.loss_cotangents("avg_xent_plus_z_loss", case.inputs, case.embedding,
                              case.class_weights, opts=opts, **label)
  cot["g_xent"] = cot["g_xent"] + coeffs[0]
  want_x, want_e = npref.backward(case.inputs, case.embedding, opts=opts, **label, **cot,
                                  g_entropy=coeffs[1])
  assert_close(d_x, want_x, np.float32, "d_x", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_e", kind="grads")


def _case(rng, labels, batch=(3, 8), num_classes=40):
  from arrays import make_arrays
  case = make_arrays(rng, batch=batch, in_features=16, num_classes=num_classes, labels=labels)
  coeffs = rng.standard_normal((2,) + case.batch).astype(np.float32)
  label = (dict(class_ids=case.class_ids) if labels != "probs"
           else dict(class_probabilities=case.class_probabilities))
  return case, coeffs, label


# --- one device ---------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["plain jax.jit", "reference", *PIPELINES])
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
@pytest.mark.parametrize("labels", ["ids_out_of_range", "probs"])
def test_values_and_gradients_equal_float64(rng, route, option_set, labels):
  import jax

  import gshard_op
  from conftest import KINK_MARGIN, clip_kink_gap, np_options

  options = OPTION_SETS[option_set]
  case, coeffs, label = _case(rng, labels)
  assert clip_kink_gap(case, np_options(options)) > KINK_MARGIN
  if route == "reference":
    options = {**options, "implementation": "reference"}
  step = jax.value_and_grad(_loss(case, options, coeffs, label), argnums=(0, 1), has_aux=True)
  if route in ("plain jax.jit", "reference"):
    compiled = jax.jit(step)
  else:
    compiled = gshard_op.jit(step, pipeline=PIPELINES[route])
    assert "stablehlo.composite" not in compiled.lower(case.inputs, case.embedding).as_text()
  _check(case, OPTION_SETS[option_set], coeffs, label, compiled(case.inputs, case.embedding))


def _infinite_logit_cases(rng):
  """Logits that overflow to `-inf` (float32 `-1e37 * 100 * M**-0.5`):

  * `one_hot`: row k of the embedding is -1e37 in every column but k and
    token i is `100 * e_i`, so every logit but token i's own is `-inf`: a
    one-hot softmax, entropy exactly 0;
  * `mixed`: tokens whose logits are `-inf` for some classes (rows of -1e37)
    and finite, of order 100, for the others.
  """
  from arrays import Case
  n = m = 8
  e = np.full((m + 4, m), -1e37, np.float32)
  e[np.arange(m), np.arange(m)] = 0.0
  x = (100.0 * np.eye(n, m)).astype(np.float32)
  ids = rng.integers(0, m + 4, (n, 1)).astype(np.int32)
  one_hot = Case(x, e, np.ones((n, 1), np.float32), ids, None)
  e2 = np.full((12, 4), -1e37, np.float32)
  e2[rng.permutation(12)[:7]] = rng.standard_normal((7, 4)).astype(np.float32)
  x2 = rng.uniform(50, 100, (n, 4)).astype(np.float32)
  mixed = Case(x2, e2, np.ones((n, 1), np.float32), ids % 12, None)
  return {"one_hot": one_hot, "mixed": mixed}


@pytest.mark.parametrize("kind", ["one_hot", "mixed"])
@pytest.mark.parametrize("route", ["plain jax.jit", "reference", *PIPELINES])
def test_infinite_logits_give_the_entropy_without_nan(rng, route, kind):
  import jax
  import jax.numpy as jnp

  import gshard_op
  import numpy_reference as npref

  case = _infinite_logit_cases(rng)[kind]
  implementation = "reference" if route == "reference" else "composite"

  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, case.class_weights, class_ids=case.class_ids,
                                             with_entropy=True, implementation=implementation)
    return jnp.sum(out.per_example_entropy), out.per_example_entropy

  step = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  compiled = (jax.jit(step) if route in ("plain jax.jit", "reference")
              else gshard_op.jit(step, pipeline=PIPELINES[route]))
  (_, entropy), (d_x, d_e) = compiled(case.inputs, case.embedding)
  # The float32 logits (float64 would not overflow), then float64 from there.
  z = np.asarray(gshard_op.shared_embedding_softmax(
      case.inputs, case.embedding, case.class_weights, class_ids=case.class_ids,
      implementation="reference").logits, np.float64)
  want = npref.entropy(z)
  assert np.all(np.isneginf(z) | np.isfinite(z)) and np.any(np.isneginf(z))
  assert not np.any(np.isnan(entropy)), entropy
  if kind == "one_hot":
    assert np.all(np.sum(np.isfinite(z), axis=-1) == 1)
    np.testing.assert_array_equal(entropy, 0.0)
  else:  # H = lse - E[z] cancels: float32 rounding of logits of order 100
    scale = np.max(np.abs(z[np.isfinite(z)]))
    np.testing.assert_allclose(entropy, want, atol=4e-6 * scale)
  assert np.all(np.isfinite(d_x)) and np.all(np.isfinite(d_e))


def test_not_asked_for_it_is_absent_and_costs_nothing(rng):
  """Without `with_entropy` the field is absent and the compiled step is the
  one it was; with it, at most a few `[N]`-sized buffers more."""
  import jax

  import gshard_op

  case, coeffs, label = _case(rng, "ids", batch=(256,), num_classes=4096)

  def step(with_entropy):
    def loss(x, e):
      out = gshard_op.shared_embedding_softmax(x, e, case.class_weights, **label,
                                               with_entropy=with_entropy)
      extra = out.per_example_entropy.sum() if with_entropy else 0.0
      return out.avg_xent + extra
    return jax.value_and_grad(loss, argnums=(0, 1))

  out = gshard_op.shared_embedding_softmax(case.inputs, case.embedding, case.class_weights,
                                           **label)
  assert "per_example_entropy" not in out
  with pytest.raises(AttributeError, match="with_entropy=True"):
    out.per_example_entropy
  n = case.inputs.shape[0]
  for route in (jax.jit, gshard_op.jit):
    temps = [route(step(flag)).lower(case.inputs, case.embedding).compile()
             .memory_analysis().temp_size_in_bytes for flag in (False, True)]
    assert temps[1] - temps[0] <= 8 * n * 4, (route, temps)
  text = jax.jit(step(False)).lower(case.inputs, case.embedding).as_text()
  assert "with_entropy" not in text


def test_the_composite_records_the_flag_and_the_extra_operands(rng):
  import jax

  import gshard_op
  from gshard_op import contract

  case, coeffs, label = _case(rng, "ids")
  with gshard_op.lowering("composite"):
    text = jax.jit(jax.grad(lambda x, e: gshard_op.shared_embedding_softmax(
        x, e, case.class_weights, **label, with_entropy=True).per_example_entropy.sum())).lower(
            case.inputs, case.embedding).as_text()
  lines = [l for l in text.splitlines() if "stablehlo.composite" in l]
  assert len(lines) == 2 and all(
      "with_entropy = true" in l and f"version = {contract.VERSION} " in l for l in lines), lines
  assert ":5 = stablehlo.composite" in lines[0]  # five forward results
  assert lines[1].count("%") >= 9  # nine gradient operands


# --- the front ends ---------------------------------------------------------------------------

def test_nnx_layer_returns_the_entropy(rng):
  import jax
  from flax import nnx

  import gshard_op

  case, _, label = _case(rng, "ids")
  layer = gshard_op.GShardSharedEmbeddingSoftmax(16, 40, temperature=0.7, with_entropy=True,
                                                 rngs=nnx.Rngs(0))
  out = jax.jit(lambda x: layer(x, case.class_weights, **label))(case.inputs)
  want = gshard_op.shared_embedding_softmax(
      case.inputs, layer.embedding[...], case.class_weights, **label, temperature=0.7,
      with_entropy=True, implementation="reference").per_example_entropy
  np.testing.assert_allclose(out.per_example_entropy, want, rtol=1e-5, atol=2e-5)


def test_keras_layer_returns_the_entropy_and_saves_the_options(rng):
  os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported
  keras = pytest.importorskip("gshard_op.keras").keras  # no keras.json left behind
  if keras.config.backend() != "jax":
    pytest.skip("Keras runs on another backend in this process")
  import gshard_op
  from gshard_op.keras import GShardSharedEmbeddingSoftmax

  case, _, label = _case(rng, "ids")
  layer = GShardSharedEmbeddingSoftmax(16, 40, temperature=0.7, with_entropy=True)
  out = layer(case.inputs, case.class_weights, **label)
  embedding = np.asarray(layer.embeddings.value)
  want = gshard_op.shared_embedding_softmax(
      case.inputs, embedding, case.class_weights, **label, temperature=0.7, with_entropy=True,
      implementation="reference").per_example_entropy
  np.testing.assert_allclose(out["per_example_entropy"], want, rtol=1e-5, atol=2e-5)
  predicted = layer(case.inputs)  # no labels: from the dense logits it returns anyway
  np.testing.assert_allclose(predicted["per_example_entropy"], want, rtol=1e-5, atol=1e-5)
  config = layer.get_config()
  assert config["temperature"] == 0.7 and config["with_entropy"] is True
  assert type(layer).from_config(config).options == layer.options


def _rl_loss_terms(rng):
  """Arrays of a small RL-style step: `(x, embedding, ids, weights)`."""
  n, m, v = 32, 16, 200
  return (rng.standard_normal((n, m)).astype(np.float32),
          rng.standard_normal((v, m)).astype(np.float32),
          rng.integers(0, v, (n, 1)).astype(np.int32), np.ones((n, 1), np.float32))


def test_grad_of_our_jit(rng):
  """`jax.grad(gshard_op.jit(loss))`: the composites under the pipeline, then
  differentiated from outside, equal the dense reference's gradients."""
  import jax

  import gshard_op
  from arrays import assert_close

  x, e, ids, w = _rl_loss_terms(rng)

  def loss(x, e, implementation="composite"):
    out = gshard_op.shared_embedding_softmax(x, e, w, class_ids=ids, temperature=0.7,
                                             with_entropy=True, implementation=implementation)
    return out.avg_xent - 0.1 * out.per_example_entropy.mean()

  got = jax.grad(gshard_op.jit(loss), argnums=(0, 1))(x, e)
  want = jax.grad(lambda x, e: loss(x, e, "reference"), argnums=(0, 1))(x, e)
  for a, b, what in zip(got, want, ("d_x", "d_e")):
    assert_close(a, b, np.float32, what, kind="grads")


def test_nnx_jit_training_with_entropy_follows_the_reference(rng):
  """An `nnx.jit` optax step on `avg_xent - 0.1 * mean(entropy)`: the op's
  loss curve equals the dense reference's."""
  import jax.numpy as jnp
  import optax
  from flax import nnx

  import gshard_op

  x, _, ids, w = _rl_loss_terms(rng)

  @nnx.jit
  def step(layer, optimizer):
    def loss(layer):
      out = layer(jnp.asarray(x), w, class_ids=ids)
      return out.avg_xent - 0.1 * out.per_example_entropy.mean()
    value, grads = nnx.value_and_grad(loss)(layer)
    optimizer.update(layer, grads)
    return value

  curves = []
  for implementation in ("composite", "reference"):
    layer = gshard_op.GShardSharedEmbeddingSoftmax(16, 200, temperature=0.7, with_entropy=True,
                                                   implementation=implementation,
                                                   rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(layer, optax.adam(1e-2), wrt=nnx.Param)
    curves.append([float(step(layer, optimizer)) for _ in range(4)])
  np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5)
  assert curves[0][-1] < curves[0][0], curves


def test_keras_fit_with_an_entropy_bonus_follows_the_reference(rng):
  """`model.fit` of a Keras model that adds `-0.1 * mean(entropy)` to the
  layer's own loss: the same loss history as the dense reference layer."""
  os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported
  keras = pytest.importorskip("gshard_op.keras").keras  # no keras.json left behind
  if keras.config.backend() != "jax":
    pytest.skip("Keras runs on another backend in this process")
  from gshard_op.keras import GShardSharedEmbeddingSoftmax

  class LM(keras.Model):
    def __init__(self, implementation):
      super().__init__()
      self.softmax = GShardSharedEmbeddingSoftmax(16, 200, temperature=0.7, with_entropy=True,
                                                  implementation=implementation)

    def call(self, batch, training=None):
      out = self.softmax(self.softmax.emb_lookup(batch["ids"]), class_ids=batch["targets"],
                         training=training)
      self.add_loss(-0.1 * keras.ops.mean(out["per_example_entropy"]))
      return out["logits"]

  tokens = rng.integers(0, 200, (64, 9)).astype(np.int32)
  data = {"ids": tokens[:, :-1], "targets": tokens[:, 1:, None]}
  histories = []
  for implementation in ("composite", "reference"):
    keras.utils.set_random_seed(0)
    model = LM(implementation)
    model.compile(optimizer="adam")
    history = model.fit(data, batch_size=16, epochs=2, shuffle=False, verbose=0)
    histories.append(history.history["loss"])
  np.testing.assert_allclose(histories[0], histories[1], rtol=1e-4)


def test_torch_module_entropy_and_temperature_equal_dense_torch(rng):
  torch = pytest.importorskip("torch")
  import gshard_op.torch as gt

  case, coeffs, _ = _case(rng, "ids")
  n = case.inputs.shape[0] * case.inputs.shape[1]
  x = torch.tensor(case.inputs.reshape(n, 16), requires_grad=True)
  e = torch.tensor(case.embedding, requires_grad=True)
  ids = torch.tensor(case.class_ids.reshape(n).astype(np.int64)) % 40
  c = torch.tensor(coeffs[1].reshape(n))

  def ours(x, e):
    out = gt.shared_embedding_softmax(x, e, None, class_ids=ids, temperature=0.7,
                                      with_entropy=True)
    return out["avg_xent"] + (c * out["per_example_entropy"]).sum(), out["per_example_entropy"]

  def dense(x, e):
    z = (x * 16 ** -0.5) @ e.T / 0.7
    log_p = torch.log_softmax(z, -1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return torch.nn.functional.cross_entropy(z, ids) + (c * entropy).sum(), entropy

  results = []
  for fn in (ours, dense, torch.compile(ours, fullgraph=True)):
    xx, ee = x.detach().clone().requires_grad_(), e.detach().clone().requires_grad_()
    loss, entropy = fn(xx, ee)
    loss.backward()
    results.append((loss.detach(), entropy.detach(), xx.grad, ee.grad))
  for got in (results[0], results[2]):
    for a, b in zip(got, results[1]):
      torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)


# --- 8 devices --------------------------------------------------------------------------------

def _sharded_scenario(name: str) -> None:
  """Values and gradients on a (2, 4) ("data", "vocab") mesh: plain jax.jit on
  Auto axes (custom partitioning, `auto`), on Explicit axes (`explicit`), and
  gshard_op.jit's gshard-shard-vocab (`pipeline`); the embedding never gathered."""
  import contextlib

  import jax
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

  import gshard_op

  rng = np.random.default_rng(7)
  case, coeffs, label = _case(rng, "ids_out_of_range", batch=(4, 8), num_classes=64)
  options = OPTION_SETS["tempered"]
  step = jax.value_and_grad(_loss(case, options, coeffs, label), argnums=(0, 1), has_aux=True)
  kind = AxisType.Explicit if name == "explicit" else AxisType.Auto
  mesh = jax.make_mesh((2, 4), ("data", "vocab"), axis_types=(kind, kind))
  args = (jax.device_put(case.inputs, NamedSharding(mesh, P("data", None, None))),
          jax.device_put(case.embedding, NamedSharding(mesh, P("vocab", None))))
  compiled = gshard_op.jit(step) if name == "pipeline" else jax.jit(step)
  with jax.set_mesh(mesh) if name == "explicit" else contextlib.nullcontext():
    result = compiled(*args)
    hlo = compiled.lower(*args).compile().as_text()
  assert "all-gather" not in hlo, "the embedding was gathered"
  _check(case, options, coeffs, label, jax.device_get(result))


SHARDED = ("auto", "explicit", "pipeline")


@pytest.mark.parametrize("name", SHARDED)
def test_vocab_sharded_on_eight_devices(host_devices, name):
  _sharded_scenario(name)
