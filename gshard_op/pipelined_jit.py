"""`gshard_op.jit` and `gshard_op.nnx_jit`: `jax.jit` / `nnx.jit` plus the gshard passes.

    step = gshard_op.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    step(x, embedding)                        # trace, lower, rewrite, compile: once per signature
    step.lower(x, embedding).as_text()        # the rewritten StableHLO

The function is traced with the primitives in `composite` mode
(`gshard_op.lowering`), so the lowered module holds the composites; the
pipeline then rewrites that module in place between JAX's lowering and its
compilation: `Lowered.compiler_ir("stablehlo")` is the live module that
`Lowered.compile()` compiles. There is no hook for this inside `jax.jit`
(which is why plain `jax.jit` gets the primitives' chunked lowering instead).

Caching is JAX's own: the trace (keyed on argument types and the trace context,
e.g. `jax_default_matmul_precision` or `jax_enable_x64`), the lowering (keyed
on the jaxpr) and the executable compiled from it. A module that has been
rewritten carries a `gshard.rewritten` attribute, so it is rewritten once.

Called with tracers, under `jax.jit`, `jax.grad`, `jax.vmap`, `jax.eval_shape`
or another `gshard_op.jit`, it traces through as `jax.jit` does and the
enclosing compilation decides the route.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable

import jax
from jaxlib.mlir import ir

from gshard_op import budget, passes
from gshard_op._private import jax_lowered
from gshard_op._private import nnx_jit as private_nnx_jit
from gshard_op.lowering import lowering
from gshard_op.passes.pipelines import default_pipeline

# Set on a module once the pipeline has rewritten it. Each Jitted traces a
# function of its own (nnx.jit: a JitFn of its own), so one lowering only ever
# meets one pipeline.
_REWRITTEN = "gshard.rewritten"


# Two threads calling one function with the same signature get the same module
# from JAX's cache: one rewrites it, the other waits and finds it marked.
_REWRITE_LOCK = threading.Lock()


def rewrite(lowered: jax.stages.Lowered, pipeline: str) -> bool:
  """Runs `pipeline` on `lowered`'s module unless that module was already
  rewritten (JAX hands back the same module for the same lowering); True if it ran."""
  module = lowered.compiler_ir("stablehlo").operation
  with _REWRITE_LOCK:
    if _REWRITTEN in module.attributes:
      return False
    passes.run_pipeline(module, pipeline)
    with module.context:
      module.attributes[_REWRITTEN] = ir.UnitAttr.get()
  return True


def target_pipeline(lowered: jax.stages.Lowered, memory_budget_mib: float | None = None) -> str:
  """The default pipeline for the target `lowered` was lowered for: its
  platform (not the host's default backend: compile-only TPU devices on a CPU
  host are a TPU target), that platform's budget unless one is given, and on a
  TPU its generation. A module lowered for several platforms at once gets no
  kernels (each is for one platform) and the smallest of their budgets."""
  platforms = jax_lowered.platforms(lowered) or (jax.export.default_export_platform(),)
  mib = budget.default_for_platforms(platforms) if memory_budget_mib is None else memory_budget_mib
  if len(platforms) > 1:
    return default_pipeline(mib, platform="cpu")
  platform, kind = platforms[0], None
  devices = jax_lowered.devices(lowered)
  if devices and platform == "tpu" and devices[0].platform == "tpu":
    kind = devices[0].device_kind
  return default_pipeline(mib, platform=platform, device_kind=kind)


class _Pipeline:
  """What a `Jitted` runs: a pipeline it was given, or the default pipeline of
  each lowering's target (`target_pipeline`)."""

  def __init__(self, pipeline: str | None, memory_budget_mib: float | None):
    if pipeline is not None and memory_budget_mib is not None:
      raise ValueError("give either pipeline= or memory_budget_mib= (which sizes the default "
                       "pipeline), not both: a pipeline's passes carry their own budgets")
    if memory_budget_mib is not None:
      budget.check(memory_budget_mib)
    self.follows_target = pipeline is None
    self.memory_budget_mib = memory_budget_mib
    # The host's default pipeline stands for the default until a lowering names its target.
    self.text = default_pipeline(memory_budget_mib) if pipeline is None else pipeline
    passes.parse_pipeline(self.text)  # fail early on a bad pipeline

  def for_lowering(self, lowered: jax.stages.Lowered) -> str:
    if not self.follows_target:
      return self.text
    return target_pipeline(lowered, self.memory_budget_mib)


