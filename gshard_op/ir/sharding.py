"""Per-device loops over a vocab-sharded mesh: the layout rule and the emitters.

Shared by `gshard-shard-vocab` (which reads the layout from Shardy's
annotations) and the primitives' own lowering (which reads it from Explicit
avals, or from the shardings XLA's partitioner chose: `gshard_op/partitioning.py`).

* `Mesh`, `Layout`, `ShardSpec` (a hashable `Layout`), `vocab_layout`: the one
  rule that decides which axes hold the vocab and which the tokens.
* `emit_shard`: one device's chunked loops (`gshard_op/ir/loops.py`) on its
  `[V / shards, M]` slice, combined across the shards with `[tokens]`-sized
  all-reduces (max, sum-exp, target logit[, logit sum], argmax; `d_x`; each
  `d_embedding` chunk over the token shards). Label smoothing and `Q` use the
  global vocabulary size, and the logsumexp is global before anything uses it.
* `emit_manual`: the same inside an `sdy.manual_computation` over the mesh,
  at any insertion point.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from jaxlib.mlir import ir
from jaxlib.mlir.dialects import sdy
from jaxlib.mlir.dialects import stablehlo as hlo

from gshard_op import contract
from gshard_op.ir import builders as b
from gshard_op.ir.loops import emit_forward, emit_grad
from gshard_op.ir.softmax import Softmax


class Unsupported(Exception):
  """A sharding layout the pass leaves to the plain chunked rewrite."""


@dataclasses.dataclass
class Mesh:
  """An `sdy.mesh`: axis names and sizes, and the device id at each position."""

  name: str  # the sdy.mesh symbol; "" for a mesh written inline
  axes: dict[str, int]
  device_ids: np.ndarray  # shape = axis sizes

  @classmethod
  def of_axes(cls, axes: dict[str, int]) -> "Mesh":
    """A mesh of `axes` whose device at each position is its row-major index
    (JAX's: partition i is the i-th device of the mesh), written inline (a
    lowering rule has no symbol to refer to)."""
    axes = dict(axes)
    ids = np.arange(math.prod(axes.values())).reshape(tuple(axes.values()))
    return cls("", axes, ids)

  def ref(self) -> str | sdy.MeshAttr:
    """What a sharding names: the symbol, or the mesh itself when inline."""
    if self.name:
      return self.name
    return sdy.MeshAttr.get([sdy.MeshAxisAttr.get(n, s) for n, s in self.axes.items()])

  def axis_positions(self, axis: str) -> np.ndarray:
    """`table[device_id]` = the device's index along `axis`."""
    dim = list(self.axes).index(axis)
    table = np.zeros(self.device_ids.size, np.int32)
    for position, device in np.ndenumerate(self.device_ids):
      table[device] = position[dim]
    return table

  def replica_groups(self, axes: list[str]) -> np.ndarray:
    """Groups of devices that differ only along `axes` (one group per row)."""
    names = list(self.axes)
    reduced = [names.index(a) for a in axes]
    kept = [i for i in range(len(names)) if i not in reduced]
    ids = np.transpose(self.device_ids, kept + reduced)
    return ids.reshape(-1, math.prod(self.axes[a] for a in axes))


@dataclasses.dataclass
class Layout:
  """How one op is laid out on the mesh: its vocab over `vocab_axes`, its
  tokens over `token_axes` (none shared), everything else replicated."""

  mesh: Mesh
  vocab_axes: list[str]
  token_axes: list[str]

  @property
  def vocab_shards(self) -> int:
    return math.prod(self.mesh.axes[a] for a in self.vocab_axes)

  @property
  def token_shards(self) -> int:
    return math.prod(self.mesh.axes[a] for a in self.token_axes)

  def shard_tokens(self, axes, num_tokens: int) -> None:
    """Tokens over those of `axes` that do not hold the vocab; replicated
    instead when those shards do not divide `num_tokens`."""
    self.token_axes = [a for a in axes if a not in self.vocab_axes]
    if num_tokens % self.token_shards:
      self.token_axes = []

  def sharding(self, *dims: list[str]) -> sdy.TensorShardingAttr:
    return sdy.TensorShardingAttr.get(
        self.mesh.ref(),
        [sdy.DimensionShardingAttr.get([sdy.AxisRefAttr.get(a) for a in axes], True)
         for axes in dims])

  def spec(self) -> "ShardSpec":
    return ShardSpec(tuple(self.mesh.axes.items()), tuple(self.vocab_axes),
                     tuple(self.token_axes))


@dataclasses.dataclass(frozen=True)
class ShardSpec:
  """A `Layout` as a hashable primitive parameter (a mesh of row-major device
  ids, as JAX numbers the partitions of a program)."""

  mesh_axes: tuple[tuple[str, int], ...]
  vocab_axes: tuple[str, ...]
  token_axes: tuple[str, ...]

  def layout(self) -> Layout:
    return Layout(Mesh.of_axes(dict(self.mesh_axes)), list(self.vocab_axes),
                  list(self.token_axes))


def vocab_layout(mesh: Mesh, *, num_tokens: int, num_classes: int, vocab_axes,
                 token_axes) -> Layout:
  """The layout rule, wherever the shardings are read from (Shardy's
  annotations, Explicit avals, or the partitioner's choice): the vocab stays
  on `vocab_axes`, which must divide it (else `Unsupported`), and the tokens
  on those of `token_axes` that do not hold the vocab (`Layout.shard_tokens`)."""
  layout = Layout(mesh, list(vocab_axes), [])
  if num_classes % layout.vocab_shards:
    raise Unsupported(f"vocab size {num_classes} is not divisible by its "
                      f"{layout.vocab_shards} shards")
  layout.shard_tokens(token_axes, num_tokens)
  return layout


