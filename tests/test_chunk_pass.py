"""`gshard-chunk-softmax` (and the other pipelines) under `gshard_op.jit`.

Every test compares a function of the functional op, compiled by
`gshard_op.jit(f, pipeline=P)` (so the composites are rewritten before XLA
sees them), with the same function on `implementation="reference"` under plain
`jax.jit` (the dense math, differentiated by JAX itself). Values and gradients
of every differentiable output are compared, for every option.

XLA compiles dominate the run time (about a second each on two CPU cores), so
each compiled function evaluates many cases at once: one module holds every
option configuration (or every loss), and the dense reference is computed once
per module of tests and shared by all pipelines.
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gshard_op
from gshard_op import passes
from gshard_op import shared_embedding_softmax
from pass_testing import Config, assert_close, to_numpy, with_fast_xla
from gshard_op.outputs import FIELDS
from gshard_op.passes import chunk as chunk_pass
from gshard_op.chunked import LIVE_CHUNK_BUFFERS, MIN_VOCAB_CHUNK, ChunkPlan, plan_chunks

PIPELINES = {
    "vocab16": "gshard-chunk-softmax{vocab-chunk=16}",
    "vocab16_token10": "gshard-chunk-softmax{vocab-chunk=16 token-chunk=10}",
    "vocab7_odd": "gshard-chunk-softmax{vocab-chunk=7}",
    "default": None,  # gshard_op.jit's default pipeline
    "inline": "gshard-inline",
}
CHUNKED = ("vocab16", "vocab16_token10", "vocab7_odd")

# Batch (3, 7): N = 21 tokens, not a multiple of the token chunk (10); V = 37 is
# a multiple of neither vocab chunk (16, 7), so every loop has a masked,
# overlapping last chunk.
BATCH, M, V = (3, 7), 12, 37

F32_TOL = dict(value_rtol=1e-5, value_atol=1e-5, grad_rtol=1e-4, grad_atol=1e-5)
BF16_TOL = dict(value_rtol=3e-2, value_atol=3e-2, grad_rtol=5e-2, grad_atol=3e-2)

DIFFERENTIABLE = ("logits", "log_probs", "per_example_xent", "total_xent", "avg_xent",
                  "z_loss")


# --- data --------------------------------------------------------------------------

CONFIGS = {
    "plain": Config({}, weights="ones"),
    "soft_cap": Config({"soft_cap_logits": 2.0}),
    "abs_clip": Config({"logits_abs_max": 1.5}),
    "cap_and_clip": Config({"soft_cap_logits": 3.0, "logits_abs_max": 2.0}),
    "z_loss": Config({"z_loss_weight": 0.3}),
    "z_loss_capped": Config({"z_loss_weight": 0.2, "soft_cap_logits": 2.5}),
    "label_smoothing": Config({"label_smoothing_prob": 0.2}),
    "soft_labels": Config({}, labels="probs"),
    "soft_labels_unnormalized": Config({"label_smoothing_prob": 0.1, "z_loss_weight": 0.1},
                                       labels="probs_unnormalized"),
    "weight_denominator": Config({"use_tgt_labels_size_as_loss_denominator": False}),
    "out_of_range_ids": Config({"label_smoothing_prob": 0.1}, labels="ids_out_of_range"),
    "everything": Config({"soft_cap_logits": 3.0, "logits_abs_max": 2.5, "z_loss_weight": 0.2,
                          "label_smoothing_prob": 0.1,
                          "use_tgt_labels_size_as_loss_denominator": False},
                         labels="ids_out_of_range"),
}
EVERYTHING_SOFT = Config(dict(CONFIGS["everything"].options), labels="probs_unnormalized")


def make_arrays(rng: np.random.Generator, batch, in_features, num_classes, config: Config,
                input_std: float = 2.5) -> dict:
  """Layer arguments plus random cotangents `c[...]` and `c_full[..., V]`."""
  batch = tuple(batch)
  x = (input_std * rng.standard_normal(batch + (in_features,))).astype(np.float32)
  e = rng.standard_normal((num_classes, in_features)).astype(np.float32)
  if config.weights == "ones":
    w = np.ones(batch + (1,), np.float32)
  else:
    w = rng.uniform(0.0, 2.0, batch + (1,))
    w[rng.uniform(size=w.shape) < 0.3] = 0.0
    w.reshape(-1)[0] = 1.25  # never all zero: the weight denominator
    w = w.astype(np.float32)
  ids = probs = None
  if config.labels.startswith("ids"):
    ids = rng.integers(0, num_classes, batch).astype(np.int32)
    if config.labels == "ids_out_of_range":
      flat = ids.reshape(-1)
      bad = np.array([num_classes, -1, num_classes + 7, -num_classes, 2**30], np.int32)
      where = rng.choice(flat.size, size=min(len(bad), max(1, flat.size // 3)), replace=False)
      flat[where] = bad[:len(where)]
    ids = ids[..., None]
  else:
    z = 2.0 * rng.standard_normal(batch + (num_classes,))
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if config.labels == "probs_unnormalized":
      probs *= rng.uniform(0.3, 2.0, batch + (1,))
    probs = probs.astype(np.float32)
  return dict(x=x, e=e, w=w, ids=ids, probs=probs,
              c=rng.standard_normal(batch).astype(np.float32),
              c_full=rng.standard_normal(batch + (num_classes,)).astype(np.float32))


# --- the functions compared ---------------------------------------------------------

LOSSES = {
    "avg_xent": lambda o, a: o.avg_xent.astype(jnp.float32),
    "total_xent": lambda o, a: o.total_xent,
    "z_loss": lambda o, a: o.z_loss,
    # the "no reduction" case: arbitrary per-token cotangents
    "weighted_per_example_xent": lambda o, a: jnp.sum(
        a["c"] * o.per_example_xent.astype(jnp.float32)),
    "logits": lambda o, a: jnp.sum(a["c_full"] * o.logits.astype(jnp.float32)),
    "log_probs": lambda o, a: jnp.sum(a["c_full"] * o.log_probs.astype(jnp.float32)),
}


def mixed_loss(o, a):
  """Every output the chunked loops produce, with a random per-token cotangent."""
  return (o.avg_xent.astype(jnp.float32) + 0.3 * o.total_xent + 2.0 * o.z_loss
          + jnp.sum(a["c"] * o.per_example_xent.astype(jnp.float32)))


def op(a, x, e, options, implementation):
  return shared_embedding_softmax(x, e, a["w"], a["ids"], a["probs"],
                                  implementation=implementation, **options)


def results_of(a, options, losses, implementation, outputs=FIELDS):
  """`{"outputs": {field: ...}, loss: (value, (d_x, d_embedding))}` for one case."""
  res = {"outputs": {k: v for k, v in op(a, a["x"], a["e"], options, implementation).items()
                     if k in outputs}}
  for name, loss in losses.items():
    res[name] = jax.value_and_grad(
        lambda x, e: loss(op(a, x, e, options, implementation), a), (0, 1))(a["x"], a["e"])
  return res


def batch_fn(configs: dict[str, Config], losses, implementation, outputs=FIELDS):
  """A function of `{case: arrays}` evaluating every case in one module."""
  def f(cases):
    return {name: results_of(cases[name], configs[name].options, losses, implementation,
                             outputs)
            for name in configs}
  return f


def gshard_jit(f, pipeline):
  return gshard_op.jit(f, pipeline=pipeline)


def assert_results_close(actual, expected, tol, prefix=""):
  """Compares two trees of `results_of`; gradients get the gradient tolerance."""
  paths = jax.tree_util.tree_flatten_with_path(expected)[0]
  actual_leaves = jax.tree.leaves(actual)
  assert len(actual_leaves) == len(paths), f"{prefix}: tree structure differs"
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for (path, e), a in zip(paths, actual_leaves):
    what = prefix + jax.tree_util.keystr(path)
    # (value, (d_x, d_e)): the gradients are the leaves under index 1.
    is_grad = len(path) >= 2 and getattr(path[-2], "idx", None) == 1
    kind = "grad" if is_grad else "value"
    assert_close(a, e, rtol=tol[f"{kind}_rtol"], atol_rel=tol[f"{kind}_atol"], what=what)


# --- every option, every loss, every pipeline ----------------------------------------

def _cases(configs, seed):
  rng = np.random.default_rng(seed)
  return {name: make_arrays(rng, BATCH, M, V, cfg) for name, cfg in configs.items()}


@functools.lru_cache(maxsize=None)
def _options_reference():
  cases = _cases(CONFIGS, 1234)
  ref = jax.jit(batch_fn(CONFIGS, {"mixed": mixed_loss}, "reference"))(cases)
  return cases, to_numpy(ref)


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@with_fast_xla
def test_every_option_matches_reference(pipeline):
  """All options (one module per pipeline): every output's value, including
  `per_example_argmax` exactly, and the gradients w.r.t. inputs and embedding
  of a loss mixing `avg_xent`, `total_xent`, `z_loss` and per-token weighted
  `per_example_xent`."""
  cases, expected = _options_reference()
  f = gshard_jit(batch_fn(CONFIGS, {"mixed": mixed_loss}, "composite"), PIPELINES[pipeline])
  actual = to_numpy(f(cases))
  for name in CONFIGS:
    assert_results_close(actual[name], expected[name], F32_TOL, prefix=f"[{pipeline}] {name}")


LOSS_CONFIGS = {"everything_ids": CONFIGS["everything"], "everything_soft": EVERYTHING_SOFT}


@functools.lru_cache(maxsize=None)
def _losses_reference():
  cases = _cases(LOSS_CONFIGS, 99)
  ref = jax.jit(batch_fn(LOSS_CONFIGS, LOSSES, "reference", outputs=()))(cases)
  return cases, to_numpy(ref)


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@with_fast_xla
def test_every_loss_matches_reference(pipeline):
  """Each loss on its own (value and both gradients), with every option on:
  `avg_xent`, `total_xent`, `z_loss`, `sum(c * per_example_xent)`, and losses
  reading `logits` and `log_probs`."""
  cases, expected = _losses_reference()
  f = gshard_jit(batch_fn(LOSS_CONFIGS, LOSSES, "composite", outputs=()), PIPELINES[pipeline])
  actual = to_numpy(f(cases))
  for name in LOSS_CONFIGS:
    for loss in LOSSES:
      assert_results_close(actual[name][loss], expected[name][loss], F32_TOL,
                           prefix=f"[{pipeline}] {name} loss={loss}")


@with_fast_xla
def test_gradients_are_not_trivially_zero():
  """Guards the comparisons above: the cases have sizeable gradients."""
  _, expected = _losses_reference()
  for name in LOSS_CONFIGS:
    for loss in LOSSES:
      _, (d_x, d_e) = expected[name][loss]
      assert np.max(np.abs(d_x)) > 1e-3 and np.max(np.abs(d_e)) > 1e-3, (name, loss)


# --- ties in the argmax ---------------------------------------------------------------

# The cap is large enough not to saturate float32's tanh (which would make new ties).
TIE_OPTIONS = {"plain": {}, "clip": {"logits_abs_max": 1.0}, "cap": {"soft_cap_logits": 30.0}}


def _tie_arrays():
  """Integer-valued inputs and embedding with M = 16 (scale 1/4): every logit is
  exact in float32 whatever the summation order, so equal rows give bitwise
  equal logits. Row v of the embedding is base row v % 5: every class value
  recurs every 5 classes, across every chunk boundary and in the masked overlap
  of the last chunk."""
  rng = np.random.default_rng(7)
  n, m, v = 23, 16, 37
  x = rng.integers(-3, 4, (n, m)).astype(np.float32)
  base = rng.integers(-2, 3, (5, m)).astype(np.float32)
  e = base[np.arange(v) % 5]
  ids = rng.integers(0, v, (n, 1)).astype(np.int32)
  return x, e, ids


def _argmaxes(implementation):
  def f(x, e, ids):
    w = jnp.ones(ids.shape, jnp.float32)
    return {k: shared_embedding_softmax(x, e, w, ids, implementation=implementation,
                                        **o).per_example_argmax
            for k, o in TIE_OPTIONS.items()}
  return f


@pytest.mark.parametrize("pipeline", ["gshard-chunk-softmax{vocab-chunk=7}",
                                      "gshard-chunk-softmax{vocab-chunk=5 token-chunk=10}",
                                      "gshard-chunk-softmax{vocab-chunk=16 token-chunk=10}",
                                      None])
@with_fast_xla
def test_argmax_ties_pick_the_first_index(pipeline):
  x, e, ids = _tie_arrays()
  actual = to_numpy(gshard_jit(_argmaxes("composite"), pipeline)(x, e, ids))
  expected = to_numpy(jax.jit(_argmaxes("reference"))(x, e, ids))
  raw = (x / 4.0) @ e.T  # exact
  assert np.all(np.sum(raw == raw.max(-1, keepdims=True), -1) >= 7)  # ties everywhere
  for k in TIE_OPTIONS:
    z = np.clip(raw, -1.0, 1.0) if k == "clip" else raw  # the cap is monotonic
    first = np.argmax(z, -1)  # numpy, like jnp.argmax, returns the first maximum
    np.testing.assert_array_equal(expected[k], first, err_msg=f"reference {k}")
    np.testing.assert_array_equal(actual[k], first, err_msg=f"{pipeline} {k}")


# --- bfloat16 ---------------------------------------------------------------------------

@pytest.mark.parametrize("pipeline", ["gshard-chunk-softmax{vocab-chunk=7 token-chunk=10}",
                                      "gshard-chunk-softmax{vocab-chunk=16}"])
@with_fast_xla
def test_bfloat16_matches_float32_reference(pipeline):
  """bf16 inputs and embedding under the pass against the float32 reference on
  the same (bf16-representable) values; loose tolerance for bf16 rounding."""
  configs = {"everything": CONFIGS["everything"], "soft": EVERYTHING_SOFT,
             "plain": CONFIGS["plain"]}
  cases = _cases(configs, 5)
  for a in cases.values():
    for k in ("x", "e"):
      a[k] = np.asarray(jnp.asarray(a[k], jnp.bfloat16).astype(jnp.float32))
  bf16 = {n: dict(a, x=jnp.asarray(a["x"], jnp.bfloat16), e=jnp.asarray(a["e"], jnp.bfloat16))
          for n, a in cases.items()}
  outputs = ("per_example_xent", "avg_xent", "total_xent", "z_loss", "log_probs")
  losses = {"mixed": mixed_loss, "log_probs": LOSSES["log_probs"]}
  actual = to_numpy(gshard_jit(batch_fn(configs, losses, "composite", outputs), pipeline)(bf16))
  expected = to_numpy(jax.jit(batch_fn(configs, losses, "reference", outputs))(cases))
  for name in configs:
    (_, (d_x, d_e)) = actual[name]["mixed"]
    assert d_x.dtype == jnp.bfloat16 and d_e.dtype == jnp.bfloat16
    assert actual[name]["outputs"]["per_example_xent"].dtype == jnp.bfloat16
    assert_results_close(jax.tree.map(lambda t: t.astype(np.float32), actual[name]),
                         expected[name], BF16_TOL, prefix=f"[{pipeline}] bf16 {name}")


# --- the rewritten module ------------------------------------------------------------------

IR_BATCH, IR_M, IR_V = (4, 6), 20, 50  # N = 24, V = 50: distinct from every other dim


def _avg_xent_step(implementation="composite"):
  def loss(x, e, ids, w):
    return shared_embedding_softmax(x, e, w, ids, implementation=implementation,
                                    soft_cap_logits=5.0, z_loss_weight=0.1).avg_xent
  return jax.value_and_grad(loss, (0, 1))


def _ir_args():
  rng = np.random.default_rng(3)
  return (rng.standard_normal(IR_BATCH + (IR_M,)).astype(np.float32),
          rng.standard_normal((IR_V, IR_M)).astype(np.float32),
          rng.integers(0, IR_V, IR_BATCH + (1,)).astype(np.int32),
          np.ones(IR_BATCH + (1,), np.float32))


@pytest.mark.parametrize("pipeline", ["gshard-chunk-softmax{vocab-chunk=16}",
                                      "gshard-chunk-softmax{vocab-chunk=16 token-chunk=10}",
                                      "gshard-chunk-softmax{vocab-chunk=7},canonicalize,cse"])
def test_rewritten_module_has_loops_and_no_dense_logits(pipeline):
  n = math.prod(IR_BATCH)
  lowered = gshard_op.jit(_avg_xent_step(), pipeline=pipeline).lower(*_ir_args())
  text = lowered.as_text()
  assert "stablehlo.composite" not in text
  assert "gshard.shared_embedding_softmax" not in text  # decompositions erased too
  assert "stablehlo.while" in text
  assert f"tensor<{n}x{IR_V}xf32>" not in text
  assert f"x{IR_V}xf32>" not in text.replace(f"{IR_V}x{IR_M}xf32", "")  # no [*, V] at all
  assert "gshard.plan" in text
  assert lowered.compiler_ir().operation.verify()
  # The dense module, for contrast, has the [N, V] logits.
  dense = jax.jit(_avg_xent_step("reference")).lower(*_ir_args()).as_text()
  assert f"tensor<{n}x{IR_V}xf32>" in dense


def test_plan_is_recorded_in_the_module():
  text = gshard_op.jit(_avg_xent_step(), pipeline=PIPELINES["vocab16_token10"]).lower(
      *_ir_args()).as_text()
  plans = set(re.findall(r'gshard\.plan = "([^"]*)"', text))
  assert plans == {"gshard-chunk-softmax: token_chunk=10 vocab_chunk=16"}


def test_default_pipeline_rewrites_everything():
  lowered = gshard_op.jit(_avg_xent_step()).lower(*_ir_args())
  text = lowered.as_text()
  assert "stablehlo.composite" not in text and "stablehlo.while" in text
  assert lowered.compiler_ir().operation.verify()


def test_inline_leaves_no_composite_and_no_loop():
  lowered = gshard_op.jit(_avg_xent_step(), pipeline="gshard-inline").lower(*_ir_args())
  text = lowered.as_text()
  assert "stablehlo.composite" not in text
  assert "stablehlo.while" not in text
  assert "func.call" in text or "call @" in text
  assert lowered.compiler_ir().operation.verify()


# --- shapes, chunk sizes and options drawn by hypothesis -----------------------------------

@st.composite
def chunk_cases(draw):
  n = draw(st.integers(1, 40))
  v = draw(st.integers(2, 90))
  return dict(
      n=n, m=draw(st.integers(1, 24)), v=v,
      vocab_chunk=draw(st.integers(1, v + 5)),
      token_chunk=draw(st.integers(0, n + 3)),
      labels=draw(st.sampled_from(["ids", "ids_out_of_range", "probs_unnormalized"])),
      soft_cap=draw(st.sampled_from([0.0, 2.0])),
      abs_max=draw(st.sampled_from([0.0, 1.5])),
      z_loss=draw(st.sampled_from([0.0, 0.25])),
      smoothing=draw(st.sampled_from([0.0, 0.15])),
      tgt_denominator=draw(st.booleans()),
      seed=draw(st.integers(0, 2**31 - 1)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_cases())
@with_fast_xla
def test_random_shapes_and_chunks_match_reference(case):
  options = {"soft_cap_logits": case["soft_cap"], "logits_abs_max": case["abs_max"],
             "z_loss_weight": case["z_loss"], "label_smoothing_prob": case["smoothing"],
             "use_tgt_labels_size_as_loss_denominator": case["tgt_denominator"]}
  config = Config(options, labels=case["labels"])
  a = make_arrays(np.random.default_rng(case["seed"]), (case["n"],), case["m"], case["v"],
                  config)
  pipeline = (f"gshard-chunk-softmax{{vocab-chunk={case['vocab_chunk']} "
              f"token-chunk={case['token_chunk']}}}")
  outputs = ("per_example_argmax", "per_example_xent", "avg_xent", "total_xent", "z_loss")
  configs = {"case": config}
  actual = gshard_jit(batch_fn(configs, {"mixed": mixed_loss}, "composite", outputs),
                      pipeline)({"case": a})
  expected = jax.jit(batch_fn(configs, {"mixed": mixed_loss}, "reference", outputs))(
      {"case": a})
  assert_results_close(to_numpy(actual), to_numpy(expected), F32_TOL, prefix=str(case))


# --- vmap -------------------------------------------------------------------------------------

VMAP_PIPELINE = "gshard-chunk-softmax{vocab-chunk=7 token-chunk=4}"


def _vmap_step(implementation, batched_embedding):
  opts = dict(soft_cap_logits=3.0, z_loss_weight=0.1, label_smoothing_prob=0.1)

  def per_example(x, e, ids, w, c):
    o = shared_embedding_softmax(x, e, w, ids, implementation=implementation, **opts)
    return (o.avg_xent + o.z_loss + jnp.sum(c * o.per_example_xent)), o.per_example_argmax

  def loss(x, e, ids, w, c):
    e_axis = 0 if batched_embedding else None
    per, argmax = jax.vmap(per_example, in_axes=(0, e_axis, 0, 0, 0))(x, e, ids, w, c)
    return jnp.sum(per * jnp.arange(1.0, per.shape[0] + 1.0)), argmax

  return jax.value_and_grad(loss, (0, 1), has_aux=True)


def _vmap_args(batched_embedding):
  rng = np.random.default_rng(11)
  b, t, m, v = 3, 9, 8, 23
  e_shape = (b, v, m) if batched_embedding else (v, m)
  return (2.0 * rng.standard_normal((b, t, m)).astype(np.float32),
          rng.standard_normal(e_shape).astype(np.float32),
          rng.integers(0, v, (b, t, 1)).astype(np.int32),
          rng.uniform(0.0, 1.0, (b, t, 1)).astype(np.float32),
          rng.standard_normal((b, t)).astype(np.float32))


@pytest.mark.parametrize("batched_embedding", [False, True],
                         ids=["shared_embedding", "batched_embedding"])
@with_fast_xla
def test_vmap_under_jit(batched_embedding):
  """vmap folds the batch into tokens (shared embedding) or maps the primitive
  with `lax.map` (the gradient always; the forward with a batched embedding):
  composites inside while loops must be rewritten too."""
  args = _vmap_args(batched_embedding)
  step = gshard_op.jit(_vmap_step("composite", batched_embedding), pipeline=VMAP_PIPELINE)
  lowered = step.lower(*args)
  text = lowered.as_text()
  assert "stablehlo.composite" not in text
  assert lowered.compiler_ir().operation.verify()
  # the module before the pass does put a composite inside a while loop
  with gshard_op.lowering("composite"):
    raw = jax.jit(_vmap_step("composite", batched_embedding)).lower(*args).as_text()
  assert re.search(r"stablehlo\.while[\s\S]*stablehlo\.composite", raw)
  actual = to_numpy(step(*args))
  expected = to_numpy(jax.jit(_vmap_step("reference", batched_embedding))(*args))
  assert_results_close(actual, expected, F32_TOL, prefix=f"vmap batched={batched_embedding}")


# --- memory -----------------------------------------------------------------------------------

def test_temp_memory_is_at_most_a_sixteenth_of_dense():
  """N=4096, M=256, V=32768, float32 value_and_grad of the mean loss: XLA's
  temp buffers under the default pipeline are at most 1/16 of dense XLA's."""
  n, m, v = 4096, 256, 32768
  specs = (jax.ShapeDtypeStruct((n, m), jnp.float32), jax.ShapeDtypeStruct((v, m), jnp.float32),
           jax.ShapeDtypeStruct((n, 1), jnp.int32), jax.ShapeDtypeStruct((n, 1), jnp.float32))

  def step(implementation):
    def loss(x, e, ids, w):
      return shared_embedding_softmax(x, e, w, ids, implementation=implementation).avg_xent
    return jax.value_and_grad(loss, (0, 1))

  ours = gshard_op.jit(step("composite")).lower(*specs).compile().memory_analysis()
  dense = jax.jit(step("reference")).lower(*specs).compile().memory_analysis()
  assert dense.temp_size_in_bytes >= n * v * 4  # the [N, V] logits, at least
  assert ours.temp_size_in_bytes * 16 <= dense.temp_size_in_bytes, (
      f"temp bytes: ours {ours.temp_size_in_bytes}, dense {dense.temp_size_in_bytes}")


