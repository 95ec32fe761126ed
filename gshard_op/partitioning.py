"""The primitives partition themselves: `custom_partitioning` with Shardy rules.

Under plain `jax.jit` on a mesh, the chunked lowering runs before XLA's
sharding propagation, so on its own it cannot know that the embedding is
sharded over the vocabulary, and XLA would all-gather the `[V, M]` embedding
for the loops. Here the lowering rule instead emits a
`jax.experimental.custom_partitioning` call, as JAX's cuDNN attention does:

* its Shardy `sharding_rule` names the factors: tokens `n`, features `m`
  (replicated before the op: an FSDP-style embedding is gathered on `M`, as
  dense XLA gathers it) and vocab `v` (a reduction factor of the forward, so
  propagation keeps the embedding sharded on it);
* once propagation has chosen the operands' shardings, the partitioner calls
  `_partition`, which reads them, applies the one layout rule of
  `gshard-shard-vocab` (`sharded.vocab_layout`) and returns the per-device
  function: the same primitive bound with `Lowering.shard` set, whose rule
  lowers `sharded.body`, the per-shard loops and `[tokens]`-sized
  all-reduces of the pass.

So a vocab-sharded embedding is never all-gathered on `V`, on Auto and
Explicit meshes alike. Vocab shards that do not divide `V` are gathered on
`V` instead, with a warning (correct, but not memory-saving).

Where it does not apply, the rule emits the loops unpartitioned: one device,
a fully manual context (inside `shard_map`, the operands are already
per-device), and `jax.export`, whose serialisation cannot carry the
partitioner's Python callback. The persistent compilation cache does not
cache programs holding the callback either (see the README).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings

from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.sharding import NamedSharding, PartitionSpec

from gshard_op import contract
from gshard_op.lowering import Lowering
from gshard_op.options import SoftmaxOptions

log = logging.getLogger("gshard_op")


def applies(ctx) -> bool:
  """Whether the program being lowered is partitioned by XLA across devices.

  Reads two fields of JAX's private lowering context, because JAX has no
  public way to ask: the axis context (`ShardingContext` is a program XLA's
  SPMD partitioner will split; a `shard_map` body is already per-device) and
  `LoweringParameters.for_export` (a `jax.export` lowering, which cannot
  serialise the partitioner's callback). Both through
  `gshard_op/_private/jax_lowering_context.py`.
  """
  from gshard_op._private import jax_lowering_context  # private: see the docstring

  if jax_lowering_context.for_export(ctx):
    return False
  count = jax_lowering_context.spmd_device_count(ctx)
  return count is not None and count > 1


class AheadOfTimeLimit(NotImplementedError):
  """Plain `jax.jit` of the op on a mesh cannot be compiled ahead of time for
  compile-only TPU devices (`jax.experimental.topologies` on a host without
  the TPUs): see `check_partitioner`."""


def check_partitioner(ctx, prim: Primitive) -> None:
  """Raises `AheadOfTimeLimit`, at lowering rather than in XLA, where the
  partitioner's callback cannot run: libtpu's compile-only client (ahead-of-time
  compilation for TPUs from a host without them) has no custom-partitioning
  emitter, and registering jax's callback with its PJRT API does not add one
  (tried on libtpu 0.0.42.1), so XLA would fail with "Custom emitter for
  CustomSPMDPartitioning not found". Reads the private axis context's device
  assignment, as `applies` reads the context."""
  from gshard_op._private import jax_lowered, jax_lowering_context

  devices = jax_lowering_context.device_assignment(ctx)
  if not any(d.platform == "tpu" and jax_lowered.is_compile_only(d) for d in devices):
    return
  raise AheadOfTimeLimit(
      f"{prim.name}: plain jax.jit on a mesh of {len(devices)} compile-only TPU devices "
      "cannot be compiled ahead of time: the op partitions itself with "
      "jax.experimental.custom_partitioning, and the compile-only TPU client has no "
      "partitioner for it (XLA: 'Custom emitter for CustomSPMDPartitioning not found'). "
      "Compile the same function with gshard_op.jit(f) instead: its gshard-shard-vocab "
      "pass reads the mesh from the module and emits per-device loops, with no all-gather "
      "of the embedding. (Or trace it under gshard_op.lowering(\"composite\") for the dense "
      "decomposition, which XLA partitions itself, [tokens, vocab/shards] logits included.)")


def needs_devices(prim: Primitive) -> None:
  """Marks `prim` as one whose lowering needs the program's devices, as JAX's
  cuDNN primitives are marked: custom_partitioning builds its mesh from them,
  and jit hands them to the lowering only for programs holding such a
  primitive. (A private JAX registry, behind gshard_op/_private/: there is no
  public one.)"""
  from gshard_op._private import jax_lowering_context

  jax_lowering_context.require_devices_during_lowering(prim)


def lower(ctx, prim: Primitive, args, *, is_grad: bool, options: SoftmaxOptions,
          lowering: Lowering):
  """The rule's result for `prim(*args)` (the gradient primitive when
  `is_grad`): a custom-partitioning call whose partitioner picks the
  per-device loops."""
  from jax.interpreters import mlir

  from jaxlib.mlir import ir

  check_partitioner(ctx, prim)
  labels_are_ids = ctx.avals_in[2].dtype.kind in "iu"
  partitioned = _partitioned(prim, is_grad, options, lowering, labels_are_ids)
  results = mlir.lower_fun(partitioned, multiple_results=True)(ctx, *args)
  # The call names its partitioner only by a pointer (the backend config), so
  # the program text says which op and parameters it stands for: two calls
  # differing only in options never share a persistent-cache entry under
  # `jax_remove_custom_partitioning_ptr_from_cache_key` (see the README).
  call = results[0].owner
  call.attributes["mhlo.frontend_attributes"] = ir.DictAttr.get({
      "gshard_op": ir.StringAttr.get(f"{prim.name} {options} {lowering}")})
  return results


# --- the Shardy rule ---------------------------------------------------------------------

def sharding_rule(is_grad: bool, labels_are_ids: bool, with_entropy: bool = False) -> str:
  """The op's factors in Shardy's einsum-like notation.

      forward   x[n, m], embedding[v, m], labels[n] | [n, v] -> four [n] (five
                with the entropy)
      gradient  ..., logsumexp and three cotangents [n] (and the entropy and its
                cotangent) -> d_x[n, m], d_embedding[v, m]
  """
  operands = ["n m", "v m", "n" if labels_are_ids else "n v"]
  if is_grad:
    per_token = len(contract.grad_operands(with_entropy)) - 3
    return ", ".join(operands + ["n"] * per_token) + " -> n m, v m"
  return ", ".join(operands) + " -> " + ", ".join(["n"] * len(contract.forward_results(with_entropy)))


@functools.lru_cache(maxsize=None)
def _partitioned(prim: Primitive, is_grad: bool, options: SoftmaxOptions, lowering: Lowering,
                 labels_are_ids: bool):
  """The custom-partitioning function of one primitive and parameter set."""
  def unpartitioned(*args):
    # custom_partitioning's own body, lowered only where nothing is partitioned.
    one_device = dataclasses.replace(lowering, shard=_one_device())
    return tuple(prim.bind(*args, options=options, lowering=one_device))

  fn = custom_partitioning(unpartitioned)
  fn.def_partition(
      partition=functools.partial(_partition, prim, is_grad, options, lowering),
      sharding_rule=sharding_rule(is_grad, labels_are_ids, options.with_entropy),
      reduction_factors=() if is_grad else ("v",),
      need_replication_factors=("m",))
  return fn


def _one_device():
  from gshard_op.sharded import ShardSpec
  return ShardSpec((), (), ())


# --- the partition callback --------------------------------------------------------------

def _partition(prim: Primitive, is_grad: bool, options: SoftmaxOptions, lowering: Lowering,
               mesh, arg_shapes, result_shape):
  """Called by the partitioner with the shardings propagation chose: returns
  the per-device function and the shardings it needs and produces."""
  del result_shape  # fixed by the layout
  x, embedding, labels = arg_shapes[:3]
  layout = _layout(prim, mesh, x, embedding)
  tok, voc = tuple(layout.token_axes), tuple(layout.vocab_axes)

  def named(*dims: tuple[str, ...]) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(*(d or None for d in dims)))

  per_token = named(tok)
  labels_sharding = per_token if len(labels.shape) == 1 else named(tok, voc)
  arg_shardings = (named(tok, ()), named(voc, ()), labels_sharding,
                   *[per_token] * (len(arg_shapes) - 3))
  if is_grad:
    result_shardings = (named(tok, ()), named(voc, ()))
  else:
    result_shardings = (per_token,) * len(contract.forward_results(options.with_entropy))
  per_device = dataclasses.replace(lowering, shard=layout.spec())

  def lower_fn(*args):
    return tuple(prim.bind(*args, options=options, lowering=per_device))

  return mesh, lower_fn, result_shardings, arg_shardings


def spec_axes(sharding, dim: int) -> tuple[str, ...]:
  """The mesh axes dimension `dim` of a `NamedSharding` (or any sharding with
  a `spec`) is split over."""
  spec = sharding.spec
  entry = spec[dim] if dim < len(spec) else None
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _layout(prim: Primitive, mesh, x, embedding):
  """The layout rule of `gshard-shard-vocab` on the shardings the partitioner
  chose; a vocab its shards do not divide is gathered on `V`, with a warning."""
  from gshard_op import sharded

  grid = sharded.Mesh.of_axes(dict(mesh.shape))
  n, v = x.shape[0], embedding.shape[0]
  tokens = spec_axes(x.sharding, 0) if isinstance(x.sharding, NamedSharding) else ()
  vocab = ()
  if isinstance(embedding.sharding, NamedSharding):
    vocab = spec_axes(embedding.sharding, 0)
  elif not embedding.sharding.is_fully_replicated:
    _announce(f"{prim.name}: the embedding's sharding {embedding.sharding} names no mesh "
              "axes; it is gathered and the vocab is not sharded")
  try:
    return sharded.vocab_layout(grid, num_tokens=n, num_classes=v, vocab_axes=vocab,
                              token_axes=tokens)
  except sharded.Unsupported as e:
    _announce(f"{prim.name}: {e}; the embedding is gathered on the vocab (correct, but "
              "each device holds all of it). Pad the vocab to a multiple of the shards "
              "to keep it sharded.")
    return sharded.vocab_layout(grid, num_tokens=n, num_classes=v, vocab_axes=(),
                              token_axes=tokens)


def _announce(message: str) -> None:
  warnings.warn(message, stacklevel=2)
  log.warning(message)
