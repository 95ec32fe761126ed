"""The primitives partition themselves under plain `jax.jit` (custom_partitioning).

On meshes built as MaxText, PaxML and pjit-era trainers build them
(`jax.sharding.Mesh`, Auto axes), plain `jax.jit` and `nnx.jit` must keep a
vocab-sharded embedding sharded: the compiled program holds per-device
chunked loops and `[tokens]`-sized all-reduces, never an all-gather of the
embedding over the vocabulary, and its values and gradients equal the dense
reference's (`implementation="reference"`, which XLA partitions itself).

As in `test_sharded_primitive.py`, the checks run on 8 host CPU devices
(tests/conftest.py's), one test per scenario. Scenarios:

- `auto_vocab`: 2 x 4 ("data", "vocab") Auto mesh, 4096 x 256 x 32768 float32,
  `jax.jit(value_and_grad)` with `in_shardings` (tokens on "data", vocab on
  "vocab"), against the dense reference and `gshard_op.jit`'s temp memory;
- `fsdp`: the same shape with the embedding sharded on M over "fsdp" and the
  tokens over both axes: gathered on M as dense XLA does, never on V, and no
  `[N_local, V]` tensor;
- `vocab_and_model`: the embedding sharded on V and on M at once;
- `export`: `jax.export` of the `auto_vocab` step, serialised and called;
- `nnx`: a small LM whose embedding carries `nnx.with_partitioning(...,
  ("vocab", None))`, 10 optax steps under plain `nnx.jit`;
- `uneven_vocab`: V not divisible by the vocab shards (an announced gather);
- `transforms`: `jax.vmap`, `jax.checkpoint` and `jax.jvp` on the Auto mesh.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

from conftest import seed_of

HERE = os.path.dirname(os.path.abspath(__file__))
DEVICES = 8
N, M, V = 4096, 256, 32768
OPTIONS = dict(z_loss_weight=1e-4, label_smoothing_prob=0.1)
CLOSE = dict(rtol=1e-5, atol=1e-6)


# --- the scenarios --------------------------------------------------------------------------

def _all_gathers(hlo: str) -> list[tuple[str, str]]:
  """`(result shape, gathered dimensions)` of each all-gather in compiled HLO."""
  return re.findall(r"= \w+\[([\d,]*)\]\S* all-gather\(.*?dimensions=\{([\d,]*)\}", hlo)


def _has_v_row_gather(hlo: str, v: int) -> bool:
  """An all-gather whose result has V rows and that gathers along them."""
  return any(shape.split(",")[0] == str(v) and "0" in dims.split(",")
             for shape, dims in _all_gathers(hlo))


def _temp_mib(compiled) -> float:
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def _arrays(rng, n, m, v):
  x = rng.standard_normal((n, m)).astype(np.float32)
  e = rng.standard_normal((v, m)).astype(np.float32)
  ids = rng.integers(0, v, (n,)).astype(np.int32)
  w = (rng.random((n, 1)) < 0.9).astype(np.float32)
  c = rng.standard_normal((n,)).astype(np.float32)
  return x, e, w, ids, c


def _step(w, ids, c, implementation):
  """value_and_grad w.r.t. (x, embedding) of a loss through the mean, z-loss
  and per-token cotangents."""
  import jax
  import jax.numpy as jnp

  import gshard_op

  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, w, class_ids=ids, **OPTIONS,
                                             implementation=implementation)
    return out.avg_xent + out.z_loss + jnp.sum(c * out.per_example_xent) / x.shape[0]

  return jax.value_and_grad(loss, argnums=(0, 1))


def _assert_tree_close(got, want, what, **tol):
  import jax
  for i, (g, r) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want))):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), **(tol or CLOSE),
                               err_msg=f"{what}: leaf {i}")


def _auto_mesh(names):
  import jax
  return jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), names)


def scenario_auto_vocab(rng):
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  import gshard_op

  mesh = _auto_mesh(("data", "vocab"))
  x, e, w, ids, c = _arrays(rng, N, M, V)
  shardings = (NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P("vocab", None)))
  ours = jax.jit(_step(w, ids, c, "composite"), in_shardings=shardings)
  dense = jax.jit(_step(w, ids, c, "reference"), in_shardings=shardings)
  pipelined = gshard_op.jit(_step(w, ids, c, "composite"), in_shardings=shardings)
  compiled = ours.lower(x, e).compile()
  hlo = compiled.as_text()
  assert not _has_v_row_gather(hlo, V), _all_gathers(hlo)
  assert "all-reduce" in hlo
  facts = {"temp_mib": _temp_mib(compiled),
           "pipelined_temp_mib": _temp_mib(pipelined.lower(x, e).compile()),
           "dense_temp_mib": _temp_mib(dense.lower(x, e).compile()),
           "all_gathers": _all_gathers(hlo)}
  assert facts["temp_mib"] <= 1.25 * facts["pipelined_temp_mib"], facts
  (value, grads) = ours(x, e)
  assert grads[1].sharding.is_equivalent_to(shardings[1], 2), grads[1].sharding
  _assert_tree_close((value, grads), dense(x, e), "plain jit vs dense reference")
  return facts


def scenario_fsdp(rng):
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  mesh = _auto_mesh(("data", "fsdp"))
  x, e, w, ids, c = _arrays(rng, N, M, V)
  shardings = (NamedSharding(mesh, P(("data", "fsdp"), None)),
               NamedSharding(mesh, P(None, "fsdp")))
  ours = jax.jit(_step(w, ids, c, "composite"), in_shardings=shardings)
  dense = jax.jit(_step(w, ids, c, "reference"), in_shardings=shardings)
  compiled = ours.lower(x, e).compile()
  hlo = compiled.as_text()
  n_local = N // 8
  assert not _has_v_row_gather(hlo, V), _all_gathers(hlo)
  assert not re.search(rf"\[{n_local},{V}\]", hlo), f"a [{n_local}, {V}] tensor"
  _assert_tree_close(ours(x, e), dense(x, e), "fsdp plain jit vs dense reference")
  return {"temp_mib": _temp_mib(compiled), "all_gathers": _all_gathers(hlo),
          "dense_temp_mib": _temp_mib(dense.lower(x, e).compile())}


def scenario_vocab_and_model(rng):
  """The embedding sharded on V over "vocab" and on M over "data": gathered on
  M (as FSDP), kept sharded on V."""
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  mesh = _auto_mesh(("data", "vocab"))
  n, m, v = 512, 64, 4096
  x, e, w, ids, c = _arrays(rng, n, m, v)
  shardings = (NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P("vocab", "data")))
  ours = jax.jit(_step(w, ids, c, "composite"), in_shardings=shardings)
  dense = jax.jit(_step(w, ids, c, "reference"), in_shardings=shardings)
  hlo = ours.lower(x, e).compile().as_text()
  assert not _has_v_row_gather(hlo, v), _all_gathers(hlo)
  assert not re.search(rf"\[{v},{m}\]\S* all-gather", hlo), _all_gathers(hlo)
  assert not re.search(rf"\[{n // 2},{v}\]", hlo), f"a [{n // 2}, {v}] tensor"
  _assert_tree_close(ours(x, e), dense(x, e), "vocab+model plain jit vs dense reference")
  return {"all_gathers": _all_gathers(hlo)}


def scenario_export(rng):
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  mesh = _auto_mesh(("data", "vocab"))
  x, e, w, ids, c = _arrays(rng, N, M, V)
  shardings = (NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P("vocab", None)))
  step = jax.jit(_step(w, ids, c, "composite"), in_shardings=shardings)
  exported = jax.export.export(step)(x, e)
  assert "CustomSPMDPartitioning" not in exported.mlir_module()
  restored = jax.export.deserialize(exported.serialize())
  placed = [jax.device_put(a, s) for a, s in zip((x, e), shardings)]
  dense = jax.jit(_step(w, ids, c, "reference"), in_shardings=shardings)
  _assert_tree_close(restored.call(*placed), dense(x, e), "exported vs dense reference")
  # A known limit, kept loud: the primitives need the devices while lowering
  # (custom_partitioning builds its mesh from them), so JAX refuses an export
  # whose shardings name only an AbstractMesh (README).
  abstract = jax.sharding.AbstractMesh((2, 4), ("data", "vocab"))
  specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(abstract, s.spec))
           for a, s in zip((x, e), shardings)]
  try:
    jax.export.export(jax.jit(_step(w, ids, c, "composite")))(*specs)
  except ValueError as err:
    assert "require devices" in str(err), err
  else:
    raise AssertionError("an AbstractMesh export now lowers: update the README's caveat")
  return {}


def scenario_nnx(rng):
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from jax.sharding import PartitionSpec as P

  import gshard_op

  vocab, width, batch, length = 4096, 64, 16, 32
  mesh = _auto_mesh(("data", "vocab"))

  class LM(nnx.Module):
    def __init__(self, implementation, rngs):
      self.softmax = gshard_op.GShardSharedEmbeddingSoftmax(
          width, vocab, z_loss_weight=1e-4, implementation=implementation, rngs=rngs,
          embedding_init=nnx.with_partitioning(nnx.initializers.normal(1.0), ("vocab", None)))
      self.mlp = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, ids, targets):
      x = jax.nn.gelu(self.mlp(self.softmax.emb_lookup(ids)))
      out = self.softmax(x, jnp.ones(targets.shape + (1,)), class_ids=targets[..., None])
      return out.avg_xent + out.z_loss

  def create(implementation):
    @nnx.jit
    def make():
      model = LM(implementation, nnx.Rngs(0))
      state = nnx.state(model)
      nnx.update(model, jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
      return model
    return make()

  tokens = rng.integers(0, vocab, (10, batch, length + 1)).astype(np.int32)

  @nnx.jit
  def train_step(model, optimizer, ids, targets):
    loss, grads = nnx.value_and_grad(lambda m: m(ids, targets))(model)
    optimizer.update(model, grads)
    return loss

  curves, hlo = {}, None
  with jax.set_mesh(mesh):
    for implementation in ("composite", "reference"):
      model = create(implementation)
      emb = model.softmax.embedding[...]
      assert emb.sharding.is_equivalent_to(jax.NamedSharding(mesh, P("vocab", None)), 2), (
          emb.sharding)
      optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
      batches = [(jax.device_put(t[:, :-1], jax.NamedSharding(mesh, P("data"))),
                  jax.device_put(t[:, 1:], jax.NamedSharding(mesh, P("data")))) for t in tokens]
      if implementation == "composite":
        hlo = train_step.lower(model, optimizer, *batches[0]).compile().as_text()
      curves[implementation] = [float(train_step(model, optimizer, *b)) for b in batches]
  assert not _has_v_row_gather(hlo, vocab), _all_gathers(hlo)
  np.testing.assert_allclose(curves["composite"], curves["reference"], rtol=1e-4)
  assert curves["composite"][-1] < curves["composite"][0], curves
  return {"losses": curves["composite"]}


def scenario_uneven_vocab(rng):
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  mesh = _auto_mesh(("data", "vocab"))
  v = 1001  # 4 vocab shards do not divide it
  x, e, w, ids, c = _arrays(rng, 64, 16, v)
  vocab = NamedSharding(mesh, P("vocab", None))

  def constrained(implementation):
    # jit refuses uneven argument shardings; a constraint inside pads instead.
    step = _step(w, ids, c, implementation)
    return jax.jit(lambda x, e: step(x, jax.lax.with_sharding_constraint(e, vocab)),
                   in_shardings=(NamedSharding(mesh, P("data", None)), None))

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = constrained("composite")(x, e)
  messages = [str(m.message) for m in caught]
  assert any("not divisible" in m and "gathered on the vocab" in m for m in messages), messages
  _assert_tree_close(got, constrained("reference")(x, e), "uneven vocab vs dense reference")
  return {"warning": next(m for m in messages if "not divisible" in m)}


def scenario_transforms(rng):
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P

  import gshard_op

  mesh = _auto_mesh(("data", "vocab"))
  n, m, v = 64, 16, 512
  x, e, w, ids, c = _arrays(rng, n, m, v)
  xs = NamedSharding(mesh, P("data", None))
  es = NamedSharding(mesh, P("vocab", None))

  def loss(x, e, implementation):
    out = gshard_op.shared_embedding_softmax(x, e, w, class_ids=ids, **OPTIONS,
                                             implementation=implementation)
    return out.avg_xent + out.z_loss

  facts = {}
  for name, build in {
      # a batch of 3 token sets against one embedding
      "vmap": lambda impl: jax.vmap(jax.value_and_grad(lambda x, e: loss(x, e, impl),
                                                       argnums=(0, 1)), in_axes=(0, None)),
      "remat": lambda impl: jax.value_and_grad(
          jax.checkpoint(lambda x, e: loss(x, e, impl)), argnums=(0, 1)),
      "jvp": lambda impl: lambda x, e: jax.jvp(lambda x, e: loss(x, e, impl), (x, e),
                                                (jnp.ones_like(x), jnp.ones_like(e))),
  }.items():
    args = (jnp.stack([x, 2 * x, -x]) if name == "vmap" else x, e)
    shard_x = NamedSharding(mesh, P(None, "data", None)) if name == "vmap" else xs
    ours = jax.jit(build("composite"), in_shardings=(shard_x, es))
    dense = jax.jit(build("reference"), in_shardings=(shard_x, es))
    hlo = ours.lower(*args).compile().as_text()
    facts[name] = {"v_row_gather": _has_v_row_gather(hlo, v)}
    _assert_tree_close(ours(*args), dense(*args), f"{name} vs dense reference")
  # Reverse mode stays sharded through vmap and remat (the JVP is dense by design).
  assert not facts["vmap"]["v_row_gather"] and not facts["remat"]["v_row_gather"], facts
  return facts


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items()
             if name.startswith("scenario_")}


# --- the tests ----------------------------------------------------------------------------------

def test_eight_host_devices(host_devices):
  assert len(host_devices) == DEVICES


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(host_devices, name):
  facts = SCENARIOS[name](np.random.default_rng(seed_of("partitioning::" + name)))
  print(name, facts)


def test_sharding_rules_name_the_factors():
  from gshard_op.partitioning import sharding_rule
  assert sharding_rule(False, True) == "n m, v m, n -> n, n, n, n"
  assert sharding_rule(False, False) == "n m, v m, n v -> n, n, n, n"
  assert sharding_rule(True, True) == "n m, v m, n, n, n, n, n -> n m, v m"



# --- the persistent compilation cache -----------------------------------------------------------

CACHE_PROBE = """
import json, sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import gshard_op
cache_dir, remove_pointer, cap = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
jax.config.update("jax_compilation_cache_dir", cache_dir)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_remove_custom_partitioning_ptr_from_cache_key", remove_pointer)
events = []
jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "vocab"))
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 16)).astype(np.float32)
e = rng.standard_normal((256, 16)).astype(np.float32)
ids = rng.integers(0, 256, (64,)).astype(np.int32)
def loss(x, e):
  return gshard_op.shared_embedding_softmax(
      x, e, np.ones((64, 1), np.float32), class_ids=ids, soft_cap_logits=cap).avg_xent