# --- plan_chunks --------------------------------------------------------------------------------

def _body_bytes(plan: ChunkPlan) -> int:
  return plan.token_chunk * plan.vocab_chunk * 4 * LIVE_CHUNK_BUFFERS


@pytest.mark.parametrize("n,v,budget", [(4096, 32768, 32.0), (8192, 256000, 32.0),
                                        (512, 128256, 8.0), (100, 1000, 1.0),
                                        (4096, 32768, 1.0), (1, 300, 0.001)])
def test_plan_from_budget(n, v, budget):
  plan = plan_chunks(n, v, memory_budget_mib=budget)
  budget_bytes = budget * 2**20
  assert 1 <= plan.token_chunk <= n and 1 <= plan.vocab_chunk <= v
  if plan.vocab_chunk < v:  # a power of two of at least MIN_VOCAB_CHUNK
    assert plan.vocab_chunk >= MIN_VOCAB_CHUNK
    assert plan.vocab_chunk & (plan.vocab_chunk - 1) == 0
  if plan.token_chunk == n:
    # the largest power of two that fits (or the floor of 128 classes)
    if plan.vocab_chunk > MIN_VOCAB_CHUNK:
      assert _body_bytes(plan) <= budget_bytes
    if plan.vocab_chunk < v:
      assert _body_bytes(ChunkPlan(n, 2 * plan.vocab_chunk)) > budget_bytes
  else:  # tokens are split only when even the smallest vocab chunk does not fit
    assert plan.vocab_chunk == min(v, MIN_VOCAB_CHUNK)
    assert n * plan.vocab_chunk * 4 * LIVE_CHUNK_BUFFERS > budget_bytes
    assert plan.token_chunk == 1 or _body_bytes(plan) <= budget_bytes
    assert plan.token_chunk == 1 or _body_bytes(
        ChunkPlan(plan.token_chunk + 1, plan.vocab_chunk)) > budget_bytes


