"""Imports gshard_op from the checkout this file is in, installed or not.

The folder `passes/` becomes `gshard_op.passes` only through the install
(pyproject's `package-dir`); from a bare checkout nothing maps it. So the
command-line wrappers next to this file put the checkout first on `sys.path`
and register `passes/` under its installed name themselves, before importing
the driver: they run this checkout's code with or without an install.
"""

from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_checkout() -> None:
  """This checkout's `gshard_op`, and its `passes/` as `gshard_op.passes`."""
  sys.path.insert(0, ROOT)
  import gshard_op
  if "gshard_op.passes" in sys.modules:
    return
  folder = os.path.join(ROOT, "passes")
  spec = importlib.util.spec_from_file_location(
      "gshard_op.passes", os.path.join(folder, "__init__.py"),
      submodule_search_locations=[folder])
  module = importlib.util.module_from_spec(spec)
  sys.modules["gshard_op.passes"] = module
  gshard_op.passes = module
  spec.loader.exec_module(module)
