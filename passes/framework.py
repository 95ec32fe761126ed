"""The pass framework: named passes with typed options, a registry, a pipeline.

A pass is a dataclass subclass of `ModulePass` whose class attribute `name` is
its pipeline name and whose fields are its options; `run(module_op)` rewrites
the `builtin.module` in place. `@register` adds it to `REGISTRY`, which serves
the Python API, `gshard_op.jit` and `gshard-opt` alike.

Pipelines use MLIR's textual syntax: `pass-a{opt=1 other=true},pass-b`, optionally
wrapped in `builtin.module(...)`. Names not in `REGISTRY` are handed to MLIR's
own registry (`canonicalize`, `cse`, `symbol-dce`, ...). Every pass is followed
by the verifier.

`Instrumentation` does what `mlir-opt`'s debugging flags do, for the Python API
and `gshard-opt` alike: print the IR before or after passes, time each pass,
turn the per-pass verifier off. A pass that leaves a composite as it is says why
in one line with `ModulePass.decline`; `reporting_declines` routes those lines
(`gshard-opt` prints them, `--quiet` drops them). Passes from outside the package join `REGISTRY`
through `load_pass_plugin(path)` (a Python file that registers them) or the
`gshard_op.passes` entry-point group of an installed distribution
(`load_entry_point_plugins`, which `parse_pipeline` calls once).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import time
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from typing import ClassVar, TextIO

from jaxlib.mlir import ir, passmanager

log = logging.getLogger("gshard.passes")


class PipelineError(ValueError):
  """A pipeline that does not parse: unknown pass or option, bad value."""


class RewriteError(Exception):
  """Raised by a pass about one operation it cannot (or must not) rewrite."""

  def __init__(self, op: ir.Operation | ir.OpView, message: str):
    super().__init__(message)
    self.op = op.operation if isinstance(op, ir.OpView) else op


class PassError(RuntimeError):
  """A pass failed; the message names the pass and shows the offending op.

  Its `__cause__` is the original exception: a bug in a pass keeps its traceback.
  """


class PluginError(Exception):
  """A pass plugin that cannot be loaded: it does not import, registers no
  pass, or registers a name that is already taken."""


@dataclasses.dataclass
class ModulePass:
  """Base of every gshard pass; subclasses are dataclasses of their options."""

  name: ClassVar[str] = ""
  summary: ClassVar[str] = ""

  def run(self, module: ir.Operation) -> None:
    raise NotImplementedError

  def decline(self, op: ir.Operation | ir.OpView, why: str, *, action: str = "rewritten",
              left_to: str = "later passes", warn: bool = False) -> str:
    """Says in one line why this pass leaves the composite `op` as it is, and
    returns the line: `<pass>: <composite> at <location> not <action> (<why>);
    left to <left_to>`.

    The line goes where `reporting_declines` sends it (`gshard-opt`: stderr,
    unless `--quiet`); elsewhere to the `gshard.passes` logger at WARNING,
    which Python prints by default, or with `warn` as a `UserWarning` (logged
    at INFO then, so that it shows once).
    """
    line = (f"{self.name}: {_composite_name(op)} at {op.location} not {action} ({why}); "
            f"left to {left_to}")
    sink = _decline_sink.get()
    if sink is not _DEFAULT_SINK:
      if sink is not None:
        sink(line)
    elif warn:
      warnings.warn(line, UserWarning, stacklevel=2)
      log.info("%s", line)
    else:
      log.warning("%s", line)
    return line

  def pipeline_text(self) -> str:
    """The pass as pipeline text, with every option spelled out."""
    opts = " ".join(f"{_option_name(f.name)}={_format(getattr(self, f.name))}"
                    for f in dataclasses.fields(self))
    return f"{self.name}{{{opts}}}" if opts else self.name


REGISTRY: dict[str, type[ModulePass]] = {}


def register(cls: type[ModulePass]) -> type[ModulePass]:
  """Adds `cls` to `REGISTRY` under `cls.name` (made a dataclass if it is not)."""
  if not cls.name:
    raise ValueError(f"pass {cls.__name__} needs a unique name, got {cls.name!r}")
  if cls.name in REGISTRY:
    owner = REGISTRY[cls.name]
    raise ValueError(f"pass {cls.__module__}.{cls.__qualname__} needs a unique name, got "
                     f"{cls.name!r}, which {owner.__module__}.{owner.__qualname__} "
                     "registered already")
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
  """`name=default  (type)` for each option of a pass, then its note: the
  field's `metadata["help"]` if it has one, else `0: automatic` for a numeric
  option whose default is 0 (the convention: a size or budget the pass
  chooses)."""
  lines = []
  for f in dataclasses.fields(cls):
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    note = f.metadata.get("help")
    if (note is None and kind in ("int", "float") and f.default == 0
        and not isinstance(f.default, bool)):
      note = "0: automatic"
    lines.append(f"{_option_name(f.name)}={_format(f.default)}  ({kind})"
                 + (f"  {note}" if note else ""))
  return lines


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
    raise PipelineError(f"pass '{name}': {_rejected(cls, options, kwargs)}: {e}") from None


def _rejected(cls: type[ModulePass], options: dict[str, str], kwargs: dict) -> str:
  """Names the options a pass's `__post_init__` refused: those it refuses on
  their own (every other option at its default), else all that were given."""
  alone = []
  for (option, text), (field, value) in zip(options.items(), kwargs.items()):
    try:
      cls(**{field: value})
    except (TypeError, ValueError):
      alone.append(f"{option}={text}")
  culprits = alone or [f"{option}={text}" for option, text in options.items()]
  if not culprits:
    return "the default options are rejected"
  return f"{'option' if len(culprits) == 1 else 'options'} {' '.join(culprits)} rejected"


_ELEMENT = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(\{([^{}]*)\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[ModulePass | str]:
  """Parses `a{k=v k2=v2},b`. Registered gshard passes become `ModulePass`es;
  other names are kept as text for MLIR's registry (checked when run)."""
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