def test_plan_budget_examples():
  # 32 MiB / (4 buffers * 4 bytes) = 2**21 elements; / 4096 tokens = 512 classes
  assert plan_chunks(4096, 32768, memory_budget_mib=32.0) == ChunkPlan(4096, 512)
  assert plan_chunks(4096, 32768, memory_budget_mib=64.0) == ChunkPlan(4096, 1024)
  # a small vocabulary is one chunk
  assert plan_chunks(10, 50, memory_budget_mib=32.0) == ChunkPlan(10, 50)
  assert plan_chunks(10, 5000, memory_budget_mib=32.0) == ChunkPlan(10, 5000)
  assert plan_chunks(10, 300000, memory_budget_mib=32.0) == ChunkPlan(10, 131072)
  # tiny budget: 2**16 elements < 4096 * 128, so tokens are split to 512
  assert plan_chunks(4096, 32768, memory_budget_mib=1.0) == ChunkPlan(512, 128)


def test_plan_explicit_sizes():
  assert plan_chunks(100, 1000, vocab_chunk=64, token_chunk=10,
                     memory_budget_mib=32.0) == ChunkPlan(10, 64)
  assert plan_chunks(100, 1000, vocab_chunk=5000, token_chunk=500,
                     memory_budget_mib=32.0) == ChunkPlan(100, 1000)
  # an explicit vocab chunk, tokens from the budget
  assert plan_chunks(100, 1000, vocab_chunk=7, memory_budget_mib=32.0) == ChunkPlan(100, 7)
  assert plan_chunks(4096, 32768, vocab_chunk=1024, memory_budget_mib=1.0) == ChunkPlan(64, 1024)
  # an explicit token chunk is kept even when over the budget
  assert plan_chunks(4096, 32768, token_chunk=4096, memory_budget_mib=1.0).token_chunk == 4096
  # explicit token chunk, vocab chunk from the budget for that many tokens
  assert plan_chunks(4096, 32768, token_chunk=256, memory_budget_mib=32.0) == ChunkPlan(256, 8192)


