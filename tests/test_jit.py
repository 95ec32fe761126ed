"""`gshard_op.jit`: `jax.jit` with the gshard passes run before XLA compiles.

It must behave like `jax.jit` (calls, pytrees, static and donated arguments,
one compile per signature, decorator form, `.lower` / `.compile`) while the
module XLA compiles is the rewritten one; bad pipelines fail at `jit()` time
and a failing pass says which pass and which op.
"""

from __future__ import annotations

import functools
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax._src.interpreters import mlir as jax_mlir
from jaxlib.mlir import ir

import gshard_op
from gshard_op import contract, passes
from gshard_op import GShardSharedEmbeddingSoftmax, shared_embedding_softmax
from gshard_op.pipelined_jit import Jitted

PIPELINE = "gshard-chunk-softmax{vocab-chunk=8 token-chunk=5}"
BATCH, M, V = (2, 6), 8, 19  # N = 12 tokens: 3 token blocks; V = 19: 3 vocab chunks
OPTIONS = dict(soft_cap_logits=4.0, z_loss_weight=0.1, label_smoothing_prob=0.1)


def _arrays(seed=0, batch=BATCH):
  rng = np.random.default_rng(seed)
  return dict(
      x=jnp.asarray(2.0 * rng.standard_normal(batch + (M,)), jnp.float32),
      e=jnp.asarray(rng.standard_normal((V, M)), jnp.float32),
      ids=jnp.asarray(rng.integers(0, V, batch + (1,)), jnp.int32),
      w=jnp.asarray(rng.uniform(0.0, 1.0, batch + (1,)), jnp.float32))


def _loss(x, e, ids, w, implementation="composite", **options):
  o = shared_embedding_softmax(x, e, w, ids, implementation=implementation,
                               **{**OPTIONS, **options})
  return o.avg_xent + o.z_loss


def _ref_loss(x, e, ids, w, **options):
  return _loss(x, e, ids, w, implementation="reference", **options)


