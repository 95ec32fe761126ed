"""The `jax.jit` inside `flax.nnx.jit`'s wrapper.

Why private: `gshard_op.nnx_jit` must run its pass pipeline between the
lowering and the compilation of the `jax.jit` that `nnx.jit` builds around its
pure function, and Flax has no hook there. Its wrapper keeps that `jax.jit` as
the attribute `jitted_fn` and calls only its `__call__`, `lower`, `trace` and
`eval_shape`, so a replacement that provides those four keeps `nnx.jit`'s
semantics (graph nodes in and out, in-place updates).
"""

from __future__ import annotations

from collections.abc import Callable

# The jax.jit methods nnx.jit's wrapper calls on `jitted_fn`.
USED_METHODS = ("__call__", "lower", "trace", "eval_shape")


def inner_jit(wrapped):
  """The `jax.jit` of `nnx.jit(fun)`'s pure function."""
  return wrapped.jitted_fn


def replace_inner_jit(wrapped, replace: Callable):
  """Makes `nnx.jit(fun)` call `replace(its jax.jit)` instead of its `jax.jit`;
  returns `wrapped`."""
  wrapped.jitted_fn = replace(wrapped.jitted_fn)
  return wrapped
