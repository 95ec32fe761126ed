"""`gshard-fuse-fwd-bwd`: a training step's forward and gradient in one sweep.

Every test compiles `jax.value_and_grad(loss, argnums=(0, 1))` of the
functional op with `gshard_op.jit(..., pipeline=P)` and compares the value,
the forward outputs the step returns (as `has_aux`) and both gradients with
the same step on `implementation="reference"` under plain `jax.jit` (dense
math, JAX's own autodiff). The rewritten module is checked too: a fused step
has its `gshard.plan` naming `gshard-fuse-fwd-bwd` and no composite left; a
step the pass must not fuse is left to `gshard-chunk-softmax`.

XLA compiles dominate the run time, so each compiled function evaluates many
cases at once (one value_and_grad per option configuration and loss, all in
one module), compiled with most XLA optimizations off: the rewrite under test
happens before XLA. The memory test compiles with XLA's defaults.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gshard_op
from gshard_op import shared_embedding_softmax
from pass_testing import Config, assert_close, fast_xla, to_numpy, with_fast_xla

# N = 23 tokens: a multiple of neither token chunk (10, 7); V = 37 classes: not a
# multiple of update-rows=16. M = 12. All three differ, so IR shapes are unambiguous.
N, M, V = 23, 12, 37

PIPELINES = {
    "token10_then_chunk": "gshard-fuse-fwd-bwd{token-chunk=10},gshard-chunk-softmax",
    "fuse_alone": "gshard-fuse-fwd-bwd",
    "token7_rows16": "gshard-fuse-fwd-bwd{token-chunk=7 update-rows=16}",
    "default": None,  # gshard_op.jit's default pipeline (shard, fuse, chunk, cleanup)
}

F32_TOL = dict(value_rtol=1e-5, value_atol=1e-5, grad_rtol=1e-4, grad_atol=1e-5)
BF16_TOL = dict(value_rtol=3e-2, value_atol=3e-2, grad_rtol=5e-2, grad_atol=3e-2)

FUSE_PLAN = re.compile(r'gshard\.plan = "(gshard-fuse-fwd-bwd[^"]*)"')
CHUNK_PLAN = re.compile(r'gshard\.plan = "(gshard-chunk-softmax[^"]*)"')


# --- data ----------------------------------------------------------------------------------

CONFIGS = {
    "plain": Config({}, weights="ones"),
    "soft_cap": Config({"soft_cap_logits": 2.0}),
    "abs_clip": Config({"logits_abs_max": 1.5}),
    "cap_and_clip": Config({"soft_cap_logits": 3.0, "logits_abs_max": 2.0}),
    "z_loss": Config({"z_loss_weight": 0.3}),
    "z_loss_capped": Config({"z_loss_weight": 0.2, "soft_cap_logits": 2.5,
                             "logits_abs_max": 2.0}),
    "label_smoothing": Config({"label_smoothing_prob": 0.2}),
    "soft_labels": Config({"z_loss_weight": 0.1}, labels="probs"),
    "soft_labels_unnormalized": Config({"label_smoothing_prob": 0.1, "z_loss_weight": 0.1},
                                       labels="probs_unnormalized"),
    "weight_denominator": Config({"use_tgt_labels_size_as_loss_denominator": False,
                                  "z_loss_weight": 0.1}),
    "out_of_range_ids": Config({"label_smoothing_prob": 0.1, "z_loss_weight": 0.1},
                               labels="ids_out_of_range"),
    "everything": Config({"soft_cap_logits": 3.0, "logits_abs_max": 2.5, "z_loss_weight": 0.2,
                          "label_smoothing_prob": 0.1,
                          "use_tgt_labels_size_as_loss_denominator": False},
                         labels="ids_out_of_range"),
}


def make_arrays(rng: np.random.Generator, config: Config, n=N, m=M, v=V,
                input_std: float = 2.5) -> dict:
  """Layer arguments for `n` tokens, plus random cotangents `c[n]` and `c_full[n, v]`."""
  x = (input_std * rng.standard_normal((n, m))).astype(np.float32)
  e = rng.standard_normal((v, m)).astype(np.float32)
  if config.weights == "ones":
    w = np.ones((n, 1), np.float32)
  else:
    w = rng.uniform(0.0, 2.0, (n, 1))
    w[rng.uniform(size=w.shape) < 0.3] = 0.0
    w[0, 0] = 1.25  # never all zero: the weight denominator
    w = w.astype(np.float32)
  ids = probs = None
  if config.labels.startswith("ids"):
    ids = rng.integers(0, v, (n,)).astype(np.int32)
    if config.labels == "ids_out_of_range":
      bad = np.array([v, -1, v + 7, -v, 2**30], np.int32)
      ids[rng.choice(n, size=len(bad), replace=False)] = bad
    ids = ids[:, None]
  else:
    z = 2.0 * rng.standard_normal((n, v))
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if config.labels == "probs_unnormalized":
      probs *= rng.uniform(0.3, 2.0, (n, 1))
    probs = probs.astype(np.float32)
  return dict(x=x, e=e, w=w, ids=ids, probs=probs,
              c=rng.standard_normal((n,)).astype(np.float32),
              c_full=rng.standard_normal((n, v)).astype(np.float32))


def _cases(configs, seed):
  rng = np.random.default_rng(seed)
  return {name: make_arrays(rng, cfg) for name, cfg in configs.items()}


# --- the steps compared ----------------------------------------------------------------------

def _f32(v):
  return v.astype(jnp.float32)


# Losses whose cotangents reaching the gradient composite do not depend on the
# forward's results: the pass must fuse them.
FUSABLE_LOSSES = {
    "avg_xent": lambda o, a: _f32(o.avg_xent),
    "avg_xent_plus_z_loss": lambda o, a: _f32(o.avg_xent) + o.z_loss,
    # the "no reduction" case: an arbitrary per-token cotangent
    "weighted_per_example_xent": lambda o, a: jnp.sum(a["c"] * _f32(o.per_example_xent)),
}

# Losses whose cotangents are functions of the forward's results: the gradient
# cannot be computed inside the forward sweep.
UNFUSABLE_LOSSES = {
    "per_example_xent_squared": lambda o, a: jnp.sum(_f32(o.per_example_xent) ** 2),
    "log_probs_squared": lambda o, a: jnp.sum(a["c_full"] * _f32(o.log_probs) ** 2) / N,
    "z_loss_times_avg_xent": lambda o, a: (1.0 + o.z_loss) * _f32(o.avg_xent),
}

AUX = ("per_example_xent", "per_example_argmax", "avg_xent", "total_xent", "total_weight",
       "z_loss")


def op(a, x, e, options, implementation):
  return shared_embedding_softmax(x, e, a["w"], a["ids"], a["probs"],
                                  implementation=implementation, **options)


def step_of(a, options, loss, implementation):
  """`value_and_grad(loss, argnums=(0, 1), has_aux=True)` at `(a["x"], a["e"])`;
  the aux are the forward outputs the fused loop produces."""
  def f(x, e):
    out = op(a, x, e, options, implementation)
    return loss(out, a), {k: out[k] for k in AUX}
  return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(a["x"], a["e"])


def batch_fn(configs: dict[str, Config], losses: dict, implementation: str):
  """A function of `{case: arrays}` running every (case, loss) step in one module."""
  def f(cases):
    return {name: {loss: step_of(cases[name], configs[name].options, fn, implementation)
                   for loss, fn in losses.items()}
            for name in configs}
  return f


def assert_step_close(actual, expected, tol, what, *, skip_d_e=False):
  """`((value, aux), (d_x, d_e))` trees: values, aux (argmax exactly), gradients."""
  (value, aux), (d_x, d_e) = actual
  (want_value, want_aux), (want_dx, want_de) = expected
  assert_close(value, want_value, rtol=tol["value_rtol"], atol_rel=tol["value_atol"],
               what=f"{what} value")
  assert set(aux) == set(want_aux)
  for k in want_aux:
    assert_close(aux[k], want_aux[k], rtol=tol["value_rtol"], atol_rel=tol["value_atol"],
                 what=f"{what} {k}")
  assert_close(d_x, want_dx, rtol=tol["grad_rtol"], atol_rel=tol["grad_atol"],
               what=f"{what} d_inputs")
  if not skip_d_e:
    assert_close(d_e, want_de, rtol=tol["grad_rtol"], atol_rel=tol["grad_atol"],
                 what=f"{what} d_embedding")


def lower_and_run(f, pipeline, *args):
  """`(rewritten module text, results)` of `gshard_op.jit(f, pipeline=pipeline)`."""
  jitted = gshard_op.jit(f, pipeline=pipeline)
  lowered = jitted.lower(*args)
  assert lowered.compiler_ir().operation.verify()
  text = lowered.as_text()
  return text, to_numpy(lowered.compile()(*args))


def assert_fused(text, pairs: int, distinct: int | None = None):
  """`pairs` fused loops; as few as `distinct` after `cse` (the default pipeline
  ends with it) merged steps computing the same thing."""
  plans = FUSE_PLAN.findall(text)
  assert (distinct or pairs) <= len(plans) <= pairs, (
      f"{len(plans)} fused loops for {pairs} steps: {set(plans)}")
  assert "stablehlo.composite" not in text
  assert "gshard.shared_embedding_softmax" not in text  # decompositions erased too
  assert not CHUNK_PLAN.findall(text), "a step was left to gshard-chunk-softmax"


def assert_not_fused(text, loops: int):
  assert not FUSE_PLAN.findall(text), set(FUSE_PLAN.findall(text))
  assert len(CHUNK_PLAN.findall(text)) == loops, CHUNK_PLAN.findall(text)
  assert "stablehlo.composite" not in text


# --- every option, several losses, every pipeline --------------------------------------------

@functools.lru_cache(maxsize=None)
def _options_reference():
  cases = _cases(CONFIGS, 2024)
  with fast_xla():
    ref = jax.jit(batch_fn(CONFIGS, FUSABLE_LOSSES, "reference"))(cases)
  return cases, to_numpy(ref)


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@with_fast_xla
def test_fused_step_matches_reference(pipeline):
  """Every option x {avg_xent, avg_xent + z_loss, sum(c * per_example_xent)}: all
  36 steps of one module are fused (one loop each) and match the reference."""
  cases, expected = _options_reference()
  text, actual = lower_and_run(batch_fn(CONFIGS, FUSABLE_LOSSES, "composite"),
                               PIPELINES[pipeline], cases)
  # With z_loss_weight = 0, `avg_xent + z_loss` is the same step as `avg_xent`.
  same = sum(1 for c in CONFIGS.values() if not c.options.get("z_loss_weight"))
  pairs = len(CONFIGS) * len(FUSABLE_LOSSES)
  assert_fused(text, pairs, distinct=pairs - same if pipeline == "default" else pairs)
  for name in CONFIGS:
    for loss in FUSABLE_LOSSES:
      assert_step_close(actual[name][loss], expected[name][loss], F32_TOL,
                        f"[{pipeline}] {name} loss={loss}")


def test_plans_record_the_token_chunk():
  a = _cases({"plain": CONFIGS["plain"]}, 1)["plain"]
  for pipeline, plan in [
      (PIPELINES["token10_then_chunk"], "gshard-fuse-fwd-bwd: token_chunk=10 accumulator=f32"),
      (PIPELINES["token7_rows16"], "gshard-fuse-fwd-bwd: token_chunk=7 accumulator=f32"),
      # one block of every token when the budget allows it
      (PIPELINES["fuse_alone"], f"gshard-fuse-fwd-bwd: token_chunk={N} accumulator=f32"),
      ("gshard-fuse-fwd-bwd{token-chunk=7 accumulate-bf16=true}",
       "gshard-fuse-fwd-bwd: token_chunk=7 accumulator=bf16")]:
    # a fresh function each time: see test_one_function_under_two_pipelines
    f = lambda x, e: step_of(dict(a, x=x, e=e), {}, FUSABLE_LOSSES["avg_xent"], "composite")
    text = gshard_op.jit(f, pipeline=pipeline).lower(a["x"], a["e"]).as_text()
    assert FUSE_PLAN.findall(text) == [plan], (pipeline, FUSE_PLAN.findall(text))


@with_fast_xla
def test_gradients_are_not_trivially_zero():
  """Guards the comparisons above: the cases have sizeable gradients."""
  _, expected = _options_reference()
  for name in CONFIGS:
    for loss in FUSABLE_LOSSES:
      _, (d_x, d_e) = expected[name][loss]
      assert np.max(np.abs(d_x)) > 1e-3 and np.max(np.abs(d_e)) > 1e-3, (name, loss)


# --- what must not be fused --------------------------------------------------------------------

UNFUSABLE_CONFIGS = {"everything": CONFIGS["everything"],
                     "soft_labels_unnormalized": CONFIGS["soft_labels_unnormalized"]}


@with_fast_xla
def test_cotangents_depending_on_the_forward_are_not_fused():
  """`sum(per_example_xent ** 2)`, a nonlinear loss of `log_probs` and
  `(1 + z_loss) * avg_xent`: the gradient needs the forward's results, so the
  pass leaves both composites to `gshard-chunk-softmax` (two loops a step), and
  the result is still right."""
  cases = _cases(UNFUSABLE_CONFIGS, 77)
  expected = to_numpy(jax.jit(batch_fn(UNFUSABLE_CONFIGS, UNFUSABLE_LOSSES, "reference"))(cases))
  pipeline = "gshard-fuse-fwd-bwd{token-chunk=10},gshard-chunk-softmax{vocab-chunk=16}"
  text, actual = lower_and_run(batch_fn(UNFUSABLE_CONFIGS, UNFUSABLE_LOSSES, "composite"),
                               pipeline, cases)
  assert_not_fused(text, 2 * len(UNFUSABLE_CONFIGS) * len(UNFUSABLE_LOSSES))
  for name in UNFUSABLE_CONFIGS:
    for loss in UNFUSABLE_LOSSES:
      assert_step_close(actual[name][loss], expected[name][loss], F32_TOL,
                        f"[unfusable] {name} loss={loss}")


@with_fast_xla
def test_linear_log_probs_loss_is_fused_and_right():
  """`sum(c_full * log_probs)` reads `log_probs = logits - logsumexp`: the
  logsumexp's cotangent, `-sum(c_full, -1)`, does not depend on the forward,
  so the step may fuse; the dense `logits` path adds its own gradient."""
  configs = {"everything": CONFIGS["everything"]}
  losses = {"log_probs": lambda o, a: jnp.sum(a["c_full"] * _f32(o.log_probs)),
            "log_probs_and_xent": lambda o, a: (jnp.sum(a["c_full"] * _f32(o.log_probs))
                                                + _f32(o.avg_xent) + o.z_loss)}
  cases = _cases(configs, 78)
  expected = to_numpy(jax.jit(batch_fn(configs, losses, "reference"))(cases))
  text, actual = lower_and_run(batch_fn(configs, losses, "composite"),
                               PIPELINES["token7_rows16"], cases)
  assert len(FUSE_PLAN.findall(text)) == len(losses)
  assert "stablehlo.composite" not in text
  for loss in losses:
    assert_step_close(actual["everything"][loss], expected["everything"][loss], F32_TOL,
                      f"[log_probs] loss={loss}")


@with_fast_xla
def test_budget_too_small_for_a_block_is_left_to_chunking():
  """`memory-budget-mib=0.001` fits fewer than 8 tokens of `[T, V]` blocks: not
  fused; `gshard-chunk-softmax` rewrites both composites."""
  configs = {"everything": CONFIGS["everything"], "soft_labels": CONFIGS["soft_labels"]}
  losses = {"mixed": lambda o, a: (_f32(o.avg_xent) + o.z_loss
                                   + jnp.sum(a["c"] * _f32(o.per_example_xent)))}
  cases = _cases(configs, 79)
  expected = to_numpy(jax.jit(batch_fn(configs, losses, "reference"))(cases))
  pipeline = ("gshard-fuse-fwd-bwd{memory-budget-mib=0.001},"
              "gshard-chunk-softmax{vocab-chunk=16 token-chunk=10}")
  text, actual = lower_and_run(batch_fn(configs, losses, "composite"), pipeline, cases)
  assert_not_fused(text, 2 * len(configs))
  for name in configs:
    assert_step_close(actual[name]["mixed"], expected[name]["mixed"], F32_TOL,
                      f"[tiny budget] {name}")
  # The same module with a budget that fits the blocks is fused.
  text = gshard_op.jit(batch_fn(configs, losses, "composite"),
                       pipeline="gshard-fuse-fwd-bwd{memory-budget-mib=1}").lower(cases).as_text()
  assert_fused(text, len(configs))


def test_fuse_plan_from_budget():
  from gshard_op.passes import fuse
  assert fuse.plan_token_chunk(N, V, memory_budget_mib=0.001) is None
  assert fuse.plan_token_chunk(N, V, memory_budget_mib=256.0) == N
  assert fuse.plan_token_chunk(N, V, token_chunk=10, memory_budget_mib=0.001) == 10
  assert fuse.plan_token_chunk(N, V, token_chunk=100, memory_budget_mib=0.001) == N
  # [T, V] float32 buffers, LIVE_BLOCK_BUFFERS of them: 64 MiB / (2 * 4 * 32768) = 256
  assert fuse.plan_token_chunk(2048, 32768, memory_budget_mib=64.0) == 256
  assert fuse.plan_token_chunk(2048, 32768, memory_budget_mib=0.2) is None  # 6 tokens


# --- accumulators and bf16 ---------------------------------------------------------------------

BF16_CONFIGS = {"everything": CONFIGS["everything"],
                "soft_labels_unnormalized": CONFIGS["soft_labels_unnormalized"],
                "plain": CONFIGS["plain"]}
BF16_LOSSES = {"mixed": lambda o, a: (_f32(o.avg_xent) + o.z_loss
                                      + jnp.sum(a["c"] * _f32(o.per_example_xent)))}


@with_fast_xla
def test_accumulate_bf16_option():
  """float32 operands, `accumulate-bf16=true`: d_embedding is summed in bf16
  across the token blocks (within ~1e-2 of the reference, and not bitwise the
  float32 sum); everything else is computed as without the option."""
  cases = _cases(BF16_CONFIGS, 31)
  expected = to_numpy(jax.jit(batch_fn(BF16_CONFIGS, BF16_LOSSES, "reference"))(cases))
  text, actual = lower_and_run(batch_fn(BF16_CONFIGS, BF16_LOSSES, "composite"),
                               "gshard-fuse-fwd-bwd{token-chunk=7 accumulate-bf16=true}", cases)
  assert_fused(text, len(BF16_CONFIGS))
  assert all(p.endswith("accumulator=bf16") for p in FUSE_PLAN.findall(text))
  assert fused_carry_types(text)[0].count(f"tensor<{V}x{M}xbf16>") == 1
  _, exact = lower_and_run(batch_fn(BF16_CONFIGS, BF16_LOSSES, "composite"),
                           "gshard-fuse-fwd-bwd{token-chunk=7}", cases)
  for name in BF16_CONFIGS:
    got, want = actual[name]["mixed"], expected[name]["mixed"]
    assert_step_close(got, want, F32_TOL, f"[accumulate-bf16] {name}", skip_d_e=True)
    assert got[1][1].dtype == want[1][1].dtype == np.float32  # the embedding's dtype
    d_e, want_de = got[1][1].astype(np.float64), want[1][1].astype(np.float64)
    rel = np.linalg.norm(d_e - want_de) / np.linalg.norm(want_de)
    assert rel <= 1e-2, f"{name}: d_embedding relative error {rel}"
    assert_close(got[1][1], want[1][1], rtol=1e-2, atol_rel=1e-2,
                 what=f"[accumulate-bf16] {name} d_embedding")
    # the float32 accumulator is much closer: the option does change the sum
    exact_rel = (np.linalg.norm(exact[name]["mixed"][1][1] - want_de)
                 / np.linalg.norm(want_de))
    assert exact_rel < 1e-5 and rel > 10 * exact_rel, (name, rel, exact_rel)


def fused_carry_types(text) -> list[str]:
  """The carried types of each fused `stablehlo.while`, as printed."""
  return re.findall(r"stablehlo\.while\([^\n]*?\) : ([^\n]*?) attributes "
                    r"\{gshard\.plan = \"gshard-fuse-fwd-bwd", text)


@pytest.mark.parametrize("pipeline", ["gshard-fuse-fwd-bwd{token-chunk=7 update-rows=16}",
                                      None])
@with_fast_xla
def test_bfloat16_operands_match_float32_reference(pipeline):
  """bf16 inputs and embedding, fused, against the float32 reference on the
  same (bf16-representable) values; loose tolerance for bf16 rounding."""
  cases = _cases(BF16_CONFIGS, 5)
  for a in cases.values():
    for k in ("x", "e"):
      a[k] = np.asarray(jnp.asarray(a[k], jnp.bfloat16).astype(jnp.float32))
  bf16 = {n: dict(a, x=jnp.asarray(a["x"], jnp.bfloat16), e=jnp.asarray(a["e"], jnp.bfloat16))
          for n, a in cases.items()}
  text, actual = lower_and_run(batch_fn(BF16_CONFIGS, BF16_LOSSES, "composite"), pipeline, bf16)
  assert_fused(text, len(BF16_CONFIGS))
  expected = to_numpy(jax.jit(batch_fn(BF16_CONFIGS, BF16_LOSSES, "reference"))(cases))
  for name in BF16_CONFIGS:
    got = actual[name]["mixed"]
    assert got[1][0].dtype == jnp.bfloat16 and got[1][1].dtype == jnp.bfloat16
    assert got[0][1]["per_example_xent"].dtype == jnp.bfloat16
    as_f32 = jax.tree.map(lambda t: t.astype(np.int32 if t.dtype == np.int32 else np.float32),
                          got)
    (value, aux), grads = as_f32
    # bf16 logits can reorder near-ties: the argmax is checked in the f32 tests
    aux = dict(aux, per_example_argmax=expected[name]["mixed"][0][1]["per_example_argmax"])
    assert_step_close(((value, aux), grads), expected[name]["mixed"], BF16_TOL,
                      f"[{pipeline}] bf16 {name}")


@pytest.mark.parametrize("accumulate_bf16", [False, True])
def test_d_embedding_accumulator_dtype_for_bf16_embedding(accumulate_bf16):
  """A bf16 embedding's d_embedding is carried through the fused loop in
  float32 by default, in bf16 only with `accumulate-bf16=true`."""
  a = _cases({"plain": CONFIGS["plain"]}, 2)["plain"]
  x, e = jnp.asarray(a["x"], jnp.bfloat16), jnp.asarray(a["e"], jnp.bfloat16)
  f = lambda x, e: step_of(dict(a, x=x, e=e), {"z_loss_weight": 0.1},
                           FUSABLE_LOSSES["avg_xent_plus_z_loss"], "composite")
  pipeline = f"gshard-fuse-fwd-bwd{{token-chunk=7 accumulate-bf16={str(accumulate_bf16).lower()}}}"
  text = gshard_op.jit(f, pipeline=pipeline).lower(x, e).as_text()
  (carried,) = fused_carry_types(text)
  f32, bf16 = f"tensor<{V}x{M}xf32>", f"tensor<{V}x{M}xbf16>"
  # The accumulator is the loop's last carry; the bf16 embedding itself is
  # carried too (JAX passes a loop's invariant operands through it).
  *others, accumulator = carried.split(", ")
  if accumulate_bf16:
    assert accumulator == bf16 and f32 not in others, carried
  else:
    assert accumulator == f32 and f32 not in others, carried
  # the step's d_embedding result has the embedding's dtype either way
  signature = re.search(r"func\.func public @main\(.*\) -> \((.*)\) \{", text).group(1)
  assert bf16 in signature, signature


# --- three matmuls, one sweep ---------------------------------------------------------------------

def test_fused_loop_has_three_matmuls_and_no_recomputation():
  """One loop over token blocks holding exactly three dot_generals: the block's
  logits `[T, V]`, `d_x = dz @ E` and `d_E += dz.T @ x` (in the row-update
  loop); nothing else in the module multiplies by the embedding."""
  a = _cases({"plain": CONFIGS["plain"]}, 3)["plain"]
  f = lambda x, e: step_of(dict(a, x=x, e=e), {"soft_cap_logits": 3.0},
                           FUSABLE_LOSSES["weighted_per_example_xent"], "composite")
  text = gshard_op.jit(f, pipeline=PIPELINES["token7_rows16"]).lower(a["x"], a["e"]).as_text()
  dots = re.findall(r"stablehlo\.dot_general .*", text)
  assert len(dots) == 3, dots
  assert any(f"-> tensor<7x{V}xf32>" in d for d in dots)       # the block's logits
  assert any(f"-> tensor<7x{M}xf32>" in d for d in dots)       # d_x of the block
  assert any(f"-> tensor<16x{M}xf32>" in d for d in dots)      # 16 rows of d_E
  assert text.count("stablehlo.while") == 2                    # token blocks + row updates
  assert len(FUSE_PLAN.findall(text)) == 1


# --- gshard_op.jit and JAX's caches -------------------------------------------------------------

def test_one_function_under_two_pipelines():
  """The same step function under two pipelines: each lowering is its own."""
  a = _cases({"plain": CONFIGS["plain"]}, 4)["plain"]
  f = lambda x, e: step_of(dict(a, x=x, e=e), {}, FUSABLE_LOSSES["avg_xent"], "composite")
  fused = gshard_op.jit(f, pipeline="gshard-fuse-fwd-bwd{token-chunk=7}").lower(a["x"], a["e"])
  assert len(FUSE_PLAN.findall(fused.as_text())) == 1
  chunked = gshard_op.jit(f, pipeline="gshard-chunk-softmax{vocab-chunk=16}").lower(
      a["x"], a["e"]).as_text()
  assert not FUSE_PLAN.findall(chunked) and len(CHUNK_PLAN.findall(chunked)) == 2
  plain = jax.jit(f).lower(a["x"], a["e"]).as_text()  # the primitives' own lowering
  assert "stablehlo.composite" not in plain and "gshard.plan = \"gshard-lowering" in plain
  with gshard_op.lowering("composite"):
    plain = jax.jit(f).lower(a["x"], a["e"]).as_text()
  assert plain.count("stablehlo.composite") == 2 and "gshard.plan" not in plain


# --- memory ------------------------------------------------------------------------------------------

def test_fused_step_temp_memory_is_at_most_an_eighth_of_dense():
  """N=2048, M=512, V=32768 float32, value_and_grad of the mean loss, fused with
  256-token blocks: XLA's temp buffers are at most 1/8 of dense XLA's."""
  n, m, v = 2048, 512, 32768
  args = (jnp.zeros((n, m), jnp.float32), jnp.zeros((v, m), jnp.float32),
          jnp.zeros((n, 1), jnp.int32), jnp.ones((n, 1), jnp.float32))

  def step(implementation):
    def loss(x, e, ids, w):
      return shared_embedding_softmax(x, e, w, ids, implementation=implementation).avg_xent
    return jax.value_and_grad(loss, (0, 1))

  lowered = gshard_op.jit(step("composite"),
                          pipeline="gshard-fuse-fwd-bwd{token-chunk=256}").lower(*args)
  assert FUSE_PLAN.findall(lowered.as_text()) == [
      "gshard-fuse-fwd-bwd: token_chunk=256 accumulator=f32"]
  ours = lowered.compile().memory_analysis().temp_size_in_bytes
  dense = jax.jit(step("reference")).lower(*args).compile().memory_analysis().temp_size_in_bytes
  print(f"fused temp {ours / 2**20:.1f} MiB, dense temp {dense / 2**20:.1f} MiB "
        f"(1/{dense / ours:.2f})")
  assert dense >= n * v * 4  # the [N, V] logits, at least
  assert ours * 8 <= dense, (f"fused temp {ours / 2**20:.2f} MiB > 1/8 of dense "
                             f"{dense / 2**20:.2f} MiB")
