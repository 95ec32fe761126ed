"""The types of IR values, as the passes read and build them."""

from __future__ import annotations

from collections.abc import Sequence

from jaxlib.mlir import ir


def f32() -> ir.Type:
  return ir.F32Type.get()


def i32() -> ir.Type:
  return ir.IntegerType.get_signless(32)


def tensor(shape: Sequence[int], element: ir.Type) -> ir.RankedTensorType:
  return ir.RankedTensorType.get(list(shape), element)


def shape_of(v: ir.Value) -> tuple[int, ...]:
  return tuple(ir.RankedTensorType(v.type).shape)


def element_of(v: ir.Value) -> ir.Type:
  return ir.RankedTensorType(v.type).element_type


def is_float(t: ir.Type) -> bool:
  return isinstance(t, (ir.F32Type, ir.F64Type, ir.BF16Type, ir.F16Type))
