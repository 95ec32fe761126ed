"""The pass framework: named passes with typed options, a registry, a pipeline.

A pass is a dataclass subclass of `ModulePass` whose class attribute `name` is
its pipeline name and whose fields are its options; `run(module_op)` rewrites
the `builtin.module` in place. `@register` adds it to `REGISTRY`, which serves
the Python API, `gshard_op.jit` and `gshard-opt` alike.

Pipelines use MLIR's textual syntax: `pass-a{opt=1 other=true},pass-b`, optionally
wrapped in `builtin.module(...)`. Names not in `REGISTRY` are handed to MLIR's
own registry (`canonicalize`, `cse`, `symbol-dce`, ...). Every pass is followed
by the verifier.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import traceback
import typing
from typing import ClassVar

from jaxlib.mlir import ir, passmanager


class PipelineError(ValueError):
  """A pipeline that does not parse: unknown pass or option, bad value."""


class RewriteError(Exception):
  """Raised by a pass about one operation it cannot (or must not) rewrite."""

  def __init__(self, op: ir.Operation | ir.OpView, message: str):
    super().__init__(message)
    self.op = op.operation if isinstance(op, ir.OpView) else op


class PassError(RuntimeError):
  """A pass failed; the message names the pass and shows the offending op."""


@dataclasses.dataclass
class ModulePass:
  """Base of every gshard pass; subclasses are dataclasses of their options."""

  name: ClassVar[str] = ""
  summary: ClassVar[str] = ""

  def run(self, module: ir.Operation) -> None:
    raise NotImplementedError

  def pipeline_text(self) -> str:
    """The pass as pipeline text, with every option spelled out."""
    opts = " ".join(f"{_option_name(f.name)}={_format(getattr(self, f.name))}"
                    for f in dataclasses.fields(self))
    return f"{self.name}{{{opts}}}" if opts else self.name


REGISTRY: dict[str, type[ModulePass]] = {}


def register(cls: type[ModulePass]) -> type[ModulePass]:
  if not cls.name or cls.name in REGISTRY:
    raise ValueError(f"pass {cls.__name__} needs a unique name, got {cls.name!r}")
  if "__dataclass_fields__" not in cls.__dict__:  # options are the dataclass fields
    cls = dataclasses.dataclass(cls)
  REGISTRY[cls.name] = cls
  return cls


def _option_name(field: str) -> str:
  return field.replace("_", "-")


def _format(value) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


def _convert(pass_name: str, option: str, annotation, text: str):
  kind = annotation if isinstance(annotation, type) else eval(annotation, vars(typing))  # noqa: S307
  try:
    if kind is bool:
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    return kind(text)
  except ValueError:
    raise PipelineError(f"pass '{pass_name}': option '{option}' expects "
                        f"{kind.__name__}, got '{text}'") from None


def options_help(cls: type[ModulePass]) -> list[str]:
  """`name=default  (type)` for each option of a pass."""
  return [f"{_option_name(f.name)}={_format(f.default)}  ({f.type if isinstance(f.type, str) else f.type.__name__})"
          for f in dataclasses.fields(cls)]


def make_pass(name: str, options: dict[str, str]) -> ModulePass:
  """Instantiates registered pass `name` from string options (typed checked)."""
  cls = REGISTRY[name]
  fields = {_option_name(f.name): f for f in dataclasses.fields(cls)}
  kwargs = {}
  for option, text in options.items():
    if option not in fields:
      known = ", ".join(fields) or "none"
      raise PipelineError(f"pass '{name}' has no option '{option}' (options: {known})")
    f = fields[option]
    kwargs[f.name] = _convert(name, option, f.type, text)
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:
    raise PipelineError(f"pass '{name}': {e}") from None


_ELEMENT = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(\{([^{}]*)\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[ModulePass | str]:
  """Parses `a{k=v k2=v2},b`. Registered gshard passes become `ModulePass`es;
  other names are kept as text for MLIR's registry (checked when run)."""
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
      options = {}
      for item in (opts or "").split():
        key, eq, value = item.partition("=")
        if not eq:
          raise PipelineError(f"pass '{name}': option '{item}' needs a value (key=value)")
        options[key] = value
      elements.append(make_pass(name, options))
    else:
      element = m.group(0).strip().rstrip(",").strip()
      _check_mlir_pass(element)
      elements.append(element)
    pos = m.end()
  if not elements:
    raise PipelineError("empty pipeline")
  return elements


@functools.cache
def _context() -> ir.Context:
  from jax._src.interpreters import mlir  # jax's context: every dialect jax emits
  return mlir.make_ir_context()


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


def _describe(op: ir.Operation) -> str:
  text = op.get_asm(large_elements_limit=16)
  lines = text.splitlines()
  if len(lines) > 12:
    text = "\n".join(lines[:12] + ["..."])
  return f"{op.location}:\n{text}"


def run_pipeline(module: ir.Module, pipeline: str | list[ModulePass | str]) -> None:
  """Runs `pipeline` on `module` in place, verifying after every pass.

  Raises `PipelineError` for a pipeline that does not parse and `PassError`
  (naming the pass and showing the offending op) when a pass fails.
  """
  elements = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
  pm = passmanager.PassManager("builtin.module", context=module.context)
  pm.enable_verifier(True)
  failure: list[str] = []
  for element in elements:
    if isinstance(element, str):
      pm.add(element)  # checked by parse_pipeline
    else:
      pm.add(_as_callback(element, failure), name=element.name, argument=element.name)
  try:
    pm.run(module.operation)
  except Exception as e:  # jaxlib raises MLIRError; keep our own message first
    detail = failure[0] if failure else str(e)
    raise PassError(detail) from None
  if failure:
    raise PassError(failure[0])


def _as_callback(p: ModulePass, failure: list[str]):
  def callback(op, pass_):
    try:
      with op.context, ir.Location.unknown():
        p.run(op)
        op.verify()
    except ir.MLIRError as e:
      failure.append(f"pass '{p.name}' left IR that does not verify: {e}")
      pass_.signal_pass_failure()
    except RewriteError as e:
      failure.append(f"pass '{p.name}' failed: {e}\n  at {_describe(e.op)}")
      pass_.signal_pass_failure()
    except Exception as e:  # a bug in the pass: report it against the pass
      where = "".join(traceback.format_exception(e)[-3:-1]).rstrip()
      failure.append(f"pass '{p.name}' raised {type(e).__name__}: {e}\n{where}")
      pass_.signal_pass_failure()
  return callback


def walk(op: ir.Operation, predicate) -> list[ir.Operation]:
  """Every operation under `op` (pre-order) for which `predicate(op)` holds."""
  found = []

  def visit(o):
    if predicate(o):
      found.append(o.operation if isinstance(o, ir.OpView) else o)
    return ir.WalkResult.ADVANCE

  op.walk(visit)
  return found
