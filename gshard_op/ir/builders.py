"""Small StableHLO builders that take values and return values.

Every pass builds its IR through these, so a loop body reads like the math it
computes (`s = add(mul(s, exp(sub(m, m_new))), row_sum(exp(...)))`). They use
the current `ir.Location` and `ir.InsertionPoint`; Python numbers given where a
value is expected become splat constants of the other operand's type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
from jaxlib.mlir import ir
from jaxlib.mlir.dialects import stablehlo as hlo

Value = ir.Value


# --- types -----------------------------------------------------------------------

def f32() -> ir.Type:
  return ir.F32Type.get()


def bf16() -> ir.Type:
  return ir.BF16Type.get()


def i32() -> ir.Type:
  return ir.IntegerType.get_signless(32)


def i1() -> ir.Type:
  return ir.IntegerType.get_signless(1)


def tensor(shape: Sequence[int], element: ir.Type) -> ir.RankedTensorType:
  return ir.RankedTensorType.get(list(shape), element)


def shape_of(v: Value) -> tuple[int, ...]:
  return tuple(ir.RankedTensorType(v.type).shape)


def element_of(v: Value) -> ir.Type:
  return ir.RankedTensorType(v.type).element_type


def is_float(t: ir.Type) -> bool:
  return isinstance(t, (ir.F32Type, ir.F64Type, ir.BF16Type, ir.F16Type))


# --- constants and shapes --------------------------------------------------------

def full(shape: Sequence[int], element: ir.Type, value) -> Value:
  """A splat constant."""
  t = tensor(shape, element)
  if is_float(element):
    attr = ir.FloatAttr.get(element, float(value))
  elif element == i1():
    attr = ir.BoolAttr.get(bool(value))
  else:
    attr = ir.IntegerAttr.get(element, int(value))
  return hlo.constant(ir.DenseElementsAttr.get_splat(t, attr))


def scalar(value, element: ir.Type) -> Value:
  return full((), element, value)


def _as_value(v, like: Value) -> Value:
  if isinstance(v, Value):
    return v
  return full(shape_of(like), element_of(like), v)


def broadcast(v: Value, shape: Sequence[int], dims: Sequence[int]) -> Value:
  """`broadcast_in_dim`: operand dimension i becomes result dimension dims[i]."""
  return hlo.broadcast_in_dim(tensor(shape, element_of(v)), v, list(dims))


def rows(v: Value, shape: Sequence[int]) -> Value:
  """`[N]` to `[N, K]`: one value per row."""
  return broadcast(v, shape, [0])


def convert(v: Value, element: ir.Type) -> Value:
  if element_of(v) == element:
    return v
  return hlo.convert(tensor(shape_of(v), element), v)


def iota(shape: Sequence[int], dim: int, element: ir.Type | None = None) -> Value:
  return hlo.iota(tensor(shape, element or i32()), dim)


def reshape(v: Value, shape: Sequence[int]) -> Value:
  return hlo.reshape(tensor(shape, element_of(v)), v)


def dynamic_slice(v: Value, starts: Sequence[Value], sizes: Sequence[int]) -> Value:
  return hlo.dynamic_slice(v, list(starts), list(sizes))


def take_rows(table: Value, rows: Value) -> Value:
  """`table[rows]`: `[V, M]` and i32 `[T]` (in range) give `[T, M]` (a gather)."""
  (t,), m = shape_of(rows), shape_of(table)[1]
  dims = hlo.GatherDimensionNumbers.get(
      offset_dims=[1], collapsed_slice_dims=[0], operand_batching_dims=[],
      start_indices_batching_dims=[], start_index_map=[0], index_vector_dim=1)
  return hlo.gather(table, reshape(rows, (t, 1)), dims, [1, m],
                    results=[tensor((t, m), element_of(table))])


def dynamic_update_slice(v: Value, update: Value, starts: Sequence[Value]) -> Value:
  return hlo.dynamic_update_slice(v, update, list(starts))


# --- elementwise -----------------------------------------------------------------

def _binary(op, a, b) -> Value:
  if not isinstance(a, Value):
    a = _as_value(a, b)
  return op(a, _as_value(b, a))


def add(a, b) -> Value: return _binary(hlo.add, a, b)
def sub(a, b) -> Value: return _binary(hlo.subtract, a, b)
def mul(a, b) -> Value: return _binary(hlo.multiply, a, b)
def div(a, b) -> Value: return _binary(hlo.divide, a, b)
def maximum(a, b) -> Value: return _binary(hlo.maximum, a, b)
def minimum(a, b) -> Value: return _binary(hlo.minimum, a, b)
def exp(a: Value) -> Value: return hlo.exponential(a)
def log(a: Value) -> Value: return hlo.log(a)
def tanh(a: Value) -> Value: return hlo.tanh(a)
def abs_(a: Value) -> Value: return hlo.abs(a)
def and_(a: Value, b: Value) -> Value: return hlo.and_(a, b)
def or_(a: Value, b: Value) -> Value: return hlo.or_(a, b)
def not_(a: Value) -> Value: return hlo.not_(a)
def is_finite(a: Value) -> Value: return hlo.is_finite(a)


def is_nan(a: Value) -> Value:
  """i1: where `a` is NaN (the one value unequal to itself)."""
  return compare(a, a, "NE")


def compare(a, b, direction: str) -> Value:
  """`direction` is one of EQ, NE, LT, LE, GT, GE."""
  if not isinstance(a, Value):
    a = _as_value(a, b)
  b = _as_value(b, a)
  kind = "FLOAT" if is_float(element_of(a)) else "SIGNED"
  return hlo.compare(a, b, hlo.ComparisonDirectionAttr.get(direction),
                     compare_type=hlo.ComparisonTypeAttr.get(kind))


def select(pred: Value, on_true, on_false) -> Value:
  like = on_true if isinstance(on_true, Value) else on_false
  return hlo.select(pred, _as_value(on_true, like), _as_value(on_false, like))


def clamp(lo, v: Value, hi) -> Value:
  return hlo.clamp(_as_value(lo, v), v, _as_value(hi, v))


# --- contractions and reductions ---------------------------------------------------

def dot(a: Value, b: Value, contract: tuple[int, int], out: ir.Type,
        precision: str | None = None) -> Value:
  """A 2-D `dot_general` contracting `a[contract[0]]` with `b[contract[1]]`.

  Operands keep their dtype; `out` is the accumulation (result) element type;
  `precision` ("DEFAULT", "HIGH", "HIGHEST"; None is DEFAULT) is that of
  both operands, written as `jax.lax.dot_general` writes it.
  """
  ca, cb = contract
  shape = [d for i, d in enumerate(shape_of(a)) if i != ca] + \
          [d for i, d in enumerate(shape_of(b)) if i != cb]
  dims = hlo.DotDimensionNumbers.get(
      lhs_batching_dimensions=[], rhs_batching_dimensions=[],
      lhs_contracting_dimensions=[ca], rhs_contracting_dimensions=[cb])
  config = None
  if precision not in (None, "DEFAULT"):  # DEFAULT is what no attribute means
    config = ir.ArrayAttr.get([hlo.PrecisionAttr.get(precision)] * 2)
  return hlo.dot_general(tensor(shape, out), a, b, dims, precision_config=config)


def reduce(v: Value, dims: Sequence[int], combiner, init) -> Value:
  """Reduces `dims` of `v` with `combiner(a, b)` (a builder such as `add`)."""
  element = element_of(v)
  shape = [d for i, d in enumerate(shape_of(v)) if i not in dims]
  op = hlo.ReduceOp([tensor(shape, element)], [v], [scalar(init, element)], list(dims))
  block = op.regions[0].blocks.append(tensor((), element), tensor((), element))
  with ir.InsertionPoint(block):
    hlo.return_([combiner(*block.arguments)])
  return op.result


def row_sum(v: Value) -> Value:
  """`[N, K] -> [N]`."""
  return reduce(v, [1], add, 0)


def row_sums(*vs: Value) -> list[Value]:
  """`[N, K] -> [N]` for each of `vs` (float32), as one variadic reduce: XLA
  fuses the producers of all of them into it, where separate reduces of
  values sharing a producer would make it keep that producer's `[N, K]`."""
  element = element_of(vs[0])
  shape = shape_of(vs[0])[:1]
  op = hlo.ReduceOp([tensor(shape, element)] * len(vs), list(vs),
                    [scalar(0, element)] * len(vs), [1])
  block = op.regions[0].blocks.append(*[tensor((), element)] * (2 * len(vs)))
  args = list(block.arguments)
  with ir.InsertionPoint(block):
    hlo.return_([add(a, c) for a, c in zip(args[:len(vs)], args[len(vs):])])
  return list(op.results)


