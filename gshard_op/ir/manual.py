"""The `sdy.manual_computation` of a vocab-sharded op: the IR around its body.

`gshard-shard-vocab` and the primitives' lowering under an Explicit mesh both
wrap the per-device body (`gshard_op/sharded.py`) in a manual computation
over the mesh; this builds it, with the operands' shardings from the layout,
and asks the caller to fill its block (a pass splices the lowered body, the
lowering rule lowers it in place).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from jaxlib.mlir import ir
from jaxlib.mlir.dialects import sdy

from gshard_op.ir.types import element_of, shape_of
from gshard_op.sharded import Layout


def mesh_ref(layout: Layout) -> str | sdy.MeshAttr:
  """What a sharding names: the `sdy.mesh` symbol, or the mesh itself when
  it is written inline (a lowering rule has no symbol to refer to)."""
  mesh = layout.mesh
  if mesh.name:
    return mesh.name
  return sdy.MeshAttr.get([sdy.MeshAxisAttr.get(n, s) for n, s in mesh.axes.items()])


def sharding(layout: Layout, *dims: list[str]) -> sdy.TensorShardingAttr:
  return sdy.TensorShardingAttr.get(
      mesh_ref(layout),
      [sdy.DimensionShardingAttr.get([sdy.AxisRefAttr.get(a) for a in axes], True)
       for axes in dims])


def local_type(value: ir.Value, dims: Sequence[list[str]], layout: Layout) -> ir.Type:
  """The type of one device's block of `value`, its dimensions split over `dims`."""
  shape = [size // math.prod(layout.mesh.axes[a] for a in axes)
           for size, axes in zip(shape_of(value), dims)]
  return ir.RankedTensorType.get(shape, element_of(value))


def emit_manual(layout: Layout, is_grad: bool, labels_are_ids: bool,
                operands: Sequence[ir.Value], label_mass: ir.Value | None,
                result_types: Sequence[ir.Type], body: Callable[[list[ir.Value]], list[ir.Value]],
                tag: str) -> list[ir.Value]:
  """An `sdy.manual_computation` over the mesh whose block is `body(local
  operands)`; returns its results. At the current insertion point.

  Operands: x, embedding, labels, then (gradient) the `[N]` per-token
  vectors, then for probabilities the labels' per-token mass `label_mass`,
  which a shard holding only its classes' columns cannot compute alone.
  """
  tok, voc = layout.token_axes, layout.vocab_axes
  dims = [[tok, []], [voc, []], [tok] if labels_are_ids else [tok, voc]]
  dims += [[tok]] * (len(operands) - 3)
  operands = list(operands)
  if label_mass is not None:
    operands.append(label_mass)
    dims.append([tok])
  out_dims = [[tok, []], [voc, []]] if is_grad else [[tok]] * len(result_types)
  manual = sdy.ManualComputationOp(
      list(result_types), operands,
      sdy.TensorShardingPerValueAttr.get([sharding(layout, *d) for d in dims]),
      sdy.TensorShardingPerValueAttr.get([sharding(layout, *d) for d in out_dims]),
      sdy.ManualAxesAttr.get([ir.StringAttr.get(a) for a in layout.mesh.axes]))
  block = manual.body.blocks.append(*[local_type(v, d, layout) for v, d in zip(operands, dims)])
  with ir.InsertionPoint(block):
    sdy.return_(body(list(block.arguments)))
  manual.operation.attributes["gshard.plan"] = ir.StringAttr.get(
      f"{tag}: vocab over {voc} ({layout.vocab_shards} shards), "
      f"tokens over {tok or 'none'}")
  return list(manual.results)