# --- declines -----------------------------------------------------------------------

_DEFAULT_SINK = object()  # Python's logging (or warnings), as `ModulePass.decline` says
_decline_sink = contextvars.ContextVar("gshard_decline_sink", default=_DEFAULT_SINK)


@contextlib.contextmanager
def reporting_declines(sink: Callable[[str], None] | None) -> Iterator[None]:
  """Inside the block, each `ModulePass.decline` line goes to `sink(line)`
  instead of Python's logging or warnings; `None` drops the lines (`gshard-opt
  --quiet`)."""
  token = _decline_sink.set(sink)
  try:
    yield
  finally:
    _decline_sink.reset(token)


def _composite_name(op: ir.Operation | ir.OpView) -> str:
  """`gshard.shared_embedding_softmax` for a composite, else the op's name."""
  op = op.operation if isinstance(op, ir.OpView) else op
  if op.name == "stablehlo.composite" and "name" in op.attributes:
    return ir.StringAttr(op.attributes["name"]).value
  return op.name


def _describe(op: ir.Operation) -> str:
  text = op.get_asm(large_elements_limit=16)
  lines = text.splitlines()
  if len(lines) > 12:
    text = "\n".join(lines[:12] + ["..."])
  return f"{op.location}:\n{text}"


# --- instrumentation ---------------------------------------------------------------

