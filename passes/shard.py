"""`gshard-shard-vocab`: a vocab-sharded composite becomes per-shard loops.

When Shardy says the embedding's vocab dimension is sharded over mesh axes
(its `sdy.sharding`, found by following the operand back to an annotated
function argument or `sdy.sharding_constraint`), the composite becomes an
`sdy.manual_computation` over the mesh in which each device runs the chunked
loops of `gshard-chunk-softmax` on its own `[V / shards, M]` slice
(`gshard_op/sharded.py`'s body, as JAX lowers it, in `gshard_op/ir/manual.py`'s
manual computation):

  forward   per-token online stats of the local classes, then one all-reduce
            each of max, (sum-exp, target logit[, logit sum]) and argmax:
            O(N) values, never O(N x V);
  gradient  the local slice of `d_embedding` needs no vocab collective;
            `d_x` is summed over the vocab shards (and `d_embedding` over the
            token shards, as any data-parallel gradient is).

This module reads the layout from Shardy's annotations; the rule that turns
it into a `Layout` (`vocab_layout`) and the per-device body (`sharded.body`)
are the ones the primitives' own lowering and partitioner use. Tokens stay sharded as `x` is (when Shardy
says so) and are otherwise replicated. Layouts this pass does not handle (the
model dimension sharded, sub-axes, a vocab size the shards do not divide) are
left to `gshard-chunk-softmax` with a warning saying why.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
from collections.abc import Callable

import numpy as np
from jaxlib.mlir import ir
from jaxlib.mlir.dialects import sdy
from jaxlib.mlir.dialects import stablehlo as hlo

from gshard_op import sharded
from gshard_op.ir.manual import emit_manual
from gshard_op.ir.splice import lowered, replace, spec_of, splice
from gshard_op.ir.types import shape_of
from gshard_op.passes import composites
from gshard_op.passes.chunking import ChunkingOptions
from gshard_op.passes.module_pass import walk
from gshard_op.passes.rewrite import CompositeRewrite
from gshard_op.online_softmax import Spec
from gshard_op.sharded import Layout, Mesh, Unsupported, vocab_layout

log = logging.getLogger("gshard.passes")


def read_mesh(module: ir.Operation, name: str) -> Mesh:
  for op in module.regions[0].blocks[0].operations:
    if op.operation.name == "sdy.mesh" and ir.StringAttr(op.attributes["sym_name"]).value == name:
      attr = sdy.MeshAttr(op.attributes["mesh"])
      axes = {a.name: a.size for a in map(sdy.MeshAxisAttr, attr.axes)}
      count = math.prod(axes.values())
      ids = list(attr.device_ids) or list(range(count))
      if len(ids) != count:
        raise Unsupported(f"mesh @{name} has {len(ids)} device ids for {count} devices")
      return Mesh(name, axes, np.asarray(ids, np.int64).reshape(tuple(axes.values())))
  raise Unsupported(f"no sdy.mesh @{name} in the module")


# Ops a sharding flows through unchanged, operand 0 to result 0.
_TRANSPARENT = {"stablehlo.convert", "stablehlo.copy", "stablehlo.optimization_barrier"}


def sharding_of(value: ir.Value) -> sdy.TensorShardingAttr | None:
  """The Shardy sharding reaching `value`, if one is written down."""
  for _ in range(64):
    owner = value.owner
    if isinstance(owner, ir.Block):
      parent = owner.owner
      parent = parent.operation if isinstance(parent, ir.OpView) else parent
      if parent is not None and parent.name == "func.func" and "arg_attrs" in parent.attributes:
        attrs = ir.DictAttr(ir.ArrayAttr(parent.attributes["arg_attrs"])[value.arg_number])
        if "sdy.sharding" in attrs:
          return sdy.TensorShardingAttr(attrs["sdy.sharding"])
      return None
    op = owner.operation if isinstance(owner, ir.OpView) else owner
    if "sdy.sharding" in op.attributes:
      per_value = sdy.TensorShardingPerValueAttr(op.attributes["sdy.sharding"])
      return sdy.TensorShardingAttr(per_value.shardings[value.result_number])
    if op.name == "sdy.sharding_constraint":
      return sdy.TensorShardingAttr(op.attributes["sharding"])
    if op.name in _TRANSPARENT or (op.name == "stablehlo.reshape" and _keeps_major(op)):
      value = op.operands[0]
      continue
    return None
  return None


def _keeps_major(reshape: ir.Operation) -> bool:
  """A reshape `[B, T, M] -> [B*T, M]`-like: dim 0 of the result starts with dim 0."""
  src, dst = shape_of(reshape.operands[0]), shape_of(reshape.results[0])
  return len(src) >= 1 and len(dst) >= 1 and src[-1] == dst[-1]


def dim_axes(sharding: sdy.TensorShardingAttr, dim: int) -> list[str]:
  dims = list(sharding.dimension_shardings)
  if dim >= len(dims):
    return []
  axes = [sdy.AxisRefAttr(a) for a in sdy.DimensionShardingAttr(dims[dim]).axes]
  if any(a.sub_axis_info is not None for a in axes):
    raise Unsupported("sub-axis shardings are not supported")
  return [a.name for a in axes]


def mesh_name(sharding: sdy.TensorShardingAttr) -> str:
  ref = sharding.mesh_or_ref
  if isinstance(ref, ir.FlatSymbolRefAttr):
    return ref.value
  raise Unsupported("inline meshes are not supported (expected a reference to an sdy.mesh)")


def layout_of(module: ir.Operation, site: composites.SoftmaxComposite) -> Layout | None:
  """The layout of `site` from Shardy's annotations, None when the vocab is
  not sharded."""
  x, embedding = site.args.x, site.args.embedding
  emb_sharding = sharding_of(embedding)
  if emb_sharding is None:
    return None
  vocab_axes = dim_axes(emb_sharding, 0)
  if dim_axes(emb_sharding, 1):
    raise Unsupported("the embedding's model dimension is sharded "
                      f"({dim_axes(emb_sharding, 1)}); it must be replicated")
  if not vocab_axes:
    return None
  mesh = read_mesh(module, mesh_name(emb_sharding))
  x_sharding = sharding_of(x)
  token_axes = []
  if x_sharding is not None and mesh_name(x_sharding) == mesh.name:
    token_axes = dim_axes(x_sharding, 0)
  return vocab_layout(mesh, num_tokens=site.num_tokens, num_classes=site.num_classes,
                      vocab_axes=vocab_axes, token_axes=token_axes)


def channels_after(module: ir.Operation) -> Callable[[], int]:
  """Fresh channel ids: past every channel the module already uses."""
  used = [hlo.ChannelHandle(op.attributes["channel_handle"]).handle
          for op in walk(module, lambda o: "channel_handle" in o.attributes)]
  return functools.partial(next, itertools.count(1 + max(used, default=0)))


@dataclasses.dataclass
class ShardVocabPass(ChunkingOptions, CompositeRewrite):
  """Options as `gshard-chunk-softmax`, applied to each shard's local problem;
  the budget is the mesh's, so each device's loops get its share of it."""

  name = "gshard-shard-vocab"
  summary = "Rewrite vocab-sharded gshard composites into per-shard chunked loops with all-reduces"

  def rewrite(self, site: composites.SoftmaxComposite, module: ir.Operation) -> bool:
    """Replaces `site` by its manual computation over the mesh (`emit_manual`)
    when Shardy shards its vocab."""
    try:
      layout = layout_of(module, site)
    except Unsupported as e:
      self.decline(site.op, str(e), action="sharded", left_to="gshard-chunk-softmax", warn=True)
      return False
    if layout is None:
      return False
    share = 1 / layout.mesh.device_ids.size
    chunks = self.plan(site.num_tokens // layout.token_shards,
                       site.num_classes // layout.vocab_shards, budget_share=share)
    spec = site.spec
    next_channel = channels_after(module)
    with site.op.location, ir.InsertionPoint(site.op):
      label_mass = None
      if not spec.labels_are_ids:
        labels = site.args.labels
        label_mass = splice(lowered(Spec.label_mass, (spec,), (spec_of(labels),)),
                            [labels], ir.InsertionPoint(site.op))[0]

      def body(local: list[ir.Value]) -> list[ir.Value]:
        text = lowered(sharded.body, (spec, layout.spec(), site.is_grad, chunks),
                       tuple(spec_of(v) for v in local))
        return splice(text, local, ir.InsertionPoint.current, next_channel)

      results = emit_manual(layout, site.is_grad, spec.labels_are_ids, site.operands, label_mass,
                            [r.type for r in site.op.results], body, tag=self.name)
    replace(site.op, results)
    return True
