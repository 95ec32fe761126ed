"""What a `jax.stages.Lowered` is compiled for: its platforms and devices.

Why private: `gshard_op.jit` picks its default pipeline (Pallas kernels on a
GPU or TPU, each chip's on-chip memory, the memory budget) for the target the
program was lowered for, which ahead-of-time users name through their
shardings (compile-only TPU or GPU devices on a CPU host) or through
`Traced.lower(lowering_platforms=...)`. `jax.stages.Lowered` has no public
field for it, and the host's default backend is the wrong answer there. Its
`_lowering` (a `pxla.MeshComputation`) keeps both: `_platforms`, the
platforms the module was lowered for, and `_device_list`, the devices of its
device assignment.
"""

from __future__ import annotations


def platforms(lowered) -> tuple[str, ...]:
  """The `jax.export` platform names `lowered` was lowered for ("cpu", "cuda",
  "rocm", "tpu"); () when JAX no longer says."""
  return tuple(getattr(getattr(lowered, "_lowering", None), "_platforms", None) or ())


def devices(lowered) -> tuple:
  """The devices of `lowered`'s device assignment; () when JAX no longer says."""
  return tuple(getattr(getattr(lowered, "_lowering", None), "_device_list", None) or ())


def is_compile_only(device) -> bool:
  """Whether `device` is one of `jax.experimental.topologies`' compile-only
  devices (ahead-of-time compilation for hardware this host does not have):
  their client is jaxlib's `CompileOnlyPyClient`."""
  return type(getattr(device, "client", None)).__name__ == "CompileOnlyPyClient"
