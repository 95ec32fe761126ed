"""A pass's options: its dataclass fields, spelled with dashes in pipelines.

`make_pass` builds a pass from pipeline text (`{vocab-chunk=16 fast=true}`),
converting each value to its field's type as `typing.get_type_hints` reads it;
`options_help` lists them for `gshard-opt --list-passes`; `pipeline_text`
spells a pass back out.
"""

from __future__ import annotations

import dataclasses
import typing

from gshard_op.passes.errors import PipelineError


def option_name(field: str) -> str:
  """The pipeline spelling of a field: `vocab_chunk` -> `vocab-chunk`."""
  return field.replace("_", "-")


def format_value(value) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


def option_types(cls: type) -> dict[str, type]:
  """Field name -> its type (string annotations resolved, as with `from
  __future__ import annotations`)."""
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def pipeline_text(p) -> str:
  """The pass `p` as pipeline text, with every option spelled out."""
  opts = " ".join(f"{option_name(f.name)}={format_value(getattr(p, f.name))}"
                  for f in dataclasses.fields(p))
  return f"{p.name}{{{opts}}}" if opts else p.name


def _convert(pass_name: str, option: str, kind: type, text: str):
  try:
    if kind is bool:
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    return kind(text)
  except ValueError:
    raise PipelineError(f"pass '{pass_name}': option '{option}' expects "
                        f"{kind.__name__}, got '{text}'") from None


def options_help(cls: type) -> list[str]:
  """`name=default  (type)` for each option of a pass, then its note: the
  field's `metadata["help"]` if it has one, else `0: automatic` for a numeric
  option whose default is 0 (the convention: a size or budget the pass
  chooses)."""
  types = option_types(cls)
  lines = []
  for f in dataclasses.fields(cls):
    kind = types[f.name].__name__
    note = f.metadata.get("help")
    if (note is None and kind in ("int", "float") and f.default == 0
        and not isinstance(f.default, bool)):
      note = "0: automatic"
    lines.append(f"{option_name(f.name)}={format_value(f.default)}  ({kind})"
                 + (f"  {note}" if note else ""))
  return lines


def make_pass(cls: type, options: dict[str, str]):
  """An instance of pass class `cls` from string options (type checked); a
  `PipelineError` names an unknown option, a value of the wrong type, or the
  options the pass's `__post_init__` refused."""
  fields = {option_name(f.name): f for f in dataclasses.fields(cls)}
  types = option_types(cls)
  kwargs = {}
  for option, text in options.items():
    if option not in fields:
      known = ", ".join(fields) or "none"
      raise PipelineError(f"pass '{cls.name}' has no option '{option}' (options: {known})")
    f = fields[option]
    kwargs[f.name] = _convert(cls.name, option, types[f.name], text)
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:
    raise PipelineError(f"pass '{cls.name}': {_rejected(cls, options, kwargs)}: {e}") from None


def _rejected(cls: type, options: dict[str, str], kwargs: dict) -> str:
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