class Lowered:
  """A `jax.stages.Lowered` whose module the pipeline has rewritten;
  `pipeline` is the one that ran (the target's, for the default)."""

  def __init__(self, lowered: jax.stages.Lowered, pipeline: str):
    self.rewritten_now = rewrite(lowered, pipeline)
    self._lowered = lowered
    self.pipeline = pipeline

  def __getattr__(self, name):  # as_text, compiler_ir, compile, cost_analysis, ...
    return getattr(self._lowered, name)


class Traced:
  """A `jax.stages.Traced` whose `lower()` runs the pipeline."""

  def __init__(self, traced: jax.stages.Traced, pipeline: _Pipeline):
    self._traced = traced
    self._pipeline = pipeline
    self.pipeline = pipeline.text

  def lower(self, *args, **kwargs) -> Lowered:
    lowered = self._traced.lower(*args, **kwargs)
    return Lowered(lowered, self._pipeline.for_lowering(lowered))

  def __getattr__(self, name):  # jaxpr, out_info, args_info, ...
    return getattr(self._traced, name)


class Jitted:
  """A `jax.jit`-compiled function whose lowered module the pipeline rewrites.

  Wraps an existing `jax.jit` object (`gshard_op.jit` makes one; `nnx_jit`
  takes `nnx.jit`'s). `static_argnums` / `static_argnames` are the ones that
  object was given, so the compiled executable is called with the dynamic
  arguments only.
  """

  def __init__(self, jitted, pipeline: _Pipeline, *, fun: Callable,
               static_argnums=None, static_argnames=None):
    # Name and docstring only: `fun.__dict__` may be another Jitted's state.
    functools.update_wrapper(self, fun, updated=())
    self._jitted = jitted
    self._pipeline = pipeline
    self.pipeline = pipeline.text  # the default's for the host; `lower()` tells the target's
    self._static_argnums, self._static_argnames = _static_arguments(
        fun, static_argnums, static_argnames)
    self._lowerings = 0

  def trace(self, *args, **kwargs) -> Traced:
    with lowering("composite"):
      return Traced(self._jitted.trace(*args, **kwargs), self._pipeline)

  def lower(self, *args, **kwargs) -> Lowered:
    with lowering("composite"):
      lowered = self._jitted.lower(*args, **kwargs)
    lowered = Lowered(lowered, self._pipeline.for_lowering(lowered))
    self._lowerings += lowered.rewritten_now
    return lowered

  def cache_size(self) -> int:
    """How many lowerings this function has rewritten (one per signature)."""
    return self._lowerings

  def eval_shape(self, *args, **kwargs):
    return self._jitted.eval_shape(*args, **kwargs)

  def __call__(self, *args, **kwargs):
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
      return self._jitted(*args, **kwargs)  # inside another transformation: trace through
    compiled = self.lower(*args, **kwargs).compile()
    return compiled(*self._dynamic(args), **{k: v for k, v in kwargs.items()
                                             if k not in self._static_argnames})

  def __get__(self, instance, owner=None):
    return self if instance is None else types.MethodType(self, instance)

  def _dynamic(self, args) -> list:
    static = {i % len(args) for i in self._static_argnums if -len(args) <= i < len(args)}
    return [a for i, a in enumerate(args) if i not in static]


