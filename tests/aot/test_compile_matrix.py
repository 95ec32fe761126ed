"""Issue 27's matrix, compiled for the chips without them (tools/aot_check.py).

A slice runs in `make test` (`make aot-test`, in .venv-aot): a TPU with 16 MiB
of scoped VMEM (v5e) and a newer one (v6e), a GPU with little shared memory
(L4) and a large one (H100), at a small shape and at Gemma's anchor shape
(8192 x 2304 x 256000, bfloat16); then issue 27's bounds. The whole matrix
(every target, both anchors) is marked slow.

Every test compiles `jax.value_and_grad` of `avg_xent` wrt inputs and
embedding, as tools/aot_check.py does; temp is `memory_analysis()`'s, per device.
"""

from __future__ import annotations

import re

import pytest

import aot_targets

if all(aot_targets.missing_toolchain(p) for p in ("tpu", "cuda")):
  pytest.skip("no TPU or CUDA compiler installed (libtpu, jax-cuda12-plugin): "
              "`make aot-test` runs these in .venv-aot", allow_module_level=True)

import aot_check  # noqa: E402  (imports jax: after the skip, so a skip costs nothing)

SLICE = ("tpu-v5e", "tpu-v6e", "l4", "h100")
KERNELS_BY_HAND = ("a100", "h100", "l4")
V5E_KERNEL_TEMP_MIB = 64
H100_TEMP_MIB = 256


def routes_of(target: str) -> list[str]:
  """The target's routes; on a TPU mesh plain `jax.jit` has its own test
  (it may refuse with a clear error: issue 27)."""
  t = aot_targets.TARGETS[target]
  return [name for name, r in aot_targets.ROUTES.items()
          if (not r.mesh or t.mesh_topology)
          and not (t.platform == "tpu" and name == "mesh jit")]


def failures(rows: dict) -> dict:
  return {route: f"{r['status']} ({r.get('stage')}): {r['error']}"
          for route, r in rows.items() if r["status"] != "compiled"}


def check_all_routes(compiled, target: str, shape: str):
  rows = {route: compiled(target, shape, route) for route in routes_of(target)}
  assert not failures(rows), failures(rows)
  pallas = rows["pallas"]
  # Named by hand the kernels take every composite of the step, or the test
  # would pass on the chunked fallback.
  assert pallas["kernels"] > 0 and not pallas["declines"], (pallas["plans"], pallas["declines"])
  for route, r in rows.items():
    assert r["v_all_gathers"] == 0, (route, r["v_all_gather_ops"])
  return rows


@pytest.mark.parametrize("shape", ["small", "gemma"])
@pytest.mark.parametrize("target", SLICE)
def test_every_route_compiles(compiled, target, shape):
  check_all_routes(compiled, target, shape)


@pytest.mark.slow
@pytest.mark.parametrize("target", list(aot_targets.TARGETS))
def test_whole_matrix_at_both_anchors(compiled, target):
  for shape in aot_targets.ANCHOR_SHAPES:
    check_all_routes(compiled, target, shape)


# --- issue 27's bounds ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", list(aot_targets.ANCHOR_SHAPES))
def test_tpu_v5e_default_takes_the_kernels_within_64_mib(compiled, shape):
  r = compiled("tpu-v5e", shape, "gshard_op.jit")
  assert r["status"] == "compiled", r["error"]
  assert r["kernels"] > 0 and any(p.startswith("gshard-pallas") for p in r["plans"]), (
      r["pipeline"], r["declines"])
  assert r["temp_mib"] <= V5E_KERNEL_TEMP_MIB, r["temp_mib"]


@pytest.mark.parametrize("route", ["jit", "gshard_op.jit"])
@pytest.mark.parametrize("shape", list(aot_targets.ANCHOR_SHAPES))
def test_h100_bf16_temp_within_256_mib(compiled, shape, route):
  r = compiled("h100", shape, route)
  assert r["status"] == "compiled", r["error"]
  assert r["temp_mib"] <= H100_TEMP_MIB, r["temp_mib"]


