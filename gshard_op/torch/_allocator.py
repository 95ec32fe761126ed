"""One GPU, two runtimes: JAX's allocator beside torch's.

JAX reserves 75% of a GPU's memory when its backend starts, which would starve
torch in the same process. Imported before JAX's backend starts (the package
imports this module first), this sets `XLA_PYTHON_CLIENT_PREALLOCATE=false`
(JAX then allocates on demand), unless the user set one of JAX's allocator
variables; `JAX_ALLOCATOR` says what happened. Importing jax does not start its
backend; the first array or compilation does, and reads the variables then.
"""

from __future__ import annotations

import os
import warnings

import jax

from gshard_op._private import jax_backend

JAX_ALLOCATOR_VARIABLES = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_ALLOCATOR",
                           "XLA_PYTHON_CLIENT_MEM_FRACTION")


def _share_the_gpu_with_torch() -> str:
  """Lets torch and JAX share one GPU: JAX allocates on demand instead of
  reserving 75% of the GPU's memory when its backend starts. The user's own
  allocator settings win; once the backend has started nothing can change it,
  and a GPU backend started that way gets a warning. Returns what it did."""
  chosen = [f"{name}={os.environ[name]}" for name in JAX_ALLOCATOR_VARIABLES
            if name in os.environ]
  if chosen:
    return "left to the user's " + ", ".join(chosen)
  if jax_backend.backends_started():
    if any(d.platform != "cpu" for d in jax.devices()):
      warnings.warn(
          "gshard_op.torch was imported after JAX's GPU backend started: JAX keeps its "
          "default allocator, which reserves 75% of the GPU's memory, leaving little to "
          "torch. Import gshard_op.torch first, or set XLA_PYTHON_CLIENT_PREALLOCATE=false "
          "before JAX starts.", RuntimeWarning, stacklevel=2)
    return ("unchanged: JAX's backend had already started (to share a GPU, set "
            "XLA_PYTHON_CLIENT_PREALLOCATE=false before JAX starts)")
  os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  return "set XLA_PYTHON_CLIENT_PREALLOCATE=false"


# What importing gshard_op.torch did to JAX's GPU allocator, in words.
JAX_ALLOCATOR = _share_the_gpu_with_torch()
