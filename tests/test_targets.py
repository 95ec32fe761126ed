"""The compile target, not the host, decides (issue 27), checked on the CPU.

`gshard_op.jit`'s default pipeline and the primitives' budget follow the
platform a program is lowered for (`Traced.lower(lowering_platforms=...)`
here; compile-only TPU and GPU devices in tests/aot), and a bf16 gradient
keeps no float32 `[V, M]` buffer where each vocab chunk's rows are final.
"""

from __future__ import annotations

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gshard_op
from gshard_op import budget

N, M, V = 256, 128, 1024


def _loss(x, embedding, w, ids):
  return gshard_op.shared_embedding_softmax(x, embedding, w, class_ids=ids).avg_xent


def _step():
  return jax.value_and_grad(_loss, argnums=(0, 1))


def _specs(n=N, m=M, v=V, dtype=jnp.float32):
  return (jax.ShapeDtypeStruct((n, m), dtype), jax.ShapeDtypeStruct((v, m), dtype),
          jax.ShapeDtypeStruct((n, 1), jnp.float32), jax.ShapeDtypeStruct((n, 1), jnp.int32))


def _arrays(rng, n=N, m=M, v=V, dtype=jnp.float32):
  return (jnp.asarray(rng.standard_normal((n, m)), dtype),
          jnp.asarray(rng.standard_normal((v, m)), dtype),
          jnp.asarray(rng.uniform(0.5, 1.5, (n, 1)), jnp.float32),
          jnp.asarray(rng.integers(0, v, (n, 1)), jnp.int32))


def _plans(text: str) -> set[str]:
  return set(re.findall(r'gshard\.plan = "([^"]*)"', text))


def test_budget_defaults_per_platform():
  assert budget.default_mib("cpu") == budget.CPU_MEMORY_BUDGET_MIB == 64.0
  for platform in ("cuda", "rocm", "tpu"):
    assert budget.default_mib(platform) == budget.ACCELERATOR_MEMORY_BUDGET_MIB == 128.0
  assert budget.default_mib() == 64.0  # this host's backend is the CPU
  assert budget.default_for_platforms(("cpu", "cuda")) == 64.0  # a multi-platform export
  assert budget.resolve(0, "tpu") == 128.0 and budget.resolve(3.0, "tpu") == 3.0


def test_default_pipeline_follows_the_lowering_platform():
  """Lowered for a TPU from this CPU host: the TPU pipeline (its kernels, spliced
  as Mosaic custom calls) and the accelerator budget; lowered for the host:
  the CPU pipeline, as before. `Jitted.pipeline` names the host's."""
  step = gshard_op.jit(_step())
  tpu = step.trace(*_specs()).lower(lowering_platforms=("tpu",))
  assert tpu.pipeline.startswith("gshard-shard-vocab{memory-budget-mib=128.0},gshard-pallas"
                                 "{platform=tpu"), tpu.pipeline
  text = tpu.as_text()
  assert "tpu_custom_call" in text and "stablehlo.composite" not in text
  host = step.lower(*_specs())
  assert "gshard-pallas" not in host.pipeline and "memory-budget-mib=64.0" in host.pipeline
  assert step.pipeline == host.pipeline
  # A pipeline named by hand is run as given, whatever the target.
  named = gshard_op.jit(_step(), pipeline="gshard-chunk-softmax{vocab-chunk=256}")
  lowered = named.trace(*_specs()).lower(lowering_platforms=("tpu",))
  assert lowered.pipeline == "gshard-chunk-softmax{vocab-chunk=256}"
  assert _plans(lowered.as_text()) == {"gshard-chunk-softmax: token_chunk=256 vocab_chunk=256"}


def test_memory_budget_mib_sizes_the_targets_pipeline():
  step = gshard_op.jit(_step(), memory_budget_mib=3.0)
  lowered = step.trace(*_specs()).lower(lowering_platforms=("cuda",))
  assert "memory-budget-mib=3.0" in lowered.pipeline and "platform=cuda" in lowered.pipeline


def test_plain_jit_budget_follows_the_lowering_platform():
  """The primitives' chunked lowering reads the budget of the platform it is
  lowered for: 4 float32 [4096, C] buffers in 64 MiB give C = 1024 on the
  CPU, in 128 MiB C = 2048 on an accelerator."""
  specs = _specs(4096, 64, 32768)
  traced = jax.jit(_step()).trace(*specs)
  assert _plans(traced.lower().as_text()) == {
      "gshard-lowering: token_chunk=4096 vocab_chunk=1024"}
  for platform in ("cuda", "tpu"):
    text = jax.jit(_step()).trace(*specs).lower(lowering_platforms=(platform,)).as_text()
    assert _plans(text) == {"gshard-lowering: token_chunk=4096 vocab_chunk=2048"}, platform
  with gshard_op.lowering(memory_budget_mib=32.0):  # a budget set by hand wins
    text = jax.jit(_step()).trace(*specs).lower(lowering_platforms=("cuda",)).as_text()
  assert _plans(text) == {"gshard-lowering: token_chunk=4096 vocab_chunk=512"}


