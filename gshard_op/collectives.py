"""Collectives over explicit device groups, as JAX primitives.

The per-shard body (`gshard_op/sharded.py`) is plain JAX, but it runs where no
mesh axis is bound: inside an `sdy.manual_computation` a pass emits, in the
per-device function of the partitioner, in a lowering rule. So its two
collectives name devices, not axes:

* `all_reduce(x, combiner, groups)`: `stablehlo.all_reduce` over `groups` (rows
  of global device ids), one tensor per op (XLA 0.10 rejects a variadic
  all-reduce inside a manual computation, and its combiner merges them anyway);
* `partition_id()`: this device's id, int32.

Their lowering rules take a fresh channel from the module being lowered; a
pass that splices a lowered body renumbers them (`gshard_op/ir/splice.py`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import mlir
from jaxlib.mlir import ir
from jaxlib.mlir.dialects import stablehlo as hlo

COMBINERS = {"add": hlo.add, "max": hlo.maximum, "min": hlo.minimum}

all_reduce_p = Primitive("gshard_all_reduce")
partition_id_p = Primitive("gshard_partition_id")


def all_reduce(x, combiner: str, groups: tuple[tuple[int, ...], ...]):
  """`x` reduced with `combiner` ("add", "max", "min") over each group of devices."""
  if combiner not in COMBINERS:
    raise ValueError(f"combiner must be one of {tuple(COMBINERS)}, got {combiner!r}")
  return all_reduce_p.bind(x, combiner=combiner, groups=groups)


def partition_id():
  """This device's global id (int32 scalar)."""
  return partition_id_p.bind()


def _only_lowered(*args, **params):
  raise NotImplementedError("gshard_op.collectives run only inside a lowered program "
                            "(a per-device body), not eagerly")


all_reduce_p.def_impl(_only_lowered)
all_reduce_p.def_abstract_eval(lambda x, **params: x)
partition_id_p.def_impl(_only_lowered)
partition_id_p.def_abstract_eval(lambda: ShapedArray((), jnp.int32))


def _all_reduce_lowering(ctx, x, *, combiner: str, groups):
  element = ir.RankedTensorType(x.type).element_type
  attr = ir.DenseElementsAttr.get(np.asarray(groups, np.int64),
                                  type=ir.IntegerType.get_signless(64))
  op = hlo.AllReduceOp([x.type], [x], attr,
                       channel_handle=hlo.ChannelHandle.get(ctx.module_context.new_channel(), 1),
                       use_global_device_ids=True)
  scalar = ir.RankedTensorType.get([], element)
  block = op.regions[0].blocks.append(scalar, scalar)
  with ir.InsertionPoint(block):
    hlo.return_([COMBINERS[combiner](*block.arguments)])
  return op.results


def _partition_id_lowering(ctx):
  del ctx
  return [hlo.convert(ir.RankedTensorType.get([], ir.IntegerType.get_signless(32)),
                      hlo.partition_id())]


mlir.register_lowering(all_reduce_p, _all_reduce_lowering)
mlir.register_lowering(partition_id_p, _partition_id_lowering)