def row_max(v: Value) -> Value:
  return reduce(v, [1], maximum, -np.inf if is_float(element_of(v)) else np.iinfo(np.int32).min)


def row_min(v: Value) -> Value:
  return reduce(v, [1], minimum, np.inf if is_float(element_of(v)) else np.iinfo(np.int32).max)


def all_reduce(value: Value, combiner, replica_groups: np.ndarray, channel_id: int) -> Value:
  """`stablehlo.all_reduce` of one tensor over `replica_groups` (device ids).

  One tensor per op: XLA (0.10) rejects a variadic all-reduce inside an
  `sdy.manual_computation`, and its all-reduce combiner merges them anyway.
  """
  groups = ir.DenseElementsAttr.get(np.ascontiguousarray(replica_groups, np.int64),
                                    type=ir.IntegerType.get_signless(64))
  op = hlo.AllReduceOp([value.type], [value], groups,
                       channel_handle=hlo.ChannelHandle.get(channel_id, 1),
                       use_global_device_ids=True)
  scalar_type = tensor((), element_of(value))
  block = op.regions[0].blocks.append(scalar_type, scalar_type)
  with ir.InsertionPoint(block):
    hlo.return_([combiner(*block.arguments)])
  return op.results[0]


# --- loops -----------------------------------------------------------------------