@pytest.mark.parametrize("target", KERNELS_BY_HAND)
def test_kernels_named_by_hand_compile_at_the_anchor(compiled, target):
  r = compiled(target, "gemma", "pallas")
  assert r["status"] == "compiled", r["error"]
  assert r["kernels"] > 0 and not r["declines"], (r["plans"], r["declines"])


def test_tpu_v5e_mesh_plain_jit_compiles_without_v_gathers_or_names_the_limit(compiled):
  """Plain `jax.jit` on a vocab-sharded TPU mesh: the op's custom_partitioning
  has no partitioner callback in an ahead-of-time TPU compile. It must either
  compile with no all-gather of V, or refuse at trace time naming the limit
  and the route that works; never XLA's 'Custom emitter ... not found'."""
  r = compiled("tpu-v5e", "gemma", "mesh jit")
  if r["status"] == "compiled":
    assert r["v_all_gathers"] == 0, r["v_all_gather_ops"]
    return
  assert r["stage"] == "lower" and "JaxRuntimeError" not in r["error_type"], (
      f"failed in XLA, not at trace time: {r['error']}")
  assert "custom_partitioning" in r["error"] and "gshard_op.jit" in r["error"], r["error"]


def test_tpu_v5e_mesh_gshard_op_jit_picks_the_tpu_pipeline(compiled):
  r = compiled("tpu-v5e", "gemma", "mesh gshard_op.jit")
  assert r["status"] == "compiled", r["error"]
  assert re.search(r"gshard-pallas\{platform=tpu\b", r["pipeline"] or ""), r["pipeline"]
  assert r["v_all_gathers"] == 0, r["v_all_gather_ops"]


def test_h100_mesh_plain_jit_compiles_without_v_gathers(compiled):
  r = compiled("h100", "gemma", "mesh jit")
  assert r["status"] == "compiled", r["error"]
  assert r["v_all_gathers"] == 0, r["v_all_gather_ops"]


# --- the tool's own measures, on programs whose answer is known -----------------------------

def test_v_all_gathers_finds_an_embedding_gathered_onto_every_device():
  """The V-gather count the bounds rely on: an embedding sharded over the
  vocab and returned replicated is all-gathered, [V, M]; returned as sharded,
  it is not."""
  import jax
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  target = next((t for t in ("h100", "tpu-v5e")
                 if not aot_targets.missing_toolchain(aot_targets.TARGETS[t].platform)), None)
  if target is None:
    pytest.skip("needs the CUDA or TPU compiler")
  devices = aot_targets.compile_only_devices(target, mesh=True)
  mesh = Mesh(np.array(devices).reshape(aot_targets.MESH_SHAPE), aot_targets.MESH_AXES)
  v, m = 1000, 256
  replicated = NamedSharding(mesh, P())

  sharded = NamedSharding(mesh, P("vocab", None))
  arg = jax.ShapeDtypeStruct((v, m), np.float32, sharding=sharded)

  def hlo(out):
    return jax.jit(lambda e: e * 2, out_shardings=out).lower(arg).compile().as_text()

  gathers = aot_check.v_all_gathers(hlo(replicated), v)
  assert gathers and all("all-gather" in g for g in gathers), gathers
  assert aot_check.v_all_gathers(hlo(sharded), v) == []


def test_kernel_count_reads_both_compilers_custom_calls():
  tpu = 'custom-call(%a), custom_call_target="tpu_custom_call", backend_config="..."'
  gpu = 'custom-call(%a), custom_call_target="__gpu$xla.gpu.triton", backend_config={}'
  assert aot_check.count_kernels("\n".join([tpu, gpu, tpu])) == 3
  assert aot_check.count_kernels('custom_call_target="AllocateBuffer"') == 0
  # Lowered StableHLO names the call target as a symbol.
  assert aot_check.count_kernels('stablehlo.custom_call @tpu_custom_call(%0)') == 1
