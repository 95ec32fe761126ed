"""The vocab-sharded op: its layout rule and the per-device body.

Shared by `gshard-shard-vocab` (which reads the layout from Shardy's
annotations and splices the body into an `sdy.manual_computation`), the
primitives' lowering under an Explicit mesh (the same, emitted in place) and
the partitioner (`gshard_op/partitioning.py`, which reads it from the
shardings XLA chose and runs the body as each device's function).

* `Mesh`, `Layout`, `ShardSpec` (a hashable `Layout`), `vocab_layout`: the one
  rule that decides which axes hold the vocab and which the tokens.
* `body`: one device's chunked loops (`gshard_op/chunked.py`) on its
  `[V / shards, M]` slice, combined across the shards with `[tokens]`-sized
  all-reduces (max, sum-exp, target logit[, logit sum], argmax; `d_x`; each
  `d_embedding` chunk over the token shards). Label smoothing and `Q` use the
  global vocabulary size, and the logsumexp is global before anything uses it.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from gshard_op import chunked, collectives, contract
from gshard_op.online_softmax import Spec


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

  def spec(self) -> "ShardSpec":
    return ShardSpec(tuple(self.mesh.axes.items()), tuple(self.vocab_axes),
                     tuple(self.token_axes), self.mesh.name,
                     tuple(int(d) for d in self.mesh.device_ids.flat))


@dataclasses.dataclass(frozen=True)
class ShardSpec:
  """A `Layout` as a hashable value: a primitive parameter, a static argument
  of a lowered body. No `device_ids`: row-major ids, as JAX numbers the
  partitions of a program."""

  mesh_axes: tuple[tuple[str, int], ...]
  vocab_axes: tuple[str, ...]
  token_axes: tuple[str, ...]
  mesh_name: str = ""
  device_ids: tuple[int, ...] = ()

  def layout(self) -> Layout:
    mesh = Mesh.of_axes(dict(self.mesh_axes))
    if self.device_ids:
      mesh.device_ids = np.asarray(self.device_ids).reshape(mesh.device_ids.shape)
    mesh.name = self.mesh_name
    return Layout(mesh, list(self.vocab_axes), list(self.token_axes))


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


def _over(layout: Layout, axes: list[str]):
  """`reduce(value, combiner)` over the devices that differ only along `axes`
  (the identity when there are none: one shard)."""
  if not axes:
    return lambda value, combiner: value
  groups = tuple(map(tuple, layout.mesh.replica_groups(axes).tolist()))
  return lambda value, combiner: collectives.all_reduce(value, combiner, groups)


def axis_index(layout: Layout, axes: list[str]):
  """This device's linear index over `axes` (major to minor), int32 scalar."""
  device = collectives.partition_id()
  index = jnp.int32(0)
  for axis in axes:
    table = jnp.asarray(layout.mesh.axis_positions(axis))
    index = index * layout.mesh.axes[axis] + lax.dynamic_index_in_dim(table, device,
                                                                      keepdims=False)
  return index


def body(spec: Spec, shard: ShardSpec, is_grad: bool, chunks: chunked.ChunkPlan, *args):
  """One device's loops on its local operands (the layout `shard`), combined
  across the shards.

  `spec.num_classes` is the global V. `args` are the composite's operands (x,
  embedding, labels[, the gradient's `[N]` vectors]) as this device holds
  them, then, for probabilities, optionally the labels' global per-token mass
  (else summed here over the vocab shards). `chunks` sizes the loops at the
  local shapes.
  """
  count = (len(contract.grad_operands(spec.options.with_entropy)) if is_grad
           else len(contract.FORWARD_OPERANDS))
  local = (contract.GradOperands if is_grad else contract.ForwardOperands)(*args[:count])
  layout = shard.layout()
  vocab = _over(layout, layout.vocab_axes)
  label_mass = None
  if not spec.labels_are_ids:
    label_mass = args[count] if len(args) > count else vocab(spec.label_mass(local.labels), "add")
  v_local = local.embedding.shape[0]
  # An unsharded vocab (tokens alone sharded) needs no offset and no combine.
  sharded = bool(layout.vocab_axes)
  class_offset = axis_index(layout, layout.vocab_axes) * v_local if sharded else None
  if not is_grad:
    return chunked.forward(spec, chunks, *local, label_mass=label_mass, class_offset=class_offset,
                           reduce_stats=(lambda s: s.combine(spec, vocab)) if sharded else None)
  tokens = _over(layout, layout.token_axes)
  return chunked.grad(
      spec, chunks, *local, label_mass=label_mass, class_offset=class_offset,
      reduce_d_x=(lambda d: vocab(d, "add")) if sharded else None,
      # Each token shard saw only its tokens: sum each chunk's update over them.
      reduce_d_emb=(lambda d: tokens(d, "add")) if layout.token_axes else None)
