"""The scenarios of `tests/test_shard_pass.py`, on 8 host CPU devices.

`tests/conftest.py` gives the pytest process 8 host CPU devices
(`jax_num_cpu_devices`), so each scenario runs in it: `test_shard_pass.py`
calls `run(name)`, which runs a scenario once and keeps what it returns. The
checks are made here (assertions); facts the tests check themselves (memory
figures, warnings, an error message) are what a scenario returns.

Scenarios (see `SCENARIOS`): `mesh8` is (8,) "model" with the embedding's
vocabulary on all 8 devices, tokens replicated, and the layouts the pass
leaves alone; `mesh2x4` and `mesh4x2` are ("data", "model") meshes with tokens
on "data"; on (2, 4) also the Explicit-axes scenario and the memory comparison.
"""

from __future__ import annotations

import functools
import math
import re
import warnings

import numpy as np

from pass_testing import assert_close, to_numpy

DEVICES = 8

# Batch (4, 6): N = 24 tokens flattened from two leading dims (the pass follows
# the reshape back to x's annotation). M = 20, V = 112: V / 8 = 14, V / 4 = 28,
# V / 2 = 56, N / 2 = 12, N / 4 = 6; every size differs, so a collective's
# shape says which dims it has.
BATCH, M, V = (4, 6), 20, 112
N = math.prod(BATCH)

EVERYTHING = dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1,
                  label_smoothing_prob=0.1, use_tgt_labels_size_as_loss_denominator=False)
# name: (options, labels)
CASES = {
    "ids_everything": (EVERYTHING, "ids_out_of_range"),
    "probs_everything": (dict(EVERYTHING, use_tgt_labels_size_as_loss_denominator=True),
                         "probs_unnormalized"),
    "ids_smoothing_z_loss": (dict(label_smoothing_prob=0.2, z_loss_weight=0.3), "ids"),
}
PIPELINES = {
    # V_local = 14, 28 or 56 classes in chunks of 5 (a partial last chunk);
    # N_local = 24, 12 or 6 tokens in blocks of 5.
    "shard_chunks": "gshard-shard-vocab{vocab-chunk=5 token-chunk=5},gshard-chunk-softmax",
    "default": None,
}
TOKEN_BLOCK = {"shard_chunks": 5, "default": None}
AUX = ("per_example_xent", "per_example_argmax", "avg_xent", "total_xent", "z_loss")

TOL = dict(value_rtol=1e-5, value_atol=1e-5, grad_rtol=1e-4, grad_atol=1e-5)


# --- data and steps ------------------------------------------------------------------------------

def make_arrays(rng, options_labels, batch=BATCH, m=M, v=V):
  _, labels = options_labels
  x = (2.5 * rng.standard_normal(batch + (m,))).astype(np.float32)
  e = rng.standard_normal((v, m)).astype(np.float32)
  w = rng.uniform(0.0, 2.0, batch + (1,))
  w[rng.uniform(size=w.shape) < 0.3] = 0.0
  w.reshape(-1)[0] = 1.25
  w = w.astype(np.float32)
  if labels.startswith("ids"):
    ids = rng.integers(0, v, batch).astype(np.int32)
    if labels == "ids_out_of_range":
      flat = ids.reshape(-1)
      bad = np.array([v, -1, v + 7, -v, 2**30], np.int32)
      flat[rng.choice(flat.size, size=len(bad), replace=False)] = bad
    y = ids[..., None]
  else:
    z = 2.0 * rng.standard_normal(batch + (v,))
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    probs *= rng.uniform(0.3, 2.0, batch + (1,))
    y = probs.astype(np.float32)
  return dict(x=x, e=e, w=w, y=y, c=rng.standard_normal(batch).astype(np.float32))