def assert_trees_close(actual, expected, rtol=1e-5, what=""):
  """Same structure; floats within `rtol` (atol relative to the leaf's scale),
  integers equal."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected), what
  for (path, b), a in zip(jax.tree_util.tree_flatten_with_path(expected)[0],
                          jax.tree.leaves(actual)):
    a, b = np.asarray(a), np.asarray(b)
    where = f"{what}{jax.tree_util.keystr(path)}"
    assert a.shape == b.shape and a.dtype == b.dtype, (where, a.shape, a.dtype, b.shape, b.dtype)
    if np.issubdtype(b.dtype, np.integer):
      np.testing.assert_array_equal(a, b, err_msg=where)
      continue
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-5 * scale + 1e-30, err_msg=where)


# --- calling ------------------------------------------------------------------------------

def test_call_matches_jax_jit():
  a = _arrays()
  step = gshard_op.jit(jax.value_and_grad(_loss, (0, 1)), pipeline=PIPELINE)
  actual = step(a["x"], a["e"], a["ids"], a["w"])
  expected = jax.jit(jax.value_and_grad(_ref_loss, (0, 1)))(a["x"], a["e"], a["ids"], a["w"])
  assert_trees_close(actual, expected, rtol=1e-4)
  assert step.pipeline == PIPELINE


def test_pytrees_in_and_out():
  a = _arrays()
  params = {"embedding": a["e"], "input_scale": jnp.float32(1.5)}
  batch = {"inputs": a["x"], "labels": {"ids": a["ids"], "weights": a["w"]}}

  def step(params, batch, implementation):
    def loss(params):
      o = shared_embedding_softmax(batch["inputs"] * params["input_scale"], params["embedding"],
                                   batch["labels"]["weights"], batch["labels"]["ids"],
                                   implementation=implementation, **OPTIONS)
      return o.avg_xent, {"argmax": o.per_example_argmax, "xent": o.per_example_xent}
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return {"loss": value, "grads": grads, "aux": aux}

  ours = gshard_op.jit(lambda p, b: step(p, b, "composite"), pipeline=PIPELINE)
  actual = ours(params, batch)
  expected = jax.jit(lambda p, b: step(p, b, "reference"))(params, batch)
  assert set(actual) == {"loss", "grads", "aux"}
  assert set(actual["grads"]) == {"embedding", "input_scale"}
  assert_trees_close(actual, expected, rtol=1e-4)
  np.testing.assert_array_equal(actual["aux"]["argmax"], expected["aux"]["argmax"])
  assert ours.cache_size() == 1


def test_static_argnums():
  a = _arrays()
  f = gshard_op.jit(lambda x, e, ids, w, z: _loss(x, e, ids, w, z_loss_weight=z),
                    pipeline=PIPELINE, static_argnums=4)
  for z in (0.0, 0.5, 2.0):
    expected = jax.jit(_ref_loss, static_argnames="z_loss_weight")(
        a["x"], a["e"], a["ids"], a["w"], z_loss_weight=z)
    np.testing.assert_allclose(f(a["x"], a["e"], a["ids"], a["w"], z), expected, rtol=1e-5)
  assert f.cache_size() == 3
  f(a["x"], a["e"], a["ids"], a["w"], 0.5)
  assert f.cache_size() == 3


def test_static_argnames():
  a = _arrays()

  def f(x, e, ids, w, *, cap):
    return _loss(x, e, ids, w, soft_cap_logits=cap)

  jitted = gshard_op.jit(f, pipeline=PIPELINE, static_argnames=("cap",))
  for cap in (0.0, 1.5):
    expected = _ref_loss(a["x"], a["e"], a["ids"], a["w"], soft_cap_logits=cap)
    np.testing.assert_allclose(jitted(a["x"], a["e"], a["ids"], a["w"], cap=cap), expected,
                               rtol=1e-5)
  assert jitted.cache_size() == 2


def test_static_argument_given_the_other_way():
  """As with `jax.jit`, a static argument named in `static_argnums` may be
  passed by keyword and one named in `static_argnames` positionally."""
  a = _arrays()

  def f(x, e, ids, w, z):
    return _loss(x, e, ids, w, z_loss_weight=z)

  args = (a["x"], a["e"], a["ids"], a["w"])
  for kwargs in (dict(static_argnums=4), dict(static_argnames="z")):
    jitted = gshard_op.jit(f, pipeline=PIPELINE, **kwargs)
    reference = jax.jit(f, **kwargs)
    by_position = jitted(*args, 0.5)
    by_name = jitted(*args, z=0.25)
    np.testing.assert_allclose(by_position, reference(*args, 0.5), rtol=1e-5, err_msg=str(kwargs))
    np.testing.assert_allclose(by_name, reference(*args, z=0.25), rtol=1e-5, err_msg=str(kwargs))


def test_donate_argnums_runs():
  a = _arrays()
  step = gshard_op.jit(jax.value_and_grad(_loss, (0, 1)), pipeline=PIPELINE, donate_argnums=(0,))
  expected = jax.jit(jax.value_and_grad(_ref_loss, (0, 1)))(a["x"], a["e"], a["ids"], a["w"])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the CPU may decline the donation
    actual = step(jnp.array(a["x"]), a["e"], a["ids"], a["w"])
  assert_trees_close(actual, expected, rtol=1e-4)


def test_cache_one_compile_per_signature():
  a, b = _arrays(0), _arrays(1)
  f = gshard_op.jit(_loss, pipeline=PIPELINE)
  assert f.cache_size() == 0
  r1 = f(a["x"], a["e"], a["ids"], a["w"])
  r2 = f(b["x"], b["e"], b["ids"], b["w"])
  f(a["x"], a["e"], a["ids"], a["w"])
  assert f.cache_size() == 1
  assert not np.allclose(r1, r2)  # the cached executable really takes new values
  np.testing.assert_allclose(r2, _ref_loss(b["x"], b["e"], b["ids"], b["w"]), rtol=1e-5)
  c = _arrays(2, batch=(3, 5))  # new shape: new entry
  np.testing.assert_allclose(f(c["x"], c["e"], c["ids"], c["w"]),
                             _ref_loss(c["x"], c["e"], c["ids"], c["w"]), rtol=1e-5)
  assert f.cache_size() == 2
  f(c["x"].astype(jnp.bfloat16), c["e"], c["ids"], c["w"])  # new dtype: new entry
  assert f.cache_size() == 3
  f(b["x"], b["e"], b["ids"], b["w"])
  assert f.cache_size() == 3


def test_decorator_form():
  a = _arrays()

  @gshard_op.jit(pipeline=PIPELINE, static_argnames="z")
  def loss(x, e, ids, w, z=0.1):
    return _loss(x, e, ids, w, z_loss_weight=z)

  assert isinstance(loss, Jitted)
  assert loss.pipeline == PIPELINE
  assert loss.__name__ == "loss" and loss.__wrapped__ is not None
  np.testing.assert_allclose(loss(a["x"], a["e"], a["ids"], a["w"], z=0.3),
                             _ref_loss(a["x"], a["e"], a["ids"], a["w"], z_loss_weight=0.3),
                             rtol=1e-5)
  assert "gshard-chunk-softmax" in loss.lower(a["x"], a["e"], a["ids"], a["w"]).as_text()


def test_default_pipeline():
  a = _arrays()
  f = gshard_op.jit(_loss)
  assert "gshard-chunk-softmax" in f.pipeline
  assert "gshard-chunk-softmax" in gshard_op.jit(_loss, memory_budget_mib=1.5).pipeline
  assert "1.5" in gshard_op.jit(_loss, memory_budget_mib=1.5).pipeline
  np.testing.assert_allclose(f(a["x"], a["e"], a["ids"], a["w"]),
                             _ref_loss(a["x"], a["e"], a["ids"], a["w"]), rtol=1e-5)
  assert "stablehlo.composite" not in f.lower(a["x"], a["e"], a["ids"], a["w"]).as_text()


# --- lower and compile ----------------------------------------------------------------------

def test_lower_shows_the_rewritten_module_and_compiles():
  a = _arrays()
  args = (a["x"], a["e"], a["ids"], a["w"])
  step = gshard_op.jit(jax.value_and_grad(_loss, (0, 1)), pipeline=PIPELINE)
  lowered = step.lower(*args)
  text = lowered.as_text()
  assert "stablehlo.composite" not in text
  assert "stablehlo.while" in text
  assert re.search(r'gshard\.plan = "gshard-chunk-softmax: token_chunk=5 vocab_chunk=8"', text)
  assert lowered.pipeline == PIPELINE
  assert lowered.compiler_ir("stablehlo").operation.verify()
  assert lowered.in_tree is not None  # the rest of jax.stages.Lowered is still there
  # plain jax.jit gets the primitives' chunked lowering; the composites on request
  plain = jax.jit(jax.value_and_grad(_loss, (0, 1))).lower(*args).as_text()
  assert "stablehlo.composite" not in plain and 'gshard.plan = "gshard-lowering:' in plain
  with gshard_op.lowering("composite"):
    plain = jax.jit(jax.value_and_grad(_loss, (0, 1))).lower(*args).as_text()
  assert "stablehlo.composite" in plain and "gshard.shared_embedding_softmax_grad" in plain
  compiled = lowered.compile()
  assert isinstance(compiled, jax.stages.Compiled)
  expected = jax.jit(jax.value_and_grad(_ref_loss, (0, 1)))(*args)
  assert_trees_close(compiled(*args), expected, rtol=1e-4)
  # lower() and a call share JAX's lowering: the module is rewritten once
  assert step.cache_size() == 1
  assert_trees_close(step(*args), expected, rtol=1e-4)
  assert step.lower(*args).as_text() == text and step.cache_size() == 1


# --- pipelines and pass failures ---------------------------------------------------------------

@pytest.mark.parametrize("pipeline,named", [
    ("no-such-pass", "no-such-pass"),
    ("gshard-chunk-softmax{vocab-chunk=8},gshard-chunk-softmaxx", "gshard-chunk-softmaxx"),
    ("gshard-chunk-softmax{bogus-option=3}", "bogus-option"),
    ("gshard-chunk-softmax{vocab-chunk=eight}", "eight"),
    ("gshard-chunk-softmax{vocab-chunk=-4}", "vocab-chunk"),
    ("gshard-chunk-softmax{memory-budget-mib=lots}", "memory-budget-mib"),
    ("gshard-inline{", "gshard-inline{"),
])
def test_bad_pipeline_fails_at_jit_time(pipeline, named):
  with pytest.raises(passes.PipelineError, match=re.escape(named)):
    gshard_op.jit(_loss, pipeline=pipeline)
  with pytest.raises(passes.PipelineError, match=re.escape(named)):
    gshard_op.jit(pipeline=pipeline)(_loss)


def _lowered_text():
  a = _arrays()
  with gshard_op.lowering("composite"):
    return jax.jit(jax.value_and_grad(_loss, (0, 1))).lower(
        a["x"], a["e"], a["ids"], a["w"]).as_text()


def _parse(text):
  ctx = jax_mlir.make_ir_context()
  with ctx:
    return ir.Module.parse(text)


@pytest.mark.parametrize("pass_name", ["gshard-chunk-softmax", "gshard-inline"])
def test_unknown_composite_version_is_a_pass_error(pass_name):
  text = _lowered_text()
  current = f"version = {contract.VERSION} : i32"
  assert text.count(current) == 2
  module = _parse(text.replace(current, "version = 7 : i32"))
  with pytest.raises(passes.PassError) as info:
    passes.run_pipeline(module, pass_name)
  message = str(info.value)
  assert f"'{pass_name}'" in message
  assert "version 7" in message
  assert "stablehlo.composite" in message and "gshard.shared_embedding_softmax" in message


def test_missing_attribute_is_a_pass_error():
  text = _lowered_text()
  broken = re.sub(r",? *z_loss_weight = [^,}]*", "", text)
  assert broken != text
  with pytest.raises(passes.PassError, match=r"(?s)gshard-chunk-softmax.*z_loss_weight.*"
                                             r"stablehlo\.composite"):
    passes.run_pipeline(_parse(broken), "gshard-chunk-softmax")


def test_wrong_operand_types_are_a_pass_error():
  """A composite whose operands break the contract (here labels are f32[N]:
  neither i32 ids nor [N, V] probabilities) is reported, not rewritten."""
  n = 12
  text = f"""
  func.func private @decomp(%x: tensor<{n}x{M}xf32>, %e: tensor<{V}x{M}xf32>, %l: tensor<{n}xf32>)
      -> (tensor<{n}xf32>, tensor<{n}xi32>, tensor<{n}xf32>, tensor<{n}xf32>) {{
    %z = stablehlo.constant dense<0.0> : tensor<{n}xf32>
    %i = stablehlo.constant dense<0> : tensor<{n}xi32>
    return %z, %i, %z, %z : tensor<{n}xf32>, tensor<{n}xi32>, tensor<{n}xf32>, tensor<{n}xf32>
  }}
  func.func public @main(%x: tensor<{n}x{M}xf32>, %e: tensor<{V}x{M}xf32>, %l: tensor<{n}xf32>)
      -> tensor<{n}xf32> {{
    %r:4 = stablehlo.composite "gshard.shared_embedding_softmax" %x, %e, %l {{
        composite_attributes = {{label_smoothing_prob = 0.0 : f64, logit_scale = 0.35 : f64,
          logits_abs_max = 0.0 : f64, soft_cap_logits = 0.0 : f64,
          use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.0 : f64}},
        decomposition = @decomp, version = 1 : i32}}
      : (tensor<{n}x{M}xf32>, tensor<{V}x{M}xf32>, tensor<{n}xf32>)
      -> (tensor<{n}xf32>, tensor<{n}xi32>, tensor<{n}xf32>, tensor<{n}xf32>)
    return %r#0 : tensor<{n}xf32>
  }}"""
  module = _parse(f"module {{{text}}}")
  for name in ("gshard-chunk-softmax", "gshard-inline"):
    with pytest.raises(passes.PassError, match=rf"(?s)'{name}'.*labels.*stablehlo\.composite"):
      passes.run_pipeline(module, name)
  assert "stablehlo.composite" in str(module)  # left as it was


# --- the NNX layer ------------------------------------------------------------------------------

def test_nnx_layer_split_under_jit():
  a = _arrays()
  kwargs = dict(soft_cap_logits=4.0, z_loss_weight=0.1, label_smoothing_prob=0.1)
  layer = GShardSharedEmbeddingSoftmax(M, V, rngs=nnx.Rngs(0), **kwargs)
  ref_layer = GShardSharedEmbeddingSoftmax(M, V, rngs=nnx.Rngs(0), implementation="reference",
                                           **kwargs)
  graphdef, state = nnx.split(layer)
  ref_graphdef, ref_state = nnx.split(ref_layer)

  def make_step(graphdef):
    def loss(state, x, w, ids):
      model = nnx.merge(graphdef, state)
      out = model(x, w, class_ids=ids)
      return out.avg_xent + out.z_loss, out.per_example_argmax
    return jax.value_and_grad(loss, has_aux=True)

  step = gshard_op.jit(make_step(graphdef), pipeline=PIPELINE)
  (value, argmax), grads = step(state, a["x"], a["w"], a["ids"])
  (ref_value, ref_argmax), ref_grads = jax.jit(make_step(ref_graphdef))(
      ref_state, a["x"], a["w"], a["ids"])
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_array_equal(argmax, ref_argmax)
  assert isinstance(grads, nnx.State)
  assert_trees_close(grads, ref_grads, rtol=1e-4)
  assert "stablehlo.composite" not in step.lower(state, a["x"], a["w"], a["ids"]).as_text()

  # the graphdef as a static argument
  static_step = gshard_op.jit(
      lambda g, s, x, w, ids: make_step(g)(s, x, w, ids), pipeline=PIPELINE, static_argnums=0)
  (value2, _), grads2 = static_step(graphdef, state, a["x"], a["w"], a["ids"])
  np.testing.assert_allclose(value2, ref_value, rtol=1e-5)
  assert_trees_close(grads2, ref_grads, rtol=1e-4)


# --- a drop-in for jax.jit ------------------------------------------------------------------------

def _loss_only(x, e, ids, w):
  return _loss(x, e, ids, w)


def test_transformations_of_gshard_jit_equal_those_of_jax_jit():
  a = _arrays()
  args = (a["x"], a["e"], a["ids"], a["w"])
  ours, theirs = gshard_op.jit(_loss_only), jax.jit(_loss_only)
  assert_trees_close(jax.grad(ours, (0, 1))(*args), jax.grad(theirs, (0, 1))(*args), rtol=1e-5)
  assert_trees_close(jax.jit(ours)(*args), theirs(*args), rtol=1e-6)
  xs = jnp.stack([a["x"], 2 * a["x"]])
  assert_trees_close(jax.vmap(ours, (0, None, None, None))(xs, *args[1:]),
                     jax.vmap(theirs, (0, None, None, None))(xs, *args[1:]), rtol=1e-5)
  assert jax.eval_shape(ours, *args) == jax.eval_shape(theirs, *args)
  assert ours.eval_shape(*args) == jax.eval_shape(theirs, *args)
  jaxpr = jax.make_jaxpr(ours)(*args)
  assert [e.primitive.name for e in jaxpr.eqns] == ["jit"]
  # grad of a gshard_op.jit lowers through the enclosing jax.jit's route
  text = jax.jit(jax.grad(ours)).lower(*args).as_text()
  assert "stablehlo.composite" not in text and "gshard-lowering" in text


def test_nested_gshard_jit_keeps_composites_for_the_outer_pipeline():
  a = _arrays()
  args = (a["x"], a["e"], a["ids"], a["w"])
  inner = gshard_op.jit(_loss_only)
  outer = gshard_op.jit(jax.value_and_grad(inner, (0, 1)), pipeline=PIPELINE)
  text = outer.lower(*args).as_text()
  # the inner function's primitives were traced in the outer's composite mode
  assert "stablehlo.composite" not in text and "gshard-chunk-softmax" in text
  assert "gshard-lowering" not in text
  assert_trees_close(outer(*args), jax.jit(jax.value_and_grad(_ref_loss, (0, 1)))(*args),
                     rtol=1e-4)


def test_trace_then_lower():
  a = _arrays()
  args = (a["x"], a["e"], a["ids"], a["w"])
  step = gshard_op.jit(_loss_only, pipeline=PIPELINE)
  traced = step.trace(*args)
  assert "gshard_shared_embedding_softmax" in str(traced.jaxpr)
  lowered = traced.lower()
  assert "gshard-chunk-softmax" in lowered.as_text()
  np.testing.assert_allclose(lowered.compile()(*args), _ref_loss(*args), rtol=1e-5)


def test_decorated_method():
  a = _arrays()

  class Model:
    def __init__(self, e):
      self.e = e

    @gshard_op.jit
    def loss(self, x, ids, w):
      return _loss(x, self.e, ids, w)

  model = Model(a["e"])
  with pytest.raises(TypeError):  # self is an argument like any other: not a pytree here
    model.loss(a["x"], a["ids"], a["w"])

  class StaticModel(Model):
    __hash__ = object.__hash__

    @functools.partial(gshard_op.jit, static_argnums=0)
    def loss(self, x, ids, w):
      return _loss(x, self.e, ids, w)

  static_model = StaticModel(a["e"])
  np.testing.assert_allclose(static_model.loss(a["x"], a["ids"], a["w"]),
                             _ref_loss(a["x"], a["e"], a["ids"], a["w"]), rtol=1e-5)
  assert StaticModel.loss.cache_size() == 1


def test_negative_static_argnums():
  a = _arrays()

  def scaled(x, e, ids, w, scale):
    return scale * _loss(x, e, ids, w)

  f = gshard_op.jit(scaled, static_argnums=-1)
  got = f(a["x"], a["e"], a["ids"], a["w"], 3.0)
  np.testing.assert_allclose(got, 3.0 * _ref_loss(a["x"], a["e"], a["ids"], a["w"]), rtol=1e-5)
  f(a["x"], a["e"], a["ids"], a["w"], 3.0)
  assert f.cache_size() == 1
  f(a["x"], a["e"], a["ids"], a["w"], 2.0)
  assert f.cache_size() == 2


def test_unhashable_static_argument_gives_jax_jits_error():
  a = _arrays()

  def f(x, e, ids, w, options):
    return _loss(x, e, ids, w, **options)

  args = (a["x"], a["e"], a["ids"], a["w"], {"z_loss_weight": 0.5})
  with pytest.raises(ValueError) as theirs:
    jax.jit(f, static_argnums=4)(*args)
  with pytest.raises(ValueError) as ours:
    gshard_op.jit(f, static_argnums=4)(*args)
  assert str(ours.value) == str(theirs.value)
  assert "Non-hashable static arguments" in str(ours.value)


def test_precision_change_recompiles():
  a = _arrays()
  args = (a["x"], a["e"], a["ids"], a["w"])
  f = gshard_op.jit(_loss_only)
  f(*args)
  f(*args)
  assert f.cache_size() == 1
  with jax.default_matmul_precision("highest"):
    np.testing.assert_allclose(f(*args), _ref_loss(*args), rtol=1e-5)
  assert f.cache_size() == 2
  f(*args)
  assert f.cache_size() == 2


def test_pipeline_and_budget_together_is_an_error():
  with pytest.raises(ValueError, match="pipeline.*memory_budget_mib"):
    gshard_op.jit(_loss_only, pipeline=PIPELINE, memory_budget_mib=8.0)


# --- gshard_op.nnx_jit ------------------------------------------------------------------------------

def test_nnx_jit_trains_in_place_like_nnx_jit():
  import optax
  a = _arrays()
  kwargs = dict(soft_cap_logits=4.0, z_loss_weight=0.1, label_smoothing_prob=0.1)

  def run(jit, implementation):
    layer = GShardSharedEmbeddingSoftmax(M, V, rngs=nnx.Rngs(0), implementation=implementation,
                                         **kwargs)
    optimizer = nnx.Optimizer(layer, optax.adam(1e-1), wrt=nnx.Param)

    @jit
    def step(layer, optimizer, x, w, ids):
      def loss(layer):
        out = layer(x, w, class_ids=ids)
        return out.avg_xent + out.z_loss
      value, grads = nnx.value_and_grad(loss)(layer)
      optimizer.update(layer, grads)
      return value

    losses = [float(step(layer, optimizer, a["x"], a["w"], a["ids"])) for _ in range(4)]
    return losses, layer, step

  ours, layer, step = run(gshard_op.nnx_jit, "composite")
  theirs, ref_layer, _ = run(nnx.jit, "reference")
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)
  assert_trees_close(nnx.state(layer, nnx.Param), nnx.state(ref_layer, nnx.Param), rtol=1e-4)
  assert step.jitted_fn.cache_size() == 1
  optimizer = nnx.Optimizer(layer, optax.adam(1e-1), wrt=nnx.Param)
  text = step.lower(layer, optimizer, a["x"], a["w"], a["ids"]).lowered.as_text()
  assert "stablehlo.composite" not in text and "gshard-fuse-fwd-bwd" in text


def test_nnx_jit_takes_a_pipeline():
  a = _arrays()
  layer = GShardSharedEmbeddingSoftmax(M, V, rngs=nnx.Rngs(0))

  @gshard_op.nnx_jit(pipeline=PIPELINE)
  def loss(layer, x, w, ids):
    return layer(x, w, class_ids=ids).avg_xent

  ref = GShardSharedEmbeddingSoftmax(M, V, rngs=nnx.Rngs(0), implementation="reference")
  np.testing.assert_allclose(loss(layer, a["x"], a["w"], a["ids"]),
                             ref(a["x"], a["w"], class_ids=a["ids"]).avg_xent, rtol=1e-5)
  assert "gshard-chunk-softmax" in loss.lower(layer, a["x"], a["w"], a["ids"]).lowered.as_text()


def test_threads_share_one_rewrite():
  """Threads calling one function with one signature: one lowering, rewritten
  once, and every thread gets the right answer."""
  from concurrent.futures import ThreadPoolExecutor
  a = _arrays()
  args = (a["x"], a["e"], a["ids"], a["w"])
  f = gshard_op.jit(_loss_only, pipeline=PIPELINE)
  with ThreadPoolExecutor(4) as pool:
    values = list(pool.map(lambda _: f(*args), range(8)))
  for v in values:
    np.testing.assert_allclose(v, _ref_loss(*args), rtol=1e-5)
  assert f.cache_size() == 1