def _carry_types(text: str) -> list[str]:
  return re.findall(r"stablehlo\.while\([^\n]*?\) : ([^\n]*?) attributes", text)


@pytest.mark.parametrize("route", ["plain", "chunk"])
def test_bf16_gradient_writes_embedding_rows_in_bf16(rng, route):
  """One token block: each vocab chunk's d_embedding rows are final, so the
  loop carries them in bf16 and no float32 [V, M] tensor exists; the values
  are the float32 reference's on the same bf16 inputs, to bf16 rounding."""
  args = _arrays(rng, dtype=jnp.bfloat16)
  if route == "plain":  # 1 MiB: four float32 [256, 256] chunks, four chunks of V
    step = jax.jit(_step())
    with gshard_op.lowering(memory_budget_mib=1.0):
      text = step.lower(*args).as_text()
      value, (d_x, d_e) = step(*args)
  else:
    step = gshard_op.jit(_step(), pipeline="gshard-chunk-softmax{vocab-chunk=256}")
    text = step.lower(*args).as_text()
    value, (d_x, d_e) = step(*args)
  assert _plans(text) == {f"{'gshard-lowering' if route == 'plain' else 'gshard-chunk-softmax'}"
                          ": token_chunk=256 vocab_chunk=256"}
  carries = " ".join(_carry_types(text))
  assert f"tensor<{V}x{M}xbf16>" in carries, carries
  assert f"{V}x{M}xf32" not in text
  f32 = [a.astype(jnp.float32) for a in args[:2]] + list(args[2:])
  ref_value, (ref_dx, ref_de) = jax.jit(jax.value_and_grad(
      lambda x, e, w, ids: gshard_op.shared_embedding_softmax(
          x, e, w, class_ids=ids, implementation="reference").avg_xent, (0, 1)))(*f32)
  assert d_e.dtype == jnp.bfloat16
  # Praxis's scale rounds the bf16 inputs (M**-0.5 in their dtype); the
  # float32 reference's does not: agreement to bf16 rounding, not float32's.
  np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-3)
  for got, want in ((d_x, ref_dx), (d_e, ref_de)):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.linalg.norm(got - want) <= 1e-2 * np.linalg.norm(want)


def test_token_blocks_still_sum_embedding_rows_in_float32(rng):
  """Token blocks add into the same rows: there the float32 buffer stays."""
  args = _arrays(rng, dtype=jnp.bfloat16)
  step = gshard_op.jit(_step(), pipeline="gshard-chunk-softmax{vocab-chunk=256 token-chunk=64}")
  assert f"tensor<{V}x{M}xf32>" in " ".join(_carry_types(step.lower(*args).as_text()))
  _, (_, d_e) = step(*args)
  _, (_, want) = jax.jit(_step())(*args)
  np.testing.assert_allclose(np.asarray(d_e, np.float32), np.asarray(want, np.float32),
                             rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(want))))


def test_fuse_leaves_a_bf16_embedding_to_the_chunks_when_its_accumulator_exceeds_the_budget(
    rng, caplog):
  """The fused sweep's float32 [V, M] accumulator (0.5 MiB here) counts against
  its budget for a bf16 embedding: 0.25 MiB leaves the pair to the chunked
  rewrite, with the reason; float32 embeddings (the accumulator is the
  result's own size) and accumulate-bf16 are fused as before."""
  pipeline = ("gshard-fuse-fwd-bwd{memory-budget-mib=0.25},"
              "gshard-chunk-softmax{memory-budget-mib=0.25}")
  with caplog.at_level(logging.INFO, logger="gshard.passes"):
    bf16 = gshard_op.jit(_step(), pipeline=pipeline).lower(*_specs(dtype=jnp.bfloat16))
  plans = _plans(bf16.as_text())
  assert plans and all(p.startswith("gshard-chunk-softmax") for p in plans), plans
  assert "d_embedding accumulator (0.5 MiB) exceeds memory-budget-mib=0.25" in caplog.text
  f32 = gshard_op.jit(_step(), pipeline=pipeline).lower(*_specs(dtype=jnp.float32))
  assert any(p.startswith("gshard-fuse-fwd-bwd") for p in _plans(f32.as_text()))
  forced = pipeline.replace("{memory-budget-mib=0.25}",
                            "{memory-budget-mib=0.25 accumulate-bf16=true}", 1)
  bf16_acc = gshard_op.jit(_step(), pipeline=forced).lower(*_specs(dtype=jnp.bfloat16))
  assert any(p.startswith("gshard-fuse-fwd-bwd") for p in _plans(bf16_acc.as_text()))