def step_fn(cases: dict, implementation: str, constrain=None):
  """`{case: value_and_grad(loss, argnums=(0, 1), has_aux=True)}` of the mixed
  loss `avg_xent + z_loss + sum(c * per_example_xent)`, all cases in one module.
  `constrain(name, embedding)`, if given, is applied to each embedding first."""
  import jax
  import jax.numpy as jnp

  import gshard_op

  def one(name, a):
    options, labels = cases[name]
    key = "class_ids" if labels.startswith("ids") else "class_probabilities"

    def loss(x, e):
      if constrain is not None:
        e = constrain(name, e)
      out = gshard_op.shared_embedding_softmax(x, e, a["w"], **{key: a["y"]},
                                               implementation=implementation, **options)
      value = (out.avg_xent.astype(jnp.float32) + out.z_loss
               + jnp.sum(a["c"] * out.per_example_xent.astype(jnp.float32)))
      return value, {k: out[k] for k in AUX}

    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(a["x"], a["e"])

  return lambda arrays: {name: one(name, arrays[name]) for name in cases}


def reference(cases, arrays):
  """The dense reference, unsharded, on one device."""
  import jax
  return to_numpy(jax.jit(step_fn(cases, "reference"))(arrays))


def assert_steps_close(actual, expected, what):
  for name in expected:
    (value, aux), grads = actual[name]
    (want_value, want_aux), want_grads = expected[name]
    assert_close(value, want_value, rtol=TOL["value_rtol"], atol_rel=TOL["value_atol"],
                 what=f"{what} {name} loss")
    for k in want_aux:  # per_example_argmax: exactly
      assert_close(aux[k], want_aux[k], rtol=TOL["value_rtol"], atol_rel=TOL["value_atol"],
                   what=f"{what} {name} {k}")
    for g, want, which in zip(grads, want_grads, ("d_inputs", "d_embedding")):
      assert_close(g, want, rtol=TOL["grad_rtol"], atol_rel=TOL["grad_atol"],
                   what=f"{what} {name} {which}")
      assert np.max(np.abs(want)) > 1e-3, f"{what} {name} {which}: trivially small"


# --- the compiled collectives ----------------------------------------------------------------------

_COLLECTIVE = re.compile(
    r"=\s*(?P<type>\([^()]*\)|[a-z0-9]+\[[0-9,]*\](?:\{[^}]*\})?)\s+"
    r"(?P<op>all-reduce|all-reduce-start|all-gather|all-gather-start|all-to-all|"
    r"reduce-scatter|collective-permute|collective-permute-start)\(")
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([0-9,]*)\]")


def collectives(hlo_text: str) -> list[tuple[str, list[tuple[int, ...]]]]:
  """`(op, [shape of each result array])` of every collective in compiled HLO."""
  found = []
  for m in _COLLECTIVE.finditer(hlo_text):
    shapes = [tuple(int(d) for d in dims.split(",") if d) for _, dims in _ARRAY.findall(m["type"])]
    found.append((m["op"], shapes))
  return found


def check_collectives(hlo_text: str, *, n_local: int, v_local: int,
                      token_block: int | None = None) -> dict:
  """No all-gather at all; every all-reduce is O(N) or `[N_local, M]` or
  `[V_local, M]`: never the global V, never a token dim with a vocab dim.
  `token_block`: the token chunk of the pipeline, if any (per-block
  all-reduces of `[T]` statistics and `[T, M]` partial `d_x`)."""
  found = collectives(hlo_text)
  every = re.findall(r"\s(all-[a-z-]+|reduce-scatter|collective-permute[a-z-]*)\(", hlo_text)
  assert len(found) == len(every), f"parsed {len(found)} of {len(every)} collectives"
  assert "all-gather" not in hlo_text, [l for l in hlo_text.splitlines() if "all-gather" in l][:3]
  kinds = sorted({op for op, _ in found})
  assert set(kinds) <= {"all-reduce", "all-reduce-start"}, f"unexpected collectives {kinds}"
  token_dims, vocab_dims = {N, n_local, token_block or N}, {V, v_local}
  shapes = sorted({s for _, ss in found for s in ss})
  for s in shapes:
    assert V not in s, f"an all-reduce of shape {s} has the global vocabulary {V}"
    assert not (token_dims & set(s) and vocab_dims & set(s)), (
        f"an all-reduce of shape {s} has a token and a vocab dimension")
    assert len(s) <= 2, s
    if len(s) == 1:
      assert s[0] in token_dims | {M}, f"all-reduce of shape {s}"
    if len(s) == 2:
      assert s in {(t, M) for t in token_dims} | {(v_local, M)}, f"all-reduce of shape {s}"
  return {"collectives": kinds, "all_reduce_shapes": [list(s) for s in shapes],
          "all_reduces": len(found)}


