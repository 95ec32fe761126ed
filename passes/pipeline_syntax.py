"""MLIR's textual pass-pipeline syntax, read into a tree; no pass is looked up here.

  pipeline := element (',' element)* [',']
  element  := name ['{' options '}']     a pass; its options kept as written
            | anchor '(' pipeline ')'    a pipeline nested on the ops named `anchor`

as `mlir::parsePassPipeline` (and so jaxlib's `PassManager.parse`) reads it:
`func.func(canonicalize)`, `builtin.module(cse,func.func(cse))`. Options may
hold nested braces and quoted text (`inline{op-pipelines={func.func(cse)}}`).
Whitespace may surround names, commas and brackets; a trailing comma is
accepted (as the flat parser before this one accepted it).
"""

from __future__ import annotations

import dataclasses
import re

from gshard_op.passes.errors import PipelineError

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclasses.dataclass(frozen=True)
class Element:
  """A pass (`nested` is None) or an anchor with its nested pipeline."""

  name: str
  text: str  # as written: `name{options}` for a pass, `anchor(...)` for an anchor
  options: str | None = None  # between a pass's braces; None without braces
  nested: tuple[Element, ...] | None = None


def parse(text: str) -> list[Element]:
  """The top-level elements of `text`; `PipelineError` for text that is not a
  pipeline (unbalanced parentheses or braces named with their column)."""
  return _Reader(text).top()


class _Reader:
  def __init__(self, text: str):
    self.text = text
    self.pos = 0

  def top(self) -> list[Element]:
    elements = self.pipeline()
    if self.pos < len(self.text):  # pipeline() stops only at the end or at ')'
      self.unbalanced("parentheses", f"')' at column {self.pos + 1} closes nothing")
    return elements

  def pipeline(self) -> list[Element]:
    elements = []
    self.skip()
    while self.pos < len(self.text) and self.text[self.pos] != ")":
      elements.append(self.element())
      self.skip()
      if self.pos < len(self.text) and self.text[self.pos] == ",":
        self.pos += 1
        self.skip()
      elif self.pos < len(self.text) and self.text[self.pos] not in ")":
        if self.text[self.pos] == "}":
          self.unbalanced("braces", f"'}}' at column {self.pos + 1} closes nothing")
        self.fail()
    return elements

  def element(self) -> Element:
    start = self.pos
    m = _NAME.match(self.text, self.pos)
    if not m:
      self.fail()
    name = m.group(0)
    self.pos = m.end()
    self.skip()
    if self.pos < len(self.text) and self.text[self.pos] == "{":
      options = self.braced(name)
      return Element(name, self.text[start:self.pos], options=options)
    if self.pos < len(self.text) and self.text[self.pos] == "(":
      opened = self.pos
      self.pos += 1
      nested = self.pipeline()
      if self.pos >= len(self.text):
        self.unbalanced("parentheses", f"the '(' of '{name}(' at column {opened + 1} "
                                       "is never closed")
      self.pos += 1
      return Element(name, self.text[start:self.pos], nested=tuple(nested))
    self.pos = m.end()
    return Element(name, name)

  def braced(self, name: str) -> str:
    """The options between the braces at `pos` (nested braces and quotes kept)."""
    opened, depth = self.pos, 0
    while self.pos < len(self.text):
      c = self.text[self.pos]
      if c == '"':
        close = self.text.find('"', self.pos + 1)
        if close < 0:
          break
        self.pos = close
      elif c == "{":
        depth += 1
      elif c == "}":
        depth -= 1
        if depth == 0:
          self.pos += 1
          return self.text[opened + 1:self.pos - 1]
      self.pos += 1
    self.unbalanced("braces", f"the '{{' of '{name}{{' at column {opened + 1} is never closed")

  def skip(self) -> None:
    while self.pos < len(self.text) and self.text[self.pos].isspace():
      self.pos += 1

  def fail(self):
    raise PipelineError(f"cannot parse pipeline at: '{self.text[self.pos:]}'")

  def unbalanced(self, what: str, detail: str):
    raise PipelineError(f"unbalanced {what} in pipeline '{self.text}': {detail}")
