"""`gshard-opt`: run gshard (and MLIR) passes on a textual MLIR module.

An `mlir-opt` for the passes of this package:

  gshard-opt in.mlir --pass-pipeline='builtin.module(gshard-chunk-softmax{vocab-chunk=128},canonicalize)'
  gshard-opt --list-passes
  cat in.mlir | gshard-opt - --pass-pipeline=gshard-inline -o out.mlir
  gshard-opt cases.mlir --split-input-file --pass-pipeline=gshard-inline

The input is parsed in jax's own MLIR context (stablehlo, chlo, sdy, func...
registered). Pipeline names in `passes.REGISTRY` are gshard passes; any other
name is looked up in MLIR's registry (`canonicalize`, `cse`, `symbol-dce`...).

Exit status: 0 on success; 1 when a pass fails (its message on stderr); 2 for
a bad command line, pipeline (unknown pass or option, bad option value), input
file or input IR (a message starting `gshard-opt: error: `).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator, Sequence

from jaxlib.mlir import ir

import passes
from passes import framework

PROG = "gshard-opt"
SPLIT_MARKER = "// -----"
_SPLIT = re.compile(r"^[ \t]*// -----[ \t]*$", re.M)

EXIT_OK, EXIT_PASS_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
  """A bad command line, pipeline, input file or input IR: exit status 2."""


class _Parser(argparse.ArgumentParser):
  """Reports errors by raising, so that `main` returns instead of exiting."""

  def error(self, message):
    raise UsageError(f"{message} (see '{self.prog} --help')")


def _arg_parser() -> argparse.ArgumentParser:
  p = _Parser(prog=PROG, description="Run gshard and MLIR passes on an MLIR module.",
              epilog="Exit status: 0 ok, 1 a pass failed, 2 bad usage, pipeline or input.")
  p.add_argument("input", nargs="?", default="-",
                 help="the .mlir file to read ('-', the default, reads stdin)")
  p.add_argument("-p", "--pass-pipeline", metavar="PIPELINE",
                 help="passes to run, e.g. 'builtin.module(gshard-inline,canonicalize)'")
  p.add_argument("-o", metavar="FILE", dest="output", default="-",
                 help="where to write the result ('-', the default, is stdout)")
  p.add_argument("--list-passes", action="store_true",
                 help="list the gshard passes with their options, then exit")
  p.add_argument("--split-input-file", action="store_true",
                 help=f"split the input on '{SPLIT_MARKER}' lines and process each piece on "
                      "its own; the results are joined by the same marker")
  p.add_argument("--allow-unregistered-dialect", action="store_true",
                 help="accept operations of dialects the context does not know")
  p.add_argument("--mlir-print-debuginfo", action="store_true",
                 help="print locations")
  p.add_argument("--mlir-print-op-generic", action="store_true",
                 help="print operations in the generic form")
  p.add_argument("--mlir-elide-elementsattrs-if-larger", type=int, metavar="N",
                 help="elide dense constants with more than N elements")
  return p


def list_passes() -> str:
  """The registered gshard passes, their summaries and options."""
  lines = ["gshard passes:"]
  for name in sorted(passes.REGISTRY):
    cls = passes.REGISTRY[name]
    lines.append(f"  {name}  {cls.summary}".rstrip())
    for option in framework.options_help(cls) or ["(no options)"]:
      lines.append(f"      {option}")
  lines.append("Other pipeline names are looked up in MLIR's registry "
               "(canonicalize, cse, inline, symbol-dce, ...).")
  return "\n".join(lines) + "\n"


# --- input -----------------------------------------------------------------------

def _read(path: str) -> str:
  if path == "-":
    return sys.stdin.read()
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except OSError as e:
    raise UsageError(f"cannot read '{path}': {e.strerror or e}") from None
  except UnicodeDecodeError as e:
    raise UsageError(f"cannot read '{path}': not UTF-8 text ({e.reason})") from None


def split_input(text: str) -> list[tuple[int, str]]:
  """`(first line - 1, text)` of each piece between `// -----` lines."""
  pieces, start, line = [], 0, 0
  for m in _SPLIT.finditer(text):
    pieces.append((line, text[start:m.start()]))
    line += text.count("\n", start, m.end())
    start = m.end()
  pieces.append((line, text[start:]))
  return pieces


class _Locations:
  """Maps the parser's `"-":line:col` locations of one piece back to the file."""

  _LOC = re.compile(r'"-":(\d+):(\d+)')

  def __init__(self, path: str, line_offset: int):
    self.name = "<stdin>" if path == "-" else path
    self.line_offset = line_offset

  def __call__(self, text: str) -> str:
    return self._LOC.sub(
        lambda m: f'"{self.name}":{int(m.group(1)) + self.line_offset}:{m.group(2)}', text)

  def plain(self, location: ir.Location) -> str:
    """`file:line:col` for a diagnostic, as compilers print it."""
    text = self(str(location))
    m = re.fullmatch(r'loc\("(.*)":(\d+):(\d+)\)', text)
    return f"{m.group(1)}:{m.group(2)}:{m.group(3)}" if m else text