# --- scenarios -----------------------------------------------------------------------------------

def _mesh(shape, names, explicit=False):
  import jax
  from jax.sharding import AxisType
  kind = AxisType.Explicit if explicit else AxisType.Auto
  return jax.make_mesh(shape, names, axis_types=(kind,) * len(names))


def _put(mesh, arrays, specs):
  import jax
  from jax.sharding import NamedSharding
  return {k: jax.device_put(a, NamedSharding(mesh, specs[k])) for k, a in arrays.items()}


def _specs(token_axis, labels_probs_on_model, labels):
  from jax.sharding import PartitionSpec as P
  tok = P(token_axis, None, None)
  probs = P(token_axis, None, "model" if labels_probs_on_model else None)
  return dict(x=tok, e=P("model", None), w=tok, c=P(token_axis, None),
              y=probs if labels.startswith("probs") else tok)


def _arrays(seed):
  rng = np.random.default_rng(seed)
  return {name: make_arrays(rng, case) for name, case in CASES.items()}


def _run_pipeline(fn, pipeline, args, *, catch_warnings=True):
  """`(rewritten text, compiled HLO text, results, warnings)`."""
  import gshard_op
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lowered = gshard_op.jit(fn, pipeline=pipeline).lower(args)
  assert lowered.compiler_ir().operation.verify()
  compiled = lowered.compile()
  return (lowered.as_text(), compiled.as_text(), to_numpy(compiled(args)),
          [f"{w.category.__name__}: {w.message}" for w in caught])


def sharded_scenario(shape, names, *, probs_on_model: bool, seed: int) -> dict:
  """Every case under every pipeline on the mesh: values, argmax and gradients
  vs the unsharded reference; the rewritten and compiled modules."""
  arrays = _arrays(seed)
  want = reference(CASES, arrays)
  mesh = _mesh(shape, names)
  axes = dict(zip(names, shape))
  token_axis = "data" if "data" in axes else None
  vocab_shards, token_shards = axes["model"], axes.get("data", 1)
  n_local, v_local = N // token_shards, V // vocab_shards
  args = {name: _put(mesh, a, _specs(token_axis, probs_on_model, CASES[name][1]))
          for name, a in arrays.items()}
  facts = {}
  for pname, pipeline in PIPELINES.items():
    text, hlo, got, caught = _run_pipeline(step_fn(CASES, "composite"), pipeline, args)
    assert not caught, caught
    assert "stablehlo.composite" not in text
    manual = re.findall(r"sdy\.manual_computation", text)
    assert len(manual) == 2 * len(CASES), f"{len(manual)} manual computations"
    plans = re.findall(r'gshard\.plan = "(gshard-shard-vocab[^"]*)"', text)
    assert len(plans) == 2 * len(CASES), plans
    tokens = f"['{token_axis}']" if token_axis else "none"
    assert set(plans) == {f"gshard-shard-vocab: vocab over ['model'] ({vocab_shards} shards), "
                          f"tokens over {tokens}"}, set(plans)
    assert re.search(r'manual_axes=\{[^}]*"model"', text), "manual axes"
    assert re.search(r'in_shardings=\[<@mesh, \[[^\]]*\]>, <@mesh, \[\{"model"\}, \{\}\]>', text)
    # local shapes inside the regions
    assert f"tensor<{v_local}x{M}xf32>" in text and f"tensor<{n_local}x{M}xf32>" in text
    assert "stablehlo.all_reduce" in text and "stablehlo.partition_id" in text
    facts[pname] = check_collectives(hlo, n_local=n_local, v_local=v_local,
                                     token_block=TOKEN_BLOCK[pname])
    assert_steps_close(got, want, f"[{shape} {pname}]")
    # the results keep the operands' layout: d_embedding stays vocab-sharded
    assert got is not None
  return facts