class Loop:
  """A `stablehlo.while` counting `i` from 0 to `trip_count` with named carries.

      loop = Loop(trip_count, m=init_m, s=init_s)
      with loop.body() as (i, c):          # c.m, c.s are the carried values
        loop.yield_(m=..., s=...)
      m, s = loop.results.m, loop.results.s
  """

  def __init__(self, trip_count: int, **carries: Value):
    self.names = list(carries)
    operands = [scalar(0, i32()), *carries.values()]
    self.op = hlo.WhileOp([v.type for v in operands], operands)
    self._types = [v.type for v in operands]
    cond = self.op.regions[0].blocks.append(*self._types)
    with ir.InsertionPoint(cond):
      hlo.return_([compare(cond.arguments[0], scalar(trip_count, i32()), "LT")])
    self._body = self.op.regions[1].blocks.append(*self._types)
    self._yielded = False

  @contextlib.contextmanager
  def body(self) -> Iterator[tuple[Value, "Carries"]]:
    with ir.InsertionPoint(self._body):
      args = list(self._body.arguments)
      yield args[0], Carries(dict(zip(self.names, args[1:])))
    if not self._yielded:
      raise RuntimeError("Loop body ended without yield_()")

  def yield_(self, **carries: Value) -> None:
    if set(carries) != set(self.names):
      raise ValueError(f"yield_ needs exactly {self.names}, got {sorted(carries)}")
    i = self._body.arguments[0]
    hlo.return_([add(i, 1), *(carries[n] for n in self.names)])
    self._yielded = True

  @property
  def results(self) -> "Carries":
    return Carries(dict(zip(self.names, list(self.op.results)[1:])))


class Carries:
  """Named values of a loop's carries (attribute access)."""

  def __init__(self, values: dict[str, Value]):
    self.__dict__.update(values)