def _diagnostics(error: ir.MLIRError, where: _Locations) -> str:
  lines = []

  def add(d, severity):
    lines.append(f"{where.plain(d.location)}: {severity}: {where(d.message)}")
    for note in d.notes:
      add(note, "note")

  for d in error.error_diagnostics:
    add(d, "error")
  return "\n".join(lines) if lines else where(str(error))


def parse_module(text: str, context: ir.Context, where: _Locations) -> ir.Module:
  try:
    return ir.Module.parse(text, context=context)
  except ir.MLIRError as e:
    raise UsageError(f"cannot parse {where.name}\n{_diagnostics(e, where)}") from None


# --- running ---------------------------------------------------------------------

def make_context(allow_unregistered_dialect: bool = False) -> ir.Context:
  """jax's MLIR context: every dialect a lowered jax program uses."""
  from jax._src.interpreters import mlir  # jax is heavy: import it only when needed
  context = mlir.make_ir_context()
  context.allow_unregistered_dialects = allow_unregistered_dialect
  return context


def _print(module: ir.Module, args) -> str:
  return module.operation.get_asm(
      enable_debug_info=args.mlir_print_debuginfo,
      print_generic_op_form=args.mlir_print_op_generic,
      large_elements_limit=args.mlir_elide_elementsattrs_if_larger)


def check_pipeline(pipeline: str, context: ir.Context) -> None:
  """Raises `PipelineError` for a bad pipeline before any input is read:
  gshard passes are checked by parsing, MLIR pass names by adding them to a
  pass manager (run on an empty module)."""
  mlir_passes = [e for e in passes.parse_pipeline(pipeline) if isinstance(e, str)]
  if mlir_passes:
    with context:
      try:
        passes.run_pipeline(ir.Module.create(ir.Location.unknown()), mlir_passes)
      except passes.PassError:
        pass  # the names are known; failing on an empty module is the input's business


def process(text: str, args, context: ir.Context, where: _Locations) -> str:
  """Parses one module, runs the pipeline on it and returns it printed."""
  module = parse_module(text, context, where)
  if args.pass_pipeline is not None:
    try:
      passes.run_pipeline(module, args.pass_pipeline)
    except passes.PassError as e:
      raise passes.PassError(where(str(e))) from None
  out = _print(module, args)
  return where(out) if args.mlir_print_debuginfo else out


@contextlib.contextmanager
def _output(path: str) -> Iterator:
  if path == "-":
    yield sys.stdout
    sys.stdout.flush()
    return
  try:
    f = open(path, "w", encoding="utf-8")
  except OSError as e:
    raise UsageError(f"cannot write '{path}': {e.strerror or e}") from None
  with f:
    yield f


def _error(message: str) -> None:
  print(f"{PROG}: error: {message}", file=sys.stderr)


def run(args) -> int:
  if args.list_passes:
    with _output(args.output) as out:
      out.write(list_passes())
    return EXIT_OK
  context = make_context(args.allow_unregistered_dialect)
  if args.pass_pipeline is not None:
    check_pipeline(args.pass_pipeline, context)
  text = _read(args.input)
  pieces = split_input(text) if args.split_input_file else [(0, text)]
  results, status = [], EXIT_OK
  with context:
    for line_offset, piece in pieces:
      where = _Locations(args.input, line_offset)
      try:
        results.append(process(piece, args, context, where))
      except UsageError as e:
        if not args.split_input_file:
          raise
        _error(str(e))
        status = max(status, EXIT_USAGE)
      except passes.PipelineError:
        raise  # the same pipeline fails on every piece: stop at once
      except passes.PassError as e:
        print(e, file=sys.stderr)
        status = max(status, EXIT_PASS_FAILED)
  if status == EXIT_OK or args.split_input_file:
    with _output(args.output) as out:
      out.write(f"{SPLIT_MARKER}\n".join(results))
  return status


def main(argv: Sequence[str] | None = None) -> int:
  """The console script; returns the exit status."""
  try:
    args = _arg_parser().parse_args(argv)
  except SystemExit as e:  # --help
    return e.code if isinstance(e.code, int) else EXIT_OK
  except UsageError as e:
    _error(str(e))
    return EXIT_USAGE
  try:
    return run(args)
  except UsageError as e:
    _error(str(e))
    return EXIT_USAGE
  except passes.PipelineError as e:
    _error(f"bad pass pipeline: {str(e).rstrip()}")
    return EXIT_USAGE
  except passes.PassError as e:
    print(e, file=sys.stderr)
    return EXIT_PASS_FAILED


if __name__ == "__main__":
  sys.exit(main())
