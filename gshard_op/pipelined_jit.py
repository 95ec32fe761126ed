"""`gshard_op.jit`: `jax.jit` that runs the gshard passes before XLA compiles.

    step = gshard_op.jit(train_step, pipeline="gshard-chunk-softmax{vocab-chunk=4096}")
    step(params, batch)                # lower, rewrite, compile once per signature
    step.lower(params, batch).as_text()   # the rewritten StableHLO

The hook is JAX's own: `jax.jit(f).lower(...)` holds the StableHLO module that
`.compile()` will compile, and the pipeline rewrites it in place in between.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

import jax
from jax._src import api_util

import passes
from passes.pipelines import default_pipeline


class Lowered:
  """A `jax.stages.Lowered` whose module the pipeline has rewritten."""

  def __init__(self, lowered: jax.stages.Lowered, pipeline: str):
    self._lowered = lowered
    self.pipeline = pipeline

  def as_text(self, *args, **kwargs) -> str:
    return self._lowered.as_text(*args, **kwargs)

  def compiler_ir(self, dialect: str = "stablehlo"):
    return self._lowered.compiler_ir(dialect)

  def compile(self, *args, **kwargs) -> jax.stages.Compiled:
    return self._lowered.compile(*args, **kwargs)

  def __getattr__(self, name):  # in_tree, out_info, cost_analysis, ...
    return getattr(self._lowered, name)


class Jitted:
  """The callable `gshard_op.jit` returns; see the module docstring."""

  def __init__(self, fun: Callable, pipeline: str, jit_kwargs: dict[str, Any]):
    # JAX caches the lowering of a function, and the pipeline rewrites the
    # lowered module in place: a wrapper of our own keeps that rewritten module
    # out of what `jax.jit(fun)` (or another pipeline) would get back.
    @functools.wraps(fun)
    def own(*args, **kwargs):
      return fun(*args, **kwargs)

    self._jitted = jax.jit(own, **jit_kwargs)
    self._static_argnums, self._static_argnames = _static_arguments(fun, jit_kwargs)
    self.pipeline = pipeline
    self._cache: dict[Any, jax.stages.Compiled] = {}
    self._lock = threading.Lock()
    functools.update_wrapper(self, fun)

  def lower(self, *args, **kwargs) -> Lowered:
    lowered = self._jitted.lower(*args, **kwargs)
    passes.run_pipeline(lowered.compiler_ir("stablehlo"), self.pipeline)
    return Lowered(lowered, self.pipeline)

  def _signature(self, args, kwargs):
    static = tuple(a for i, a in enumerate(args) if i in self._static_argnums)
    static_kw = tuple(sorted((k, v) for k, v in kwargs.items() if k in self._static_argnames))
    dynamic = ([a for i, a in enumerate(args) if i not in self._static_argnums],
               {k: v for k, v in kwargs.items() if k not in self._static_argnames})
    leaves, tree = jax.tree.flatten(dynamic)
    return (static, static_kw, tree, tuple(_leaf_key(x) for x in leaves)), dynamic

  def __call__(self, *args, **kwargs):
    key, (dyn_args, dyn_kwargs) = self._signature(args, kwargs)
    compiled = self._cache.get(key)
    if compiled is None:
      with self._lock:
        compiled = self._cache.get(key)
        if compiled is None:
          compiled = self.lower(*args, **kwargs).compile()
          self._cache[key] = compiled
    return compiled(*dyn_args, **dyn_kwargs)

  def cache_size(self) -> int:
    return len(self._cache)


def _leaf_key(x):
  aval = jax.typeof(x)
  # Placement matters only for arrays committed to devices (device_put); an
  # uncommitted jax.Array goes where a NumPy array would.
  sharding = x.sharding if isinstance(x, jax.Array) and x.committed else None
  return (aval, getattr(aval, "weak_type", False), sharding)


def _static_arguments(fun, jit_kwargs) -> tuple[tuple[int, ...], tuple[str, ...]]:
  """Static argnums and argnames, each inferred from the other as `jax.jit` does."""
  argnums, argnames = jit_kwargs.get("static_argnums"), jit_kwargs.get("static_argnames")
  try:
    signature = inspect.signature(fun)
  except (TypeError, ValueError):  # no signature: take them as given
    as_tuple = lambda v: () if v is None else tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return as_tuple(argnums), as_tuple(argnames)
  return api_util.infer_argnums_and_argnames(signature, argnums, argnames)


def jit(fun: Callable | None = None, *, pipeline: str | None = None,
        memory_budget_mib: float | None = None, **jax_jit_kwargs):
  """Like `jax.jit`, running `pipeline` on the lowered StableHLO before XLA.

  Args:
    fun: the function; `gshard_op.jit(pipeline=...)` without it is a decorator.
    pipeline: pass pipeline text (see `gshard-opt --list-passes`); default:
      `passes.pipelines.default_pipeline(memory_budget_mib)`.
    memory_budget_mib: MiB of `[tokens, classes]` buffers the rewritten loops
      may keep live; default `passes.pipelines.default_memory_budget_mib()`.
      Ignored when `pipeline` is given (its passes carry their own budgets).
    **jax_jit_kwargs: passed to `jax.jit` (static_argnums, donate_argnums, ...).
  """
  if fun is None:
    return functools.partial(jit, pipeline=pipeline, memory_budget_mib=memory_budget_mib,
                             **jax_jit_kwargs)
  if pipeline is None:
    pipeline = default_pipeline(memory_budget_mib)
  passes.parse_pipeline(pipeline)  # fail early on a bad pipeline
  return Jitted(fun, pipeline, jax_jit_kwargs)
