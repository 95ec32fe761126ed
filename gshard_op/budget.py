"""The memory budget: one default per target platform and one check, for every user.

A budget is the MiB of float32 `[tokens, classes]` buffers a loop body may keep
live. The primitives' chunked lowering (`gshard_op.lowering`), every pass that
sizes loops (`memory-budget-mib`, where 0 means this default) and
`gshard_op.jit`'s default pipeline read the same default and the same check,
so a plan is predictable from the platform alone.

The default follows the platform the program is compiled **for** (the
lowering's platforms, or the devices of the program's shardings), not the
host's default backend: a TPU program compiled ahead of time on a CPU host gets
the TPU budget.

Why 128 MiB on an accelerator, whatever its memory (16 GiB on a TPU v5e, 80 on
an H100): the budget buys GEMM size, and GEMMs stop getting faster long before
it runs out. Four live float32 `[T, C]` buffers of 32 MiB each are a
`[8192, 1024]` chunk; its logit matmul at Gemma's width (M = 2304) is
`2 * 8192 * 1024 * 2304` = 39 GFLOP, about 50 us of an H100's bf16 tensor cores
and 200 times a loop iteration's overhead, so a larger chunk buys at most a
few percent while its buffers grow linearly. A fraction of the device's memory
(the previous default: 1/64, 1.3 GiB on an H100) only made the temp memory
grow with the card. The CPU keeps 64 MiB: its GEMMs saturate at far smaller
sizes and the benchmarks of DESIGN.md section 5 were measured there with it.
"""

from __future__ import annotations

import math

CPU_MEMORY_BUDGET_MIB = 64.0
ACCELERATOR_MEMORY_BUDGET_MIB = 128.0


def check(value, what: str = "memory_budget_mib", *, hint: str = "") -> float:
  """`value` as a float, or ValueError unless it is a finite number > 0."""
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not math.isfinite(value) or value <= 0):
    raise ValueError(f"{what} must be finite and > 0{hint}, got {value!r}")
  return float(value)


def default_mib(platform: str | None = None) -> float:
  """The default budget for programs compiled for `platform` (a `jax.export`
  platform name: "cpu", "cuda", "rocm", "tpu"; None: the default backend's).
  64 MiB on the CPU, `ACCELERATOR_MEMORY_BUDGET_MIB` on an accelerator."""
  if platform is None:
    import jax
    platform = jax.export.default_export_platform()
  return CPU_MEMORY_BUDGET_MIB if platform == "cpu" else ACCELERATOR_MEMORY_BUDGET_MIB


def default_for_platforms(platforms) -> float:
  """The default for a program lowered for several platforms at once (a
  multi-platform `jax.export`): the smallest of theirs."""
  return min(default_mib(p) for p in platforms) if platforms else default_mib()


def check_option(value: float, what: str = "memory-budget-mib") -> None:
  """A pass option's budget: 0 (the platform's default) or what `check` takes."""
  if value != 0:
    check(value, what, hint=" (or 0: the platform's default)")


def resolve(value: float, platform: str | None = None) -> float:
  """A pass option's budget in MiB: 0 is `platform`'s default."""
  return default_mib(platform) if value == 0 else float(value)
