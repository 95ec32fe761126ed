"""How the primitives lower: straight to chunked loops, or to the composite.

Two routes reach XLA:

* **chunked** (the default): the primitives' own lowering rules emit the
  `[tokens, classes]`-free loops of `gshard-chunk-softmax` in place, sized by a
  memory budget. Every compiler of JAX programs gets them with no change to how
  it compiles: `jax.jit`, `nnx.jit`, pjit, Keras's trainer, `jax.export`.
* **composite**: the primitives lower to `stablehlo.composite`s whose
  decomposition is the dense reference, for whole-module passes to rewrite.
  `gshard_op.jit` traces under this mode and then runs its pipeline (the fused
  3-matmul training step, vocab sharding read from Shardy on Auto meshes);
  `gshard-opt` research and `jax.export` of the composite ask for it with
  `with gshard_op.lowering("composite"): ...`.

The mode and budget are JAX configuration states that are part of the trace
context, so `jax.jit` retraces when they change (like
`jax_default_matmul_precision`), and they are read once, when the primitive is
bound, into a `Lowering` parameter of the primitive: JAX caches lowerings by
parameters, and the lowering rule reads nothing global.

    with gshard_op.lowering("composite"):
      print(jax.jit(step).lower(*args).as_text())    # the composites
    jax.config.update("gshard_op_memory_budget_mib", 256.0)   # process-wide
"""

from __future__ import annotations

import contextlib
import dataclasses

from gshard_op import budget
# JAX has no public way to declare a configuration option; one that is part of
# the trace context is the only switch that jax.jit's caches key on.
from gshard_op._private import jax_config

MODES = ("chunked", "composite")

_mode = jax_config.traced_enum(
    "gshard_op_lowering", MODES, "chunked",
    help="How gshard_op's primitives lower: 'chunked' loops that never build the "
         "[tokens, classes] logits, or 'composite' for gshard_op's MLIR passes.")


def _check_budget(value):
  """None (the platform's default) or `budget.check`'s float."""
  return None if value is None else budget.check(value)


_budget = jax_config.traced_float(
    "gshard_op_memory_budget_mib", None,
    "MiB of float32 [tokens, classes] chunk buffers the chunked lowering may keep live "
    "(None: the default of the platform the program is compiled for, "
    "gshard_op/budget.py: 64 MiB on the CPU, 128 MiB on an accelerator).",
    parser=_check_budget)


@dataclasses.dataclass(frozen=True)
class Lowering:
  """A primitive parameter: the route and, for `chunked`, the loops' budget.

  `memory_budget_mib` None is the default of the platform the program is
  lowered for (`budget.default_for_platforms`), read by the rule from the
  lowering context rather than from the host at trace time: a program compiled
  ahead of time for a TPU gets the TPU's budget on a CPU host.

  `shard` is set only inside a partitioned program (`gshard_op/partitioning.py`):
  the operands are then one device's blocks of that layout (a hashable
  `gshard_op.sharded.ShardSpec`), and the rule lowers that device's loops
  and the collectives that combine them (`sharded.body`).
  """

  mode: str = "chunked"
  memory_budget_mib: float | None = None
  shard: object = None

  def __repr__(self):  # as the dataclass's, without an unset `shard`
    shard = "" if self.shard is None else f", shard={self.shard!r}"
    return (f"Lowering(mode={self.mode!r}, memory_budget_mib={self.memory_budget_mib!r}"
            f"{shard})")

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"lowering mode must be one of {MODES}, got {self.mode!r}")
    if self.memory_budget_mib is not None:
      budget.check(self.memory_budget_mib)

  def budget_for(self, platforms) -> float:
    """The loops' budget in MiB for a program lowered for `platforms`."""
    if self.memory_budget_mib is not None:
      return self.memory_budget_mib
    return budget.default_for_platforms(platforms)


def current() -> Lowering:
  """The `Lowering` in force where the primitive is bound (trace time)."""
  mib = _budget.value
  return Lowering(_mode.value, mib)


@contextlib.contextmanager
def lowering(mode: str | None = None, *, memory_budget_mib: float | None = None):
  """Binds gshard_op's primitives traced inside to the `mode` route and budget.

  Args:
    mode: "composite" (for whole-module passes, `jax.export` of the composite)
      or "chunked" (the default route); None keeps the one in force.
    memory_budget_mib: the chunked loops' budget; None keeps the one in force.
  """
  if mode is not None and mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  with contextlib.ExitStack() as stack:
    if mode is not None:
      stack.enter_context(_mode(mode))
    if memory_budget_mib is not None:
      stack.enter_context(_budget(_check_budget(memory_budget_mib)))
    yield
