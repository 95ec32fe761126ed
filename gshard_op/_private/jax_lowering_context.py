"""What a lowering rule's context says about the program being lowered.

Why private: `gshard_op.partitioning` emits a `custom_partitioning` call only
where XLA's SPMD partitioner will split the program across devices, and JAX has
no public way for a lowering rule to ask that. Its `mlir.LoweringRuleContext`
keeps the answer in private fields of the module context: the axis context
(`jax._src.sharding_impls.ShardingContext` for a program the partitioner
splits, with its `num_devices` and `device_assignment`; a `shard_map` body is
already per-device) and `lowering_parameters.for_export` (a `jax.export`
lowering, which cannot serialise the partitioner's callback). And the devices
reach a lowering rule only for primitives in the private registry
`jax._src.dispatch.prim_requires_devices_during_lowering`, as JAX's cuDNN
primitives are registered: there is no public one.
"""

from __future__ import annotations


def for_export(ctx) -> bool:
  """Whether `ctx` lowers for `jax.export`."""
  return bool(ctx.module_context.lowering_parameters.for_export)


def spmd_device_count(ctx) -> int | None:
  """The number of devices XLA's SPMD partitioner splits the program of `ctx`
  across; None where the axis context is no `ShardingContext` (a `shard_map`
  body, already per-device)."""
  from jax._src import sharding_impls

  axes = ctx.module_context.axis_context
  return axes.num_devices if isinstance(axes, sharding_impls.ShardingContext) else None


def device_assignment(ctx) -> tuple:
  """The devices the program of `ctx` is lowered for; () where its axis
  context does not say (or JAX no longer does)."""
  return tuple(getattr(ctx.module_context.axis_context, "device_assignment", None) or ())


def require_devices_during_lowering(prim) -> None:
  """Makes `jax.jit` hand the program's devices to the lowering of programs
  holding `prim` (custom_partitioning builds its mesh from them)."""
  from jax._src import dispatch

  dispatch.prim_requires_devices_during_lowering.add(prim)
