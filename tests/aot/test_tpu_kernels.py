"""The Mosaic TPU kernels against the real TPU compiler (issue 27).

Two claims, each compiled for compile-only TPU devices:

* the kernels compile on every TPU generation at the anchor shapes and at the
  widths people train with, bf16 and f32, with the blocks and scoped VMEM
  limit `gshard-pallas{platform=tpu tpu-chip=...}` picks for the chip; and
* the VMEM model the blocks are sized with (`passes/pallas.py`'s
  `on_chip_bytes`) bounds what Mosaic needs: each kernel compiles with
  `vmem_limit_bytes` set to the model's estimate.

`make aot-test` runs a slice (v5e, whose 16 MiB default the kernels outgrew,
and v6e); `pytest -m slow tests/aot` the whole grid.
"""

from __future__ import annotations

import functools

import pytest

import aot_targets

if aot_targets.missing_toolchain("tpu"):
  pytest.skip("no TPU compiler installed (libtpu): `make aot-test` runs these in .venv-aot",
              allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402
from jaxlib.mlir import ir  # noqa: E402

import gshard_op  # noqa: E402
from gshard_op import kernels  # noqa: E402
from gshard_op.passes import composites, pallas  # noqa: E402

CHIPS = {"tpu-v4": "v4", "tpu-v5e": "v5e", "tpu-v5p": "v5p", "tpu-v6e": "v6e",
         "tpu-v7x": "v7x"}
WIDTHS = (512, 2048, 2304, 3072, 4096, 5120, 8192)
DTYPES = ("bfloat16", "float32")
TOKENS, CLASSES = 8192, 32000  # the grid's size, not the blocks', sets nothing on chip
SLICE = [("tpu-v5e", 2304, "bfloat16"), ("tpu-v5e", 8192, "float32"),
         ("tpu-v6e", 4096, "bfloat16"), ("tpu-v5e", 5120, "bfloat16")]


def _grid():
  slow = pytest.mark.slow
  return [pytest.param(t, m, d, marks=() if (t, m, d) in SLICE else slow)
          for t in CHIPS for m in WIDTHS for d in DTYPES]


@functools.cache
def _site(n: int, m: int, v: int, dtype: str):
  """The forward composite of a training step at these sizes, as the pass sees it."""
  def loss(x, e, w, ids):
    return gshard_op.shared_embedding_softmax(x, e, w, class_ids=ids).avg_xent
  specs = (jax.ShapeDtypeStruct((n, m), dtype), jax.ShapeDtypeStruct((v, m), dtype),
           jax.ShapeDtypeStruct((n, 1), jnp.float32), jax.ShapeDtypeStruct((n, 1), jnp.int32))
  with gshard_op.lowering("composite"):
    live = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(*specs).compiler_ir("stablehlo")
  module = ir.Module.parse(str(live), context=live.context)
  with module.context, ir.Location.unknown():
    return module, composites.match(composites.find(module.operation)[0])


def _device_specs(target: str, *shapes_dtypes):
  device = aot_targets.compile_only_devices(target)[0]
  sharding = NamedSharding(Mesh(np.array([device]), ("one",)), P())
  return [jax.ShapeDtypeStruct(s, d, sharding=sharding) for s, d in shapes_dtypes]


def _compile_kernels(target: str, n: int, m: int, v: int, dtype: str,
                     config: kernels.KernelConfig) -> None:
  """Compiles the forward and both gradient kernels for the target's chip."""
  x, e, ids, col = _device_specs(target, ((n, m), dtype), ((v, m), dtype), ((n,), jnp.int32),
                                 ((n,), jnp.float32))
  jax.jit(functools.partial(kernels.forward, cfg=config)).lower(x, e, ids).compile()
  jax.jit(functools.partial(kernels.grad, cfg=config)).lower(
      x, e, ids, col, col, col, col).compile()


def _config(site, blocks: kernels.BlockSizes, vmem_limit_bytes: int) -> kernels.KernelConfig:
  return kernels.KernelConfig(
      options=site.options, logit_scale=site.logit_scale, labels_are_ids=True,
      block_sizes=blocks, backend="mosaic_tpu", vmem_limit_bytes=vmem_limit_bytes)


@pytest.mark.parametrize("target,width,dtype", _grid())
def test_kernels_compile_with_the_chips_blocks_and_limit(target, width, dtype):
  """What `gshard-pallas{platform=tpu tpu-chip=...}` splices compiles for the
  chip: its blocks fit the chip's limit by the model, and Mosaic agrees."""
  module, site = _site(TOKENS, width, CLASSES, dtype)
  chip = CHIPS[target]
  kernel_pass = pallas.PallasPass(platform="tpu", tpu_chip=chip)
  with module.context, ir.Location.unknown():
    blocks = kernel_pass.blocks(site)
    assert kernel_pass.unsuitable(site, blocks) is None, blocks
    config = _config(site, blocks, pallas.TPU_CHIPS[chip].vmem_limit_bytes)
  _compile_kernels(target, TOKENS, width, CLASSES, dtype, config)


@pytest.mark.parametrize("target,width,dtype", _grid())
def test_vmem_model_bounds_what_mosaic_needs(target, width, dtype):
  """Each kernel compiles with `vmem_limit_bytes` set to the model's estimate
  for its blocks (those the pass picks for any TPU, 16 MiB): the model is an
  upper bound of Mosaic's scoped VMEM, so blocks it admits never fail with
  CompileTimeScopedVmemOom."""
  module, site = _site(TOKENS, width, CLASSES, dtype)
  kernel_pass = pallas.PallasPass(platform="tpu")
  with module.context, ir.Location.unknown():
    blocks = kernel_pass.blocks(site)
    config = _config(site, blocks, pallas.on_chip_bytes("tpu", site, blocks)["vmem"])
  _compile_kernels(target, TOKENS, width, CLASSES, dtype, config)
