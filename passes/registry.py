"""The pass registry: pass name -> `ModulePass` subclass, filled lazily.

As in xDSL's `xdsl/transforms/__init__.py`, each built-in pass is a name and a
small function that imports its module and returns its class (`BUILTIN`):
listing the passes imports them all, running a pipeline imports only the
passes it names (`gshard-inline` alone never loads Pallas). Passes from
outside the package join with `@register` (plugins: `passes/plugins.py`).

`REGISTRY` is a mutable mapping over both: `name in REGISTRY` and iterating
the names import nothing; `REGISTRY[name]` imports a built-in pass the first
time it is asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, MutableMapping

from gshard_op.passes.module_pass import ModulePass


def _inline():
  from gshard_op.passes.inline import InlinePass
  return InlinePass


def _chunk():
  from gshard_op.passes.chunk import ChunkSoftmaxPass
  return ChunkSoftmaxPass


def _shard():
  from gshard_op.passes.shard import ShardVocabPass
  return ShardVocabPass


def _fuse():
  from gshard_op.passes.fuse import FuseForwardBackwardPass
  return FuseForwardBackwardPass


def _pallas():
  from gshard_op.passes.pallas import PallasPass
  return PallasPass


BUILTIN: dict[str, Callable[[], type[ModulePass]]] = {
    "gshard-inline": _inline,
    "gshard-chunk-softmax": _chunk,
    "gshard-shard-vocab": _shard,
    "gshard-fuse-fwd-bwd": _fuse,
    "gshard-pallas": _pallas,
}


class Registry(MutableMapping):
  """Pass name -> pass class: the built-in passes of `lazy` imported on first
  access, the ones `register`ed (plugins, tests) as given."""

  def __init__(self, lazy: dict[str, Callable[[], type[ModulePass]]]):
    self._lazy = lazy
    self._loaded: dict[str, type[ModulePass]] = {}

  def __getitem__(self, name: str) -> type[ModulePass]:
    if name not in self._loaded:
      if name not in self._lazy:
        raise KeyError(name)
      cls = self._lazy[name]()
      if cls.name != name or "__dataclass_fields__" not in cls.__dict__:
        raise TypeError(f"built-in pass '{name}' loads {cls.__qualname__}, named "
                        f"{cls.name!r}; expected a dataclass of that name")
      self._loaded[name] = cls
    return self._loaded[name]

  def __setitem__(self, name: str, cls: type[ModulePass]) -> None:
    self._loaded[name] = cls

  def __delitem__(self, name: str) -> None:
    del self._loaded[name]  # a built-in name stays: its pass is loaded again when asked for

  def __contains__(self, name) -> bool:
    return name in self._loaded or name in self._lazy

  def __iter__(self) -> Iterator[str]:
    yield from self._lazy
    yield from (name for name in self._loaded if name not in self._lazy)

  def __len__(self) -> int:
    return len(self._lazy.keys() | self._loaded.keys())

  def snapshot(self) -> dict[str, type[ModulePass]]:
    """What `restore` takes back to: the passes loaded or registered so far."""
    return dict(self._loaded)

  def restore(self, snapshot: dict[str, type[ModulePass]]) -> None:
    self._loaded.clear()
    self._loaded.update(snapshot)


REGISTRY = Registry(BUILTIN)


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