@dataclasses.dataclass
class PassTiming:
  """Wall time per pipeline element, summed over runs (`--mlir-timing`).

  Entries keep the order they were first seen in; `measure(label)` times a
  `with` block under a label of its own (the driver adds `Parser`, `Output`).
  """

  entries: dict = dataclasses.field(default_factory=dict)  # key -> [label, seconds]

  def add(self, key, label: str, seconds: float) -> None:
    self.entries.setdefault(key, [label, 0.0])[1] += seconds

  @contextlib.contextmanager
  def measure(self, label: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
      yield
    finally:
      self.add(label, label, time.perf_counter() - start)

  def report(self) -> str:
    """The table `mlir-opt --mlir-timing` prints: one line per entry, then the total."""
    total = sum(seconds for _, seconds in self.entries.values())
    share = lambda s: f"{100 * s / total if total else 0.0:5.1f}%"  # noqa: E731
    rule = "===" + "-" * 73 + "==="
    lines = [rule, "... Execution time report ...".center(79).rstrip(), rule,
             f"  Total Execution Time: {total:.4f} seconds", "",
             "  ----Wall Time----  ----Name----"]
    lines += [f"  {seconds:10.4f} ({share(seconds)})  {label}"
              for label, seconds in self.entries.values()]
    lines.append(f"  {total:10.4f} ({share(total)})  Total")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Instrumentation:
  """What `run_pipeline` does around each pass: `mlir-opt`'s debugging flags.

  `print_ir_before` / `print_ir_after`: `True` for every pass, or the names of
  the passes to print around (a gshard pass's `name`, an MLIR pass's pipeline
  name); `print_ir_after_change` keeps only the "after" dumps of passes that
  changed the module; `print_ir_after_failure` prints what a failing pass left. Each dump
  goes to `stream` (stderr when None), headed as mlir-opt heads it:
  `// -----// IR Dump Before gshard-inline //----- //`, the whole module
  printed with `print_options` (`Operation.get_asm` keywords), then passed
  through `text_filter` if given. `timing` accumulates each element's wall
  time (its verification included). `verify_each=False` skips the verifier
  after each pass; the module is then verified once, after the last pass.
  """

  print_ir_before: bool | frozenset[str] = False
  print_ir_after: bool | frozenset[str] = False
  print_ir_after_change: bool = False
  print_ir_after_failure: bool = False
  verify_each: bool = True
  timing: PassTiming | None = None
  stream: TextIO | None = None
  print_options: dict = dataclasses.field(default_factory=dict)
  text_filter: typing.Callable[[str], str] | None = None

  def text(self, module: ir.Module) -> str:
    text = module.operation.get_asm(**self.print_options)
    return text if self.text_filter is None else self.text_filter(text)

  def dump(self, when: str, label: str, module: ir.Module, text: str | None = None) -> None:
    text = self.text(module) if text is None else text
    stream = self.stream or sys.stderr
    stream.write(f"// -----// IR Dump {when} {label} //----- //\n{text.rstrip()}\n\n")
    stream.flush()


def _selected(selection: bool | frozenset[str], label: str) -> bool:
  return selection is True or (selection is not False and label in selection)


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
    if _selected(inst.print_ir_before, label):
      inst.dump("Before", label, module)
    print_after = _selected(inst.print_ir_after, label)
    unchanged = inst.text(module) if print_after and inst.print_ir_after_change else None
    start = time.perf_counter()
    try:
      _run_element(module, element, inst.verify_each)
    except PassError:
      if inst.print_ir_after_failure:
        inst.dump("After", f"{label} Failed", module)
      raise
    finally:
      if inst.timing is not None:
        inst.timing.add(("pass", position), label, time.perf_counter() - start)
    if print_after:
      text = inst.text(module)
      if text != unchanged:
        inst.dump("After", label, module, text)
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


def walk(op: ir.Operation, predicate) -> list[ir.Operation]:
  """Every operation under `op` (pre-order) for which `predicate(op)` holds."""
  found = []

  def visit(o):
    if predicate(o):
      found.append(o.operation if isinstance(o, ir.OpView) else o)
    return ir.WalkResult.ADVANCE

  op.walk(visit)
  return found


# --- pass plugins ------------------------------------------------------------------

ENTRY_POINT_GROUP = "gshard_op.passes"
PLUGINS: dict[str, list[type[ModulePass]]] = {}  # real path of a plugin file -> its passes
SOURCES: dict[str, str] = {}  # pass name -> the plugin that registered it
_entry_points: list = []  # [] not loaded yet; [None] loaded; [PluginError] failed
_PLUGIN_MODULE_PREFIX = "gshard_pass_plugin_"  # sys.modules names of plugin files


# The folder that holds `passes/` (and, in a checkout or an editable install,
# `tests/plugins/`): relative plugin paths not found in the current folder are
# looked up here.
SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_pass_plugin(path: str) -> str:
  """`path` if it names a file; else, for a relative path, the same path in
  `SOURCE_TREE` if that is a file (so `tests/plugins/vocab_tiles.py` loads from
  any folder); else `path` unchanged."""
  if os.path.isfile(path) or os.path.isabs(path):
    return path
  candidate = os.path.join(SOURCE_TREE, path)
  return candidate if os.path.isfile(candidate) else path


def load_pass_plugin(path: str) -> list[type[ModulePass]]:
  """Imports the Python file `path` (found as `find_pass_plugin` says), whose
  `@register`ed passes join `REGISTRY` (and so pipelines, `gshard_op.jit` and
  `gshard-opt --list-passes`); returns them. A file is imported once per process: loading it again returns the
  same passes.

  Raises `PluginError` (with the reason) when the file does not import,
  registers no pass, or registers a name that is already taken; whatever it
  registered before failing is removed again.
  """
  real = os.path.realpath(find_pass_plugin(path))
  if real in PLUGINS:
    return PLUGINS[real]
  source = f"pass plugin '{path}'"
  if not os.path.isfile(real):
    raise PluginError(f"{source}: no such file" + (
        f" (nor in the gshard-op source tree {SOURCE_TREE})" if not os.path.isabs(path) else ""))
  stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(real))[0])
  module_name = f"{_PLUGIN_MODULE_PREFIX}{stem}_{hashlib.sha1(real.encode()).hexdigest()[:8]}"
  spec = importlib.util.spec_from_file_location(module_name, real)
  if spec is None or spec.loader is None:
    raise PluginError(f"{source}: not a Python file")
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module  # dataclasses look their module up there
  try:
    with _registering(source, require=True) as added:
      spec.loader.exec_module(module)
  except PluginError:
    sys.modules.pop(module_name, None)
    raise
  PLUGINS[real] = added
  return added