def test_pass_uses_plan_chunks():
  p = passes.parse_pipeline("gshard-chunk-softmax{vocab-chunk=7 token-chunk=3 "
                            "memory-budget-mib=2.5}")[0]
  assert isinstance(p, chunk_pass.ChunkSoftmaxPass)
  assert (p.vocab_chunk, p.token_chunk, p.memory_budget_mib) == (7, 3, 2.5)
  with pytest.raises(passes.PipelineError, match="vocab-chunk"):
    passes.parse_pipeline("gshard-chunk-softmax{vocab-chunk=-1}")
  with pytest.raises(passes.PipelineError):
    passes.parse_pipeline("gshard-chunk-softmax{memory-budget-mib=-1}")


def test_every_pass_defaults_to_the_lowerings_budget():
  """One budget default (issue 20): a pass with no memory-budget-mib, or 0,
  plans as the primitives' chunked lowering does on this platform."""
  from gshard_op import budget
  from gshard_op.passes.fuse import FuseForwardBackwardPass, plan_token_chunk
  default = budget.default_mib()
  for text in ("gshard-chunk-softmax", "gshard-chunk-softmax{memory-budget-mib=0}"):
    p = passes.parse_pipeline(text)[0]
    assert p.plan(4096, 32768) == plan_chunks(4096, 32768, memory_budget_mib=default)
  assert passes.parse_pipeline("gshard-shard-vocab")[0].plan(
      4096, 32768) == plan_chunks(4096, 32768, memory_budget_mib=default)
  fuse = passes.parse_pipeline("gshard-fuse-fwd-bwd")[0]
  assert isinstance(fuse, FuseForwardBackwardPass) and fuse.memory_budget_mib == 0
  assert budget.resolve(fuse.memory_budget_mib) == default
  assert plan_token_chunk(2048, 32768, memory_budget_mib=default) == 256