def fallback_model_dim(shape, names, embedding_spec) -> dict:
  """The embedding's model dimension sharded (`embedding_spec`): the pass must
  leave the op to the plain chunked rewrite, with the right result. The
  warnings it gave are returned; the parent test checks that one names why."""
  from jax.sharding import PartitionSpec as P
  cases = {"ids_everything": CASES["ids_everything"]}
  m = 16  # divisible by the 8 devices
  a = make_arrays(np.random.default_rng(5), cases["ids_everything"], m=m)
  want = reference(cases, {"ids_everything": a})
  mesh = _mesh(shape, names)
  args = {"ids_everything": _put(mesh, a, dict(x=P(), e=P(*embedding_spec), w=P(), y=P(),
                                              c=P()))}
  text, _, got, caught = _run_pipeline(step_fn(cases, "composite"), None, args)
  assert "sdy.manual_computation" not in text and "stablehlo.composite" not in text
  assert re.findall(r'gshard\.plan = "(gshard-fuse-fwd-bwd|gshard-chunk-softmax)', text)
  assert_steps_close(got, want, f"[embedding {embedding_spec}]")
  return {"warnings": caught}


def fallback_uneven_vocab() -> dict:
  """V = 60 on 8 shards. `jax.device_put` refuses an uneven split (the message
  is recorded); a sharding constraint inside the program may still ask for it,
  and the pass then warns and leaves the op to the chunked rewrite."""
  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  cases = {"ids_everything": CASES["ids_everything"]}
  a = make_arrays(np.random.default_rng(6), cases["ids_everything"], v=60)
  want = reference(cases, {"ids_everything": a})
  mesh = _mesh((8,), ("model",))
  facts = {}
  try:
    jax.device_put(a["e"], NamedSharding(mesh, P("model", None)))
    facts["device_put"] = "accepted"
  except Exception as err:  # noqa: BLE001
    facts["device_put"] = f"{type(err).__name__}: {err}"
  constrain = lambda _, e: jax.lax.with_sharding_constraint(e, NamedSharding(mesh, P("model")))
  text, _, got, caught = _run_pipeline(step_fn(cases, "composite", constrain), None,
                                       {"ids_everything": a})
  assert "sdy.sharding_constraint" in text and "sdy.manual_computation" not in text
  assert "stablehlo.composite" not in text
  assert len(caught) == 2 and all(
      "vocab size 60 is not divisible by its 8 shards" in w for w in caught), caught
  assert_steps_close(got, want, "[uneven vocab]")
  facts["warnings"] = caught
  return facts


def not_sharded() -> dict:
  """Replicated operands on the mesh: nothing for the pass to do, no warning."""
  from jax.sharding import PartitionSpec as P
  cases = {"ids_everything": CASES["ids_everything"]}
  a = make_arrays(np.random.default_rng(7), cases["ids_everything"])
  want = reference(cases, {"ids_everything": a})
  mesh = _mesh((8,), ("model",))
  args = {"ids_everything": _put(mesh, a, dict(x=P(), e=P(), w=P(), y=P(), c=P()))}
  text, hlo, got, caught = _run_pipeline(step_fn(cases, "composite"), None, args)
  assert not caught, caught
  assert "sdy.manual_computation" not in text and "stablehlo.composite" not in text
  assert "gshard-shard-vocab" not in text
  assert_steps_close(got, want, "[replicated]")
  return {}