def _as_tuple(value) -> tuple:
  if value is None:
    return ()
  return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _static_arguments(fun, argnums, argnames) -> tuple[tuple[int, ...], tuple[str, ...]]:
  """Static argnums and argnames, each completed from the other through `fun`'s
  signature as `jax.jit` does (positional-or-keyword parameters only)."""
  argnums, argnames = _as_tuple(argnums), _as_tuple(argnames)
  try:
    parameters = list(inspect.signature(fun).parameters.values())
  except (TypeError, ValueError):  # no signature: take them as given
    return argnums, argnames
  positional = [p.name for p in parameters
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
  if argnums and not argnames:
    argnames = tuple(positional[i] for i in argnums
                     if -len(positional) <= i < len(positional) and positional[i] in named)
  elif argnames and not argnums:
    argnums = tuple(positional.index(n) for n in argnames if n in positional)
  return argnums, argnames


def jit(fun: Callable | None = None, *, pipeline: str | None = None,
        memory_budget_mib: float | None = None, **jax_jit_kwargs) -> Jitted:
  """`jax.jit` that runs `pipeline` on the lowered StableHLO before XLA compiles it.

  Args:
    fun: the function; `gshard_op.jit(pipeline=...)` without it is a decorator.
    pipeline: pass pipeline text (`gshard-opt --list-passes`); default:
      `gshard_op.passes.pipelines.default_pipeline` for the platform (and TPU
      generation) each lowering targets, so that ahead-of-time compilation
      for compile-only TPU or GPU devices gets their kernels and budget.
    memory_budget_mib: MiB of `[tokens, classes]` buffers the default
      pipeline's loops may keep live. Not together with `pipeline`.
    **jax_jit_kwargs: passed to `jax.jit` (static_argnums, donate_argnums, ...).
  """
  if fun is None:
    return functools.partial(jit, pipeline=pipeline, memory_budget_mib=memory_budget_mib,
                             **jax_jit_kwargs)
  pipeline = _Pipeline(pipeline, memory_budget_mib)

  # JAX caches traces and lowerings per function, and the pipeline rewrites a
  # lowering in place: a function of our own keeps those apart from what
  # `jax.jit(fun)`, or a `gshard_op.jit(fun)` with another pipeline, gets.
  @functools.wraps(fun)
  def own(*args, **kwargs):
    return fun(*args, **kwargs)

  return Jitted(jax.jit(own, **jax_jit_kwargs), pipeline, fun=fun,
                static_argnums=jax_jit_kwargs.get("static_argnums"),
                static_argnames=jax_jit_kwargs.get("static_argnames"))


def nnx_jit(fun: Callable | None = None, *, pipeline: str | None = None,
            memory_budget_mib: float | None = None, **nnx_jit_kwargs):
  """`flax.nnx.jit` that runs `pipeline` on the lowered StableHLO before XLA.

  Same semantics as `nnx.jit` (graph nodes in and out, in-place updates of
  modules and `nnx.Optimizer`s): it is `nnx.jit`'s own wrapper, whose inner
  `jax.jit` is the one that lowers through the pipeline. A training step gets
  the fused forward-and-gradient sweep (three matmuls) this way.
  """
  if fun is None:
    return functools.partial(nnx_jit, pipeline=pipeline, memory_budget_mib=memory_budget_mib,
                             **nnx_jit_kwargs)
  from flax import nnx  # flax is needed only here

  pipeline = _Pipeline(pipeline, memory_budget_mib)
  # nnx.jit's wrapper calls its inner jax.jit's __call__, lower, trace and
  # eval_shape only: Jitted provides the four.
  return private_nnx_jit.replace_inner_jit(
      nnx.jit(fun, **nnx_jit_kwargs),
      lambda inner: Jitted(inner, pipeline, fun=fun,
                           static_argnums=nnx_jit_kwargs.get("static_argnums"),
                           static_argnames=nnx_jit_kwargs.get("static_argnames")))


__all__ = ["Jitted", "Lowered", "Traced", "jit", "nnx_jit", "rewrite"]
