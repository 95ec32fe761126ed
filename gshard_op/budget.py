"""The memory budget: one default per platform and one check, for every user.

A budget is the MiB of float32 `[tokens, classes]` buffers a loop body may keep
live. The primitives' chunked lowering (`gshard_op.lowering`), every pass that
sizes loops (`memory-budget-mib`, where 0 means this default) and
`gshard_op.jit`'s default pipeline read the same default and the same check,
so a plan is predictable from the platform alone.
"""

from __future__ import annotations

import math

CPU_MEMORY_BUDGET_MIB = 64.0


def check(value, what: str = "memory_budget_mib", *, hint: str = "") -> float:
  """`value` as a float, or ValueError unless it is a finite number > 0."""
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not math.isfinite(value) or value <= 0):
    raise ValueError(f"{what} must be finite and > 0{hint}, got {value!r}")
  return float(value)


def default_mib(backend: str | None = None) -> float:
  """64 MiB on the CPU; on an accelerator 1/64 of its memory (256 MiB to 4 GiB)."""
  import jax
  device = jax.devices(backend)[0]
  if device.platform == "cpu":
    return CPU_MEMORY_BUDGET_MIB
  limit = (device.memory_stats() or {}).get("bytes_limit")
  if not limit:
    return 1024.0
  return float(min(4096.0, max(256.0, limit / 64 / 2**20)))


def check_option(value: float, what: str = "memory-budget-mib") -> None:
  """A pass option's budget: 0 (the platform's default) or what `check` takes."""
  if value != 0:
    check(value, what, hint=" (or 0: the platform's default)")


def resolve(value: float) -> float:
  """A pass option's budget in MiB: 0 is the platform's default."""
  return default_mib() if value == 0 else float(value)
