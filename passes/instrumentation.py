"""What `run_pipeline` does around each pass: `mlir-opt`'s debugging flags.

Printing the IR before or after passes, timing each pass, turning the per-pass
verifier off; for the Python API and `gshard-opt` alike.

This is Python rather than jaxlib's `PassManager.enable_ir_printing` and
`enable_timing`, which were checked (jaxlib 0.10.2) and do not give what
`gshard-opt` promises (`tests/lit/print-ir.mlir`, `timing.mlir`):
- the native dumps go to the process's file descriptor 2, not to a Python
  stream (`Instrumentation.stream`, pytest's capture), and are headed with the
  pass's class name (`IR Dump Before CSEPass: cse`), not the pipeline name;
- they print before or after every pass or none: no `--mlir-print-ir-after=NAME`;
- they print locations as parsed, so `--split-input-file` pieces cannot be
  mapped back to the lines of the whole file (`text_filter`);
- the native timing report also names pass classes and adds analysis and
  "Rest" rows, is printed when the pass manager is destroyed (one report per
  manager), and cannot hold the driver's `Parser` and `Output` rows or add up
  the pieces of a split input.
Python-defined passes do report their names to the native instrumentation
(`PassManager.add(fn, name=N, argument=A)` dumps as `N: A`, times as `N`): that
is not the obstacle. `tests/test_framework.py` checks the headers and the file
descriptor against the installed jaxlib.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import typing
from collections.abc import Iterator
from typing import TextIO

from jaxlib.mlir import ir


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
  def measure(self, label: str, key=None) -> Iterator[None]:
    """Times the `with` block under `label` (summed with earlier blocks of the
    same `key`, by default the label)."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self.add(label if key is None else key, label, time.perf_counter() - start)

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

  @contextlib.contextmanager
  def around(self, position: int, label: str, module: ir.Module,
             failure: type[BaseException]) -> Iterator[None]:
    """Prints, times and watches one pipeline element (the `with` block runs
    it): the dumps before and after it, its time, and what it left when it
    raised `failure`."""
    if _selected(self.print_ir_before, label):
      self.dump("Before", label, module)
    print_after = _selected(self.print_ir_after, label)
    unchanged = self.text(module) if print_after and self.print_ir_after_change else None
    timed = (self.timing.measure(label, ("pass", position)) if self.timing is not None
             else contextlib.nullcontext())
    try:
      with timed:
        yield
    except failure:
      if self.print_ir_after_failure:
        self.dump("After", f"{label} Failed", module)
      raise
    if print_after:
      text = self.text(module)
      if text != unchanged:
        self.dump("After", label, module, text)


def _selected(selection: bool | frozenset[str], label: str) -> bool:
  return selection is True or (selection is not False and label in selection)
