"""Whether JAX's backends have started, asked without starting them.

Why private: `gshard_op.torch` sets JAX's GPU allocator variables on import,
which only works before JAX's backend starts (it reads them once, then), and
warns when it is too late. JAX has no public way to ask without starting the
backend: `jax.devices()` starts it. `jax._src.xla_bridge.backends_are_initialized`
answers; where it is missing we answer False, which is harmless: a variable set
after the start is simply not read. `gshard-run` (`passes/run.py`)
asks the same before it sets `jax_num_cpu_devices`, which JAX reads only at
the start too.
"""

from __future__ import annotations


def backends_started() -> bool:
  try:
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return False