def load_entry_point_plugins() -> None:
  """Loads, once per process, the entry points of the `gshard_op.passes`
  group of the installed distributions. An entry point names a module
  (importing it registers its passes), a `ModulePass` subclass (registered
  here if it is not yet) or a function (called with no arguments; it
  registers passes). Raises `PluginError` naming the entry point, now and on
  every later call, when one does not load."""
  if not _entry_points:
    _entry_points.append(None)
    try:
      for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = f" of {ep.dist.name}" if getattr(ep, "dist", None) else ""
        with _registering(f"pass plugin entry point '{ep.name} = {ep.value}'{dist}",
                          require=False):
          _register_entry_point(ep.load())
    except PluginError as e:
      _entry_points[0] = e
  if _entry_points[0] is not None:
    raise _entry_points[0]


@contextlib.contextmanager
def isolated_registry() -> Iterator[None]:
  """Forgets, on exit, the passes registered and the plugins loaded inside the
  block (tests; a session that wants to load an edited plugin again)."""
  saved = (dict(REGISTRY), dict(PLUGINS), dict(SOURCES), list(_entry_points),
           {name for name in sys.modules if name.startswith(_PLUGIN_MODULE_PREFIX)})
  try:
    yield
  finally:
    registry, plugins, sources, entry_points, modules = saved
    for state, old in ((REGISTRY, registry), (PLUGINS, plugins), (SOURCES, sources)):
      state.clear()
      state.update(old)
    _entry_points[:] = entry_points
    for name in [n for n in sys.modules if n.startswith(_PLUGIN_MODULE_PREFIX)]:
      if name not in modules:
        del sys.modules[name]


def _register_entry_point(obj) -> None:
  if isinstance(obj, type) and issubclass(obj, ModulePass):
    if REGISTRY.get(obj.name) is not obj:
      register(obj)
  elif callable(obj):
    obj()
  elif not isinstance(obj, types.ModuleType):
    raise TypeError(f"expected a module, a ModulePass subclass or a function, got {obj!r}")


@contextlib.contextmanager
def _registering(source: str, *, require: bool) -> Iterator[list[type[ModulePass]]]:
  """Collects the passes registered inside the block into the list it yields;
  turns any failure into a `PluginError` and unregisters what the block added."""
  before = set(REGISTRY)
  added: list[type[ModulePass]] = []
  try:
    yield added
    added.extend(cls for name, cls in REGISTRY.items() if name not in before)
    if require and not added:
      raise ValueError("it registers no pass (decorate a ModulePass subclass with "
                       "gshard_op.passes.framework.register)")
  except (Exception, SystemExit) as e:
    for name in set(REGISTRY) - before:
      del REGISTRY[name]
    if isinstance(e, PluginError):
      raise
    raise PluginError(f"{source}: {_reason(e)}") from e
  for cls in added:
    SOURCES[cls.name] = source


def _reason(e: BaseException) -> str:
  """`Type: message (at file:line)`, the line being where it was raised."""
  frames = traceback.extract_tb(e.__traceback__)
  where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
  if isinstance(e, SyntaxError):
    where = ""  # its message names the file and line
  return f"{type(e).__name__}: {e}{where}"
