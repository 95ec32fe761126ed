"""Configuration options of gshard_op's own, declared through `jax._src.config`.

Why private: JAX has no public way to declare a configuration option, and an
option that is part of the trace context is the only switch that `jax.jit`'s
caches key on: `gshard_op.lowering`'s route and budget must retrace a jitted
function when they change, as `jax_default_matmul_precision` does. The two
constructors here are JAX's own (`enum_state`, `State`); `jax.config.update`
and `jax.config.<name>` then work on the options as on JAX's.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax._src import config as _config

# What every option here is: part of jax.jit's cache key and of the trace
# context, so that a change retraces.
_TRACED = dict(include_in_jit_key=True, include_in_trace_context=True)


def traced_enum(name: str, values: tuple[str, ...], default: str, help: str):
  """A string option among `values`, set with `jax.config.update(name, ...)` or
  used as a context manager (`state(value)`); `.value` is the one in force."""
  return _config.enum_state(name, values, default, help=help, **_TRACED)


def traced_float(name: str, default: float | None, help: str,
                 parser: Callable[[object], float | None]):
  """A float option (None allowed) whose values go through `parser` (which
  checks them and may raise), registered with `jax.config` so that
  `jax.config.update(name, value)` sets it; `state(value)` is a context
  manager, `.value` the one in force."""
  state = _config.State(name, default, help, parser=parser, **_TRACED)
  jax.config.add_option(name, state, float, meta_args=[], meta_kwargs={"help": help})
  return state
