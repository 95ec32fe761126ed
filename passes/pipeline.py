"""Pipelines: parsing MLIR's textual syntax and running it on a module.

`pass-a{opt=1 other=true},pass-b`, optionally wrapped in `builtin.module(...)`.
Names in `REGISTRY` are gshard passes; other names are handed to MLIR's own
registry (`canonicalize`, `cse`, `symbol-dce`, ...). Every pass is followed by
the verifier, and runs in a pass manager of its own so that `Instrumentation`
acts between any two passes.
"""

from __future__ import annotations

import functools
import re
import traceback

from jaxlib.mlir import ir, passmanager

from gshard_op.passes import options
from gshard_op.passes.errors import PassError, PipelineError, RewriteError
from gshard_op.passes.instrumentation import Instrumentation
from gshard_op.passes.module_pass import ModulePass
from gshard_op.passes.plugins import load_entry_point_plugins
from gshard_op.passes.registry import REGISTRY


def make_pass(name: str, opts: dict[str, str]) -> ModulePass:
  """Instantiates registered pass `name` from string options (typed checked)."""
  return options.make_pass(REGISTRY[name], opts)


_ELEMENT = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(\{([^{}]*)\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[ModulePass | str]:
  """Parses `a{k=v k2=v2},b`. Registered gshard passes become `ModulePass`es
  (importing only those); other names are kept as text for MLIR's registry
  (checked here)."""
  load_entry_point_plugins()
  body = text.strip()
  wrapped = re.fullmatch(r"builtin\.module\((.*)\)", body, re.S)
  if wrapped:
    body = wrapped.group(1).strip()
  elements: list[ModulePass | str] = []
  pos = 0
  while pos < len(body):
    m = _ELEMENT.match(body, pos)
    if not m or m.end() == pos:
      raise PipelineError(f"cannot parse pipeline at: '{body[pos:]}'")
    name, _, opts = m.group(1), m.group(2), m.group(3)
    if name in REGISTRY:
      given = {}
      for item in (opts or "").split():
        key, eq, value = item.partition("=")
        if not eq:
          raise PipelineError(f"pass '{name}': option '{item}' needs a value (key=value)")
        given[key] = value
      elements.append(make_pass(name, given))
    else:
      element = m.group(0).strip().rstrip(",").strip()
      _check_mlir_pass(element)
      elements.append(element)
    pos = m.end()
  if not elements:
    raise PipelineError("empty pipeline")
  return elements


def make_context(allow_unregistered_dialects: bool = False) -> ir.Context:
  """jax's MLIR context: every dialect a lowered jax program uses."""
  from jax.interpreters import mlir  # jax is heavy: import it only when needed
  context = mlir.make_ir_context()
  context.allow_unregistered_dialects = allow_unregistered_dialects
  return context


@functools.cache
def _context() -> ir.Context:
  return make_context()


def check_pass_name(name: str) -> None:
  """Raises `PipelineError` unless `name` is a registered gshard pass or a pass
  of MLIR's registry (for flags that name passes outside a pipeline)."""
  load_entry_point_plugins()
  if name not in REGISTRY:
    _check_mlir_pass(name)


def _check_mlir_pass(element: str) -> None:
  """Raises PipelineError unless MLIR's registry knows `element` (with its options)."""
  def accepts(text):
    try:
      passmanager.PassManager.parse(f"builtin.module({text})", context=_context())
      return None
    except ValueError as e:
      return str(e).strip()

  error = accepts(element)
  if error is None:
    return
  name = element.split("{", 1)[0]
  if name != element and accepts(name) is None:
    raise PipelineError(f"MLIR pass '{name}' rejected its options in '{element}': {error}")
  known = ", ".join(sorted(REGISTRY))
  raise PipelineError(f"unknown pass '{name}' (gshard passes: {known}; "
                      f"or an MLIR pass registered in jaxlib)")


def run_pipeline(module: ir.Module, pipeline: str | list[ModulePass | str],
                 instrumentation: Instrumentation | None = None) -> None:
  """Runs `pipeline` on `module` in place, verifying after every pass.

  Each element runs in a pass manager of its own, so that `instrumentation`
  (printing, timing, the verifier switch) acts between any two passes.
  Raises `PipelineError` for a pipeline that does not parse and `PassError`
  (naming the pass and showing the offending op) when a pass fails; the
  `PassError` chains the original exception (`raise ... from`), so a bug in
  a pass keeps its full traceback.
  """
  elements = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
  inst = instrumentation or Instrumentation()
  for position, element in enumerate(elements):
    label = element.split("{", 1)[0] if isinstance(element, str) else element.name
    with inst.around(position, label, module, PassError):
      _run_element(module, element, inst.verify_each)
  if not inst.verify_each:
    try:
      module.operation.verify()
    except ir.MLIRError as e:
      raise PassError("the pipeline left IR that does not verify (the verifier did not run "
                      f"after each pass; run it again with it to find the pass): {e}") from e


def _run_element(module: ir.Module, element: ModulePass | str, verify: bool) -> None:
  pm = passmanager.PassManager("builtin.module", context=module.context)
  pm.enable_verifier(verify)
  failure: list[tuple[str, BaseException]] = []
  if isinstance(element, str):
    pm.add(element)  # checked by parse_pipeline
  else:
    pm.add(_as_callback(element, failure, verify), name=element.name, argument=element.name)
  try:
    pm.run(module.operation)
  except Exception as e:  # jaxlib raises MLIRError; keep our own message first
    if failure:
      raise PassError(failure[0][0]) from failure[0][1]
    raise PassError(str(e)) from e
  if failure:
    raise PassError(failure[0][0]) from failure[0][1]


def _as_callback(p: ModulePass, failure: list[tuple[str, BaseException]], verify: bool):
  def callback(op, pass_):
    with op.context, ir.Location.unknown():
      try:
        p.run(op)
      except RewriteError as e:
        failure.append((f"pass '{p.name}' failed: {e}\n  at {_describe(e.op)}", e))
      except Exception as e:  # a bug in the pass: report it against the pass
        where = "".join(traceback.format_exception(e)[-3:-1]).rstrip()
        failure.append((f"pass '{p.name}' raised {type(e).__name__}: {e}\n{where}", e))
      else:
        if verify:
          try:
            op.verify()
          except ir.MLIRError as e:
            failure.append((f"pass '{p.name}' left IR that does not verify: {e}", e))
    if failure:
      pass_.signal_pass_failure()
  return callback


def _describe(op: ir.Operation) -> str:
  text = op.get_asm(large_elements_limit=16)
  lines = text.splitlines()
  if len(lines) > 12:
    text = "\n".join(lines[:12] + ["..."])
  return f"{op.location}:\n{text}"