step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)),
               in_shardings=(NamedSharding(mesh, P("data")), NamedSharding(mesh, P("vocab"))))
value = step(x, e)[0]
print("RESULTS " + json.dumps({"hits": events.count("/jax/compilation_cache/cache_hits"),
                               "value": float(value)}))
"""


def test_persistent_cache_hits_only_with_the_pointer_removed(tmp_path):
  """The README's caveat, measured: fresh processes sharing one cache folder
  miss while the callback's address is part of the key, hit once JAX is told
  to drop it, and still miss (and compute the right value) when only the
  op's options differ, which the call's frontend attribute records.

  Subprocesses, since fresh processes are the point: the callback's address
  and the in-memory caches are per process."""
  from pass_testing import run_results_script

  script = tmp_path / "probe.py"
  script.write_text(CACHE_PROBE)
  cache = str(tmp_path / "cache")

  def run(remove_pointer: bool, cap: float) -> dict:
    return run_results_script([str(script), cache, str(int(remove_pointer)), str(cap)],
                              devices=DEVICES, cwd=HERE)

  first = run(False, 0.0)
  assert run(False, 0.0)["hits"] == 0  # the address differs in every process
  assert run(True, 0.0)["hits"] == 0   # a key of its own: written now
  again = run(True, 0.0)
  assert again["hits"] == 1 and again["value"] == first["value"], again
  capped = run(True, 3.0)
  assert capped["hits"] == 0 and capped["value"] != first["value"], capped
