"""How blocks move: reads and writes of operand blocks, and `pallas_call`.

The kernel bodies (`bodies.py`) are the same for all three back ends; only
what is here differs. Interpret and Triton index the refs directly (Triton:
loads and stores from global memory; every array in a Triton kernel must have
a power-of-two size, so its blocks are powers of two; `M` need not be, it is
only ever read a block at a time). On Mosaic TPU the operands stay in HBM
(`pl.ANY`) and each block goes through a VMEM scratch buffer of its kind
(`pltpu.sync_copy`), so no operand has to fit in VMEM.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plt

from gshard_op.kernels.config import KernelConfig
from gshard_op.online_softmax import F32


class Blocks:
  """Reads and writes of operand blocks: through the refs themselves, or on
  Mosaic TPU through `scratch`, a VMEM buffer per kind of block ("x", "e",
  "labels", "column", "ids", and "x_cols", "e_cols" when the features are
  blocked)."""

  def __init__(self, scratch: dict | None = None):
    self.scratch = scratch

  def read(self, ref, kind: str, rows, cols=None):
    index = (rows, slice(None) if cols is None else cols)
    if self.scratch is None:
      return ref[index]
    buffer = self.scratch[kind]
    pltpu.sync_copy(ref.at[index], buffer)
    return buffer[...]

  def write(self, ref, kind: str, rows, value, cols=None):
    index = (rows, slice(None) if cols is None else cols)
    if self.scratch is None:
      ref[index] = value
      return
    buffer = self.scratch[kind]
    buffer[...] = value
    pltpu.sync_copy(buffer, ref.at[index])


def call(cfg: KernelConfig, body, grid: tuple[int, ...], out_shape, operands):
  """`pallas_call` of `body(io, *operand_refs, *result_refs)` over `grid`, with
  each back end's parameters; on Mosaic TPU also the VMEM buffers `io` copies
  blocks through (one per kind: rows of x and of the embedding a feature block
  wide, the same a gradient column block wide when the features are blocked,
  labels, `[T, 1]` float and int columns)."""
  bt, bv = cfg.block_sizes.tokens, cfg.block_sizes.vocab
  x, embedding, labels = operands[:3]
  if cfg.backend != "mosaic_tpu":
    kernel = lambda *refs: body(Blocks(), *refs)
    kwargs = {"interpret": True} if cfg.backend == "interpret" else {
        "compiler_params": plt.CompilerParams(num_warps=cfg.num_warps, num_stages=2)}
    return pl.pallas_call(kernel, out_shape=out_shape, grid=grid, **kwargs)(*operands)
  m = x.shape[1]
  bk, bf = cfg.features(m)
  scratch = {
      "x": pltpu.VMEM((bt, bk), x.dtype),
      "e": pltpu.VMEM((bv, bk), embedding.dtype),
      "labels": pltpu.VMEM((bt, 1) if jnp.issubdtype(labels.dtype, jnp.integer) else (bt, bv),
                           labels.dtype),
      "column": pltpu.VMEM((bt, 1), F32),
      "ids": pltpu.VMEM((bt, 1), jnp.int32),
  }
  if not cfg.whole_rows(m):
    scratch["x_cols"] = pltpu.VMEM((bt, bf), x.dtype)
    scratch["e_cols"] = pltpu.VMEM((bv, bf), embedding.dtype)

  def kernel(*refs):
    split = len(refs) - len(scratch)
    body(Blocks(dict(zip(scratch, refs[split:]))), *refs[:split])

  hbm = pl.BlockSpec(memory_space=pl.ANY)
  return pl.pallas_call(
      kernel, out_shape=out_shape, grid=grid, in_specs=[hbm] * len(operands),
      out_specs=jax.tree.map(lambda _: hbm, out_shape), scratch_shapes=list(scratch.values()),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel",) * len(grid),
          vmem_limit_bytes=cfg.vmem_limit_bytes or None))(*operands)
