"""`passes`, the old top-level name of `gshard_op.passes`, kept for one release.

`import passes` and `import passes.chunk` give the very modules of
`gshard_op.passes` (one registry, one set of classes), with a
DeprecationWarning. Installed, this file is the top-level package `passes`; in
a checkout on `sys.path`, `passes/__init__.py` calls `install` itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

OLD, NEW = "passes", "gshard_op.passes"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Finds `passes.X` as the module `gshard_op.passes.X` itself."""

  def find_spec(self, name, path=None, target=None):
    if name.startswith(OLD + "."):
      return importlib.util.spec_from_loader(name, self)
    return None

  def create_module(self, spec):
    return importlib.import_module(NEW + spec.name[len(OLD):])

  def exec_module(self, module):
    del module  # it ran under its new name


def install():
  """Points `passes` and its submodules at `gshard_op.passes`; returns that package."""
  warnings.warn("the top-level package `passes` is now `gshard_op.passes`; the old "
                "name will be removed in the next release", DeprecationWarning, stacklevel=3)
  if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())
  package = importlib.import_module(NEW)
  sys.modules[OLD] = package
  return package


if __name__ == OLD:
  install()