class _Collectives:
  """All-reduces over the mesh, each with a fresh channel id from `new_channel`."""

  def __init__(self, layout: Layout, new_channel: Callable[[], int]):
    self.layout = layout
    self.new_channel = new_channel

  def __call__(self, value: ir.Value, combiner, axes: list[str]) -> ir.Value:
    if not axes:  # one shard: nothing to combine
      return value
    return b.all_reduce(value, combiner, self.layout.mesh.replica_groups(axes),
                        self.new_channel())

  def axis_index(self, axes: list[str]) -> ir.Value:
    """This device's linear index over `axes` (major to minor), i32 scalar."""
    pid = b.convert(hlo.partition_id(), b.i32())
    index = b.scalar(0, b.i32())
    for axis in axes:
      table = self.layout.mesh.axis_positions(axis)
      const = hlo.constant(ir.DenseElementsAttr.get(table, type=b.i32()))
      position = b.reshape(b.dynamic_slice(const, [pid], [1]), ())
      index = b.add(b.mul(index, self.layout.mesh.axes[axis]), position)
    return index


def emit_manual(sm: Softmax, layout: Layout, is_grad: bool, operands: list[ir.Value],
                result_types: list[ir.Type], plan, new_channel: Callable[[], int],
                tag: str) -> list[ir.Value]:
  """An `sdy.manual_computation` over the mesh in which each device runs the
  chunked loops on its shard; returns its results. At the current insertion
  point; `plan(n_local, v_local)` sizes each device's loops.

  Operands: x, embedding, labels, then (gradient) the `[N]` per-token
  vectors; the labels' per-token mass is added for probabilities, which a
  shard holding only its classes' columns cannot compute alone.
  """
  tok, voc = layout.token_axes, layout.vocab_axes
  per_token = layout.sharding(tok)
  operands = list(operands)
  shardings = [layout.sharding(tok, []), layout.sharding(voc, []),
               per_token if sm.labels_are_ids else layout.sharding(tok, voc)]
  shardings += [per_token] * (len(operands) - 3)
  if is_grad:
    out_shardings = [layout.sharding(tok, []), layout.sharding(voc, [])]
  else:
    out_shardings = [per_token] * len(result_types)
  if not sm.labels_are_ids:
    operands.append(sm.label_mass(operands[2]))
    shardings.append(per_token)
  manual = sdy.ManualComputationOp(
      result_types, operands,
      sdy.TensorShardingPerValueAttr.get(shardings),
      sdy.TensorShardingPerValueAttr.get(out_shardings),
      sdy.ManualAxesAttr.get([ir.StringAttr.get(a) for a in layout.mesh.axes]))
  local_types = [_local_type(v, s, layout) for v, s in zip(operands, shardings)]
  block = manual.body.blocks.append(*local_types)
  with ir.InsertionPoint(block):
    sdy.return_(emit_shard(sm, layout, is_grad, list(block.arguments), plan, new_channel))
  manual.operation.attributes["gshard.plan"] = ir.StringAttr.get(
      f"{tag}: vocab over {voc} ({layout.vocab_shards} shards), "
      f"tokens over {tok or 'none'}")
  return list(manual.results)


def emit_shard(sm: Softmax, layout: Layout, is_grad: bool, args: list[ir.Value], plan,
               new_channel: Callable[[], int]) -> list[ir.Value]:
  """One device's loops on its local operands, combined across the shards:
  the per-shard body of `emit_manual`, and of the primitives' partitioned
  lowering (`gshard_op/partitioning.py`), where the partitioner has already
  split the operands.

  `args` are the composite's operands (x, embedding, labels[, the gradient's
  `[N]` vectors]) as this device holds them, then, for probabilities,
  optionally the labels' global per-token mass (else summed here over the
  vocab shards).
  """
  collectives = _Collectives(layout, new_channel)
  count = (len(contract.grad_operands(sm.options.with_entropy)) if is_grad
           else len(contract.FORWARD_OPERANDS))
  local = (contract.GradOperands if is_grad else contract.ForwardOperands)(*args[:count])
  label_mass = None
  if not sm.labels_are_ids:
    label_mass = (args[count] if len(args) > count else
                  collectives(sm.label_mass(local.labels), b.add, layout.vocab_axes))
  v_local = b.shape_of(local.embedding)[0]
  chunks = plan(b.shape_of(local.x)[0], v_local)
  vocab = layout.vocab_axes
  # An unsharded vocab (tokens alone sharded) needs no offset and no combine.
  class_offset = b.mul(collectives.axis_index(vocab), v_local) if vocab else None

  if not is_grad:
    return emit_forward(
        sm, chunks, *local, label_mass=label_mass, class_offset=class_offset,
        reduce_stats=(lambda stats: stats.combine(
            sm, lambda value, combiner: collectives(value, combiner, vocab)))
        if vocab else None)

  return emit_grad(
      sm, chunks, *local, label_mass=label_mass, class_offset=class_offset,
      reduce_d_x=(lambda d: collectives(d, b.add, vocab)) if vocab else None,
      # Each token shard saw only its tokens: sum each chunk's update over them.
      reduce_d_emb=(lambda d: collectives(d, b.add, layout.token_axes))
      if layout.token_axes else None)


def _local_type(value: ir.Value, sharding: sdy.TensorShardingAttr, layout: Layout) -> ir.Type:
  shape = list(b.shape_of(value))
  for dim, axes in enumerate(sdy.DimensionShardingAttr(d) for d in sharding.dimension_shardings):
    shape[dim] //= math.prod(layout.mesh.axes[sdy.AxisRefAttr(a).name] for a in axes.axes)
  return b.tensor(shape, b.element_of(value))