def explicit_axes() -> dict:
  """Mesh (2, 4) with Explicit axes, inside `jax.set_mesh(mesh)`: the sharded
  step under the default pipeline against the unsharded reference."""
  import jax
  arrays = _arrays(11)
  want = reference(CASES, arrays)
  mesh = _mesh((2, 4), ("data", "model"), explicit=True)
  with jax.set_mesh(mesh):
    args = {name: _put(mesh, a, _specs("data", True, CASES[name][1]))
            for name, a in arrays.items()}
    text, hlo, got, caught = _run_pipeline(step_fn(CASES, "composite"), None, args)
  assert "sdy.manual_computation" in text and "stablehlo.composite" not in text
  facts = check_collectives(hlo, n_local=N // 2, v_local=V // 4)
  assert_steps_close(got, want, "[explicit]")
  return facts


def memory() -> dict:
  """Per-device temp of the sharded step (N=4096, M=256, V=32768 float32, mesh
  (2, 4), vocab on the 4 "model" devices, tokens on "data") vs the same
  pipeline on one device (no sharding: the plain chunked rewrite)."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  import gshard_op
  n, m, v = 4096, 256, 32768
  pipeline = "gshard-shard-vocab,gshard-chunk-softmax"
  mesh = _mesh((2, 4), ("data", "model"))

  def specs(sharded):
    def s(shape, dtype, spec):
      return jax.ShapeDtypeStruct(shape, dtype,
                                  sharding=NamedSharding(mesh, spec) if sharded else None)
    return (s((n, m), jnp.float32, P("data", None)), s((v, m), jnp.float32, P("model", None)),
            s((n, 1), jnp.int32, P("data", None)), s((n, 1), jnp.float32, P("data", None)))

  def step(x, e, ids, w):
    return gshard_op.shared_embedding_softmax(x, e, w, ids).avg_xent

  temps, plans = {}, {}
  for label, sharded in (("single", False), ("sharded", True)):
    fn = jax.value_and_grad(lambda *a: step(*a), (0, 1))  # a fresh function each time
    lowered = gshard_op.jit(fn, pipeline=pipeline).lower(*specs(sharded))
    plans[label] = sorted(set(re.findall(r'gshard\.plan = "([^"]*)"', lowered.as_text())))
    temps[label] = lowered.compile().memory_analysis().temp_size_in_bytes
  dense = jax.jit(jax.value_and_grad(
      lambda x, e, ids, w: gshard_op.shared_embedding_softmax(
          x, e, w, ids, implementation="reference").avg_xent, (0, 1))).lower(*specs(True))
  temps["dense_sharded"] = dense.compile().memory_analysis().temp_size_in_bytes
  assert any("gshard-shard-vocab" in p for p in plans["sharded"]), plans
  assert not any("gshard-shard-vocab" in p for p in plans["single"]), plans
  return {"temp_bytes": temps, "plans": plans, "pipeline": pipeline}


SCENARIOS = {
    # (8,) "model"
    "mesh8": lambda: sharded_scenario((8,), ("model",), probs_on_model=True, seed=1),
    "fallback_model_dim": lambda: fallback_model_dim((8,), ("model",), (None, "model")),
    "fallback_uneven_vocab": fallback_uneven_vocab,
    "not_sharded": not_sharded,
    # (2, 4) ("data", "model")
    "mesh2x4": lambda: sharded_scenario((2, 4), ("data", "model"), probs_on_model=True, seed=2),
    "fallback_both_dims": lambda: fallback_model_dim((2, 4), ("data", "model"),
                                                     ("model", "data")),
    "explicit_axes": explicit_axes,
    "memory": memory,
    # (4, 2) ("data", "model")
    "mesh4x2": lambda: sharded_scenario((4, 2), ("data", "model"), probs_on_model=False, seed=3),
}


@functools.cache
def run(name: str) -> dict:
  """What scenario `name` returns, run once per session (two tests read the
  memory figures, two the model-dimension fallback); its failure is raised."""
  import jax
  assert jax.device_count() == DEVICES, jax.device_count()
  return SCENARIOS[name]() or {}
