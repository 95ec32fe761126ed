"""Pass plugins: passes from outside the package join `REGISTRY`.

Through `load_pass_plugin(path)` (a Python file whose `@register`ed passes
register themselves) or the `gshard_op.passes` entry-point group of an
installed distribution (`load_entry_point_plugins`, which `parse_pipeline`
calls once). `isolated_registry` forgets what a block loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import traceback
import types
from collections.abc import Iterator

from gshard_op.passes.errors import PluginError
from gshard_op.passes.module_pass import ModulePass
from gshard_op.passes.registry import REGISTRY, register

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
  saved = (REGISTRY.snapshot(), dict(PLUGINS), dict(SOURCES), list(_entry_points),
           {name for name in sys.modules if name.startswith(_PLUGIN_MODULE_PREFIX)})
  try:
    yield
  finally:
    registry, plugins, sources, entry_points, modules = saved
    REGISTRY.restore(registry)
    for state, old in ((PLUGINS, plugins), (SOURCES, sources)):
      state.clear()
      state.update(old)
    _entry_points[:] = entry_points
    for name in [n for n in sys.modules if n.startswith(_PLUGIN_MODULE_PREFIX)]:
      if name not in modules:
        del sys.modules[name]


def _register_entry_point(obj) -> None:
  if isinstance(obj, type) and issubclass(obj, ModulePass):
    if obj.name not in REGISTRY or REGISTRY[obj.name] is not obj:
      register(obj)
  elif callable(obj):
    obj()
  elif not isinstance(obj, types.ModuleType):
    raise TypeError(f"expected a module, a ModulePass subclass or a function, got {obj!r}")


@contextlib.contextmanager
def _registering(source: str, *, require: bool) -> Iterator[list[type[ModulePass]]]:
  """Collects the passes registered inside the block into the list it yields;
  turns any failure into a `PluginError` and unregisters what the block added."""
  before = set(REGISTRY)  # names only: no built-in pass is imported
  added: list[type[ModulePass]] = []
  try:
    yield added
    added.extend(REGISTRY[name] for name in REGISTRY if name not in before)
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
