"""Pipelines: parsing MLIR's textual syntax and running it on a module.

`pass-a{opt=1 other=true},pass-b`, optionally wrapped in `builtin.module(...)`,
with pipelines nested as mlir-opt nests them (`func.func(canonicalize)`,
`builtin.module(gshard-inline,func.func(cse))`; the syntax: `pipeline_syntax.py`).
Names in `REGISTRY` are gshard passes, which run on the top-level module; other
names are handed to MLIR's own registry (`canonicalize`, `cse`, `symbol-dce`,
...). Every pass is followed by the verifier, and runs in a pass manager of its
own so that `Instrumentation` acts between any two passes.
"""

from __future__ import annotations

import functools
import re
import traceback

from jaxlib.mlir import ir, passmanager

from gshard_op.passes import options, pipeline_syntax
from gshard_op.passes.errors import PassError, PipelineError, RewriteError
from gshard_op.passes.instrumentation import Instrumentation
from gshard_op.passes.module_pass import ModulePass
from gshard_op.passes.plugins import load_entry_point_plugins
from gshard_op.passes.registry import REGISTRY


def make_pass(name: str, opts: dict[str, str]) -> ModulePass:
  """Instantiates registered pass `name` from string options (typed checked)."""
  return options.make_pass(REGISTRY[name], opts)


def parse_pipeline(text: str) -> list[ModulePass | str]:
  """Parses `a{k=v k2=v2},b`, optionally wrapped in `builtin.module(...)` (the
  module the pipeline runs on), with nested pipelines as mlir-opt reads them.

  Registered gshard passes become `ModulePass`es (importing only those); they
  run on the top-level module only, so one nested under an anchor is an error
  naming the pass and the anchor. Other names are kept as text for MLIR's
  registry (checked here, with their anchors). A nested pipeline becomes one
  element per pass, each wrapped in its anchors: `func.func(canonicalize,cse)`
  gives `func.func(canonicalize)` then `func.func(cse)`, which leaves the same
  module (a pass nested on an op changes only that op) and lets
  `Instrumentation` print and time each pass.
  """
  load_entry_point_plugins()
  tree = pipeline_syntax.parse(text)
  if len(tree) == 1 and tree[0].name == "builtin.module" and tree[0].nested is not None:
    tree = list(tree[0].nested)  # the root: the module itself, not modules nested in it
  elements: list[ModulePass | str] = []
  for element in tree:
    elements += _lower(element, ())
  if not elements:
    raise PipelineError("empty pipeline")
  return elements


def _wrap(text: str, anchors: tuple[str, ...]) -> str:
  for anchor in reversed(anchors):
    text = f"{anchor}({text})"
  return text


def _lower(element: pipeline_syntax.Element, anchors: tuple[str, ...]) -> list[ModulePass | str]:
  """The elements `run_pipeline` runs for `element`, nested in `anchors`."""
  if element.nested is not None:
    _check_anchor(element, anchors)
    inner = anchors + (element.name,)
    return [e for child in element.nested for e in _lower(child, inner)]
  name = element.name
  if name in REGISTRY:
    if anchors:
      raise PipelineError(
          f"gshard pass '{name}' cannot run nested under '{anchors[-1]}' (in "
          f"'{_wrap(name, anchors)}'): gshard passes are module passes that rewrite the "
          f"top-level module as a whole (a composite calls other functions of it); put it "
          f"at the top level, e.g. 'builtin.module({name},func.func(canonicalize))'")
    given = {}
    for item in (element.options or "").split():
      key, eq, value = item.partition("=")
      if not eq:
        raise PipelineError(f"pass '{name}': option '{item}' needs a value (key=value)")
      given[key] = value
    return [make_pass(name, given)]
  wrapped = _wrap(element.text.strip(), anchors)
  _check_mlir_pass(wrapped, name, anchors)
  return [wrapped]


def _check_anchor(element: pipeline_syntax.Element, anchors: tuple[str, ...]) -> None:
  """Raises PipelineError unless `element.name` is an operation MLIR can nest on."""
  if element.name == "any" or _context().is_registered_operation(element.name):
    return
  raise PipelineError(
      f"unknown anchor '{element.name}' in '{_wrap(element.text.strip(), anchors)}': not an "
      "operation registered in jax's MLIR context (a nested pipeline names the ops it runs "
      "on: builtin.module, func.func, ...; or 'any')")


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


def _check_mlir_pass(element: str, name: str | None = None, anchors: tuple[str, ...] = ()) -> None:
  """Raises PipelineError unless MLIR's registry knows `element` (with its
  options; `name` nested in `anchors`, as `element` spells it)."""
  def accepts(text):
    try:
      passmanager.PassManager.parse(f"builtin.module({text})", context=_context())
      return None
    except ValueError as e:
      return str(e).strip()

  error = accepts(element)
  if error is None:
    return
  name = name or element.split("{", 1)[0]
  if _wrap(name, anchors) != element and accepts(_wrap(name, anchors)) is None:
    raise PipelineError(f"MLIR pass '{name}' rejected its options in '{element}': {error}")
  if anchors and (accepts(name) is None or accepts(f"func.func({name})") is None):
    raise PipelineError(f"MLIR pass '{name}' cannot run nested as in '{element}': {error}")
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
    label = _label(element) if isinstance(element, str) else element.name
    with inst.around(position, label, module, PassError):
      _run_element(module, element, inst.verify_each)
  if not inst.verify_each:
    try:
      module.operation.verify()
    except ir.MLIRError as e:
      raise PassError("the pipeline left IR that does not verify (the verifier did not run "
                      f"after each pass; run it again with it to find the pass): {e}") from e


def _label(element: str) -> str:
  """The MLIR pass an element runs: `canonicalize` of `func.func(canonicalize{...})`."""
  while m := re.fullmatch(r"[A-Za-z0-9_.\-]+\s*\((.*)\)", element.strip(), re.S):
    element = m.group(1)
  return element.split("{", 1)[0].strip()


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
