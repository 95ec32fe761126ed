"""`gshard-opt`: run gshard (and MLIR) passes on a textual MLIR module.

An `mlir-opt` for the passes of this package:

  gshard-opt in.mlir --pass-pipeline='builtin.module(gshard-chunk-softmax{vocab-chunk=128},canonicalize)'
  gshard-opt in.mlir -p 'builtin.module(gshard-inline,func.func(canonicalize,cse))'
  gshard-opt --list-passes
  cat in.mlir | gshard-opt - --pass-pipeline=gshard-inline -o out.mlir
  gshard-opt cases.mlir --split-input-file --pass-pipeline=gshard-inline
  gshard-opt in.mlir --load-pass-plugin=my_pass.py --pass-pipeline=my-pass \
      --mlir-print-ir-after-all --mlir-timing

The input is parsed in jax's own MLIR context (stablehlo, chlo, sdy, func...
registered). Pipeline names in `gshard_op.passes.REGISTRY` are gshard passes; any other
name is looked up in MLIR's registry (`canonicalize`, `cse`, `symbol-dce`...).
`--load-pass-plugin=FILE.py` (repeatable) imports a file whose passes register
themselves like the built-in ones; installed distributions add passes through
the `gshard_op.passes` entry-point group; a relative plugin path that does not
exist from the current folder is looked up in the gshard-op source tree, so
`--load-pass-plugin=tests/plugins/vocab_tiles.py` works from any folder. The IR
printing, timing and verifier flags are `gshard_op.passes.framework.Instrumentation`'s,
as mlir-opt spells them.

Warnings go to stderr and leave the exit status alone: each pass that leaves a
composite as it is says why (`ModulePass.decline`), and a pipeline of gshard
passes that rewrote no composite says so, with where composites come from
(lowering under `gshard_op.lowering("composite")`). `--quiet` drops both.

Exit status: 0 on success; 1 when a pass fails (its message on stderr; the
full traceback of a pass's own exception with `--show-traceback` or
GSHARD_DEBUG=1 in the environment); 2 for a bad command line, pipeline
(unknown pass or option, bad option value), pass plugin, input file or input
IR (a message starting `gshard-opt: error: `).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import textwrap
import traceback
from collections.abc import Iterator, Sequence

from jaxlib.mlir import ir

from gshard_op import passes
from gshard_op.passes import composites, framework

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
  p.add_argument("-q", "--quiet", action="store_true",
                 help="print no warnings: neither why a pass left a composite as it is nor "
                      "that the gshard passes rewrote no composite")
  plugins = p.add_argument_group("pass plugins")
  plugins.add_argument("--load-pass-plugin", action="append", default=[], metavar="FILE.py",
                       help="import a Python file that registers passes (repeatable); a "
                            "relative path not found here is looked up in the gshard-op "
                            "source tree (e.g. tests/plugins/vocab_tiles.py)")
  debug = p.add_argument_group("debugging the pipeline")
  debug.add_argument("--mlir-print-ir-before-all", action="store_true",
                     help="print the module to stderr before every pass")
  debug.add_argument("--mlir-print-ir-after-all", action="store_true",
                     help="print the module to stderr after every pass")
  debug.add_argument("--mlir-print-ir-before", action="append", default=[], metavar="PASS",
                     help="print the module before the passes named (repeatable, or comma-separated)")
  debug.add_argument("--mlir-print-ir-after", action="append", default=[], metavar="PASS",
                     help="print the module after the passes named (repeatable, or comma-separated)")
  debug.add_argument("--mlir-print-ir-after-change", action="store_true",
                     help="with the after flags: print only when the pass changed the module")
  debug.add_argument("--mlir-print-ir-after-failure", action="store_true",
                     help="print the module a failing pass left")
  debug.add_argument("--mlir-timing", action="store_true",
                     help="report the wall time of parsing, each pass and printing, at the end")
  debug.add_argument("--verify-each", action=argparse.BooleanOptionalAction, default=True,
                     help="verify the module after each pass (the default); with "
                          "--no-verify-each, once after the last pass")
  debug.add_argument("--show-traceback", action="store_true",
                     default=os.environ.get("GSHARD_DEBUG", "") not in ("", "0"),
                     help="show the full Python traceback of a failing pass (also when "
                          "GSHARD_DEBUG is set)")
  return p


def list_passes() -> str:
  """The registered gshard passes (plugins' included, marked as such), their
  summaries and options; then what `0` means and the default pipeline's
  memory budget on this machine."""
  import jax  # heavy: only when listing

  from gshard_op import budget as budgets
  framework.load_entry_point_plugins()
  budget = budgets.default_mib()
  platform = jax.default_backend()
  lines = ["gshard passes:"]
  for name in sorted(passes.REGISTRY):
    cls = passes.REGISTRY[name]
    source = framework.SOURCES.get(name)
    lines.append(f"  {name}  {cls.summary}{f'  [{source}]' if source else ''}".rstrip())
    for option in framework.options_help(cls) or ["(no options)"]:
      if option.startswith("memory-budget-mib="):
        option += f" (here {budget} MiB)"
      lines.append(f"      {option}")
  notes = [
      "0 means automatic: chunk and token-block sizes come from memory-budget-mib, "
      "gshard-pallas's blocks from its platform's defaults, and memory-budget-mib=0 "
      "is the default budget.",
      f"Default budget here ({platform}): {budget} MiB of float32 [tokens, classes] buffers "
      "a loop body may keep live, the same for every pass, the default pipeline "
      f"(gshard_op.jit) and plain jax.jit's chunked lowering: {budgets.CPU_MEMORY_BUDGET_MIB:g} "
      "MiB on the CPU, 1/64 of an accelerator's memory (256 to 4096 MiB) on a GPU or TPU.",
      "Other pipeline names are looked up in MLIR's registry "
      "(canonicalize, cse, inline, symbol-dce, ...)."]
  for note in notes:
    lines += textwrap.wrap(note, width=88, break_on_hyphens=False)
  return "\n".join(lines) + "\n"


# --- input -----------------------------------------------------------------------

def read_input(path: str) -> str:
  """The text of `path` ('-': standard input); UsageError if unreadable or
  not UTF-8, from a file and from standard input alike."""
  try:
    if path == "-":
      return _utf8(getattr(sys.stdin, "buffer", sys.stdin).read())
    with open(path, encoding="utf-8") as f:
      return f.read()
  except OSError as e:
    raise UsageError(f"cannot read '{path}': {e.strerror or e}") from None
  except UnicodeError as e:
    where = "standard input" if path == "-" else f"'{path}'"
    raise UsageError(f"cannot read {where}: not UTF-8 text ({e.reason})") from None


def _utf8(data: bytes | str) -> str:
  """`data` as text: bytes decoded as UTF-8 (as they are, newlines included,
  as Python reads stdin), text checked to be encodable (Python decodes stdin
  with `surrogateescape` in a C locale, which leaves lone surrogates the MLIR
  parser cannot take)."""
  if isinstance(data, bytes):
    return data.decode("utf-8")
  data.encode("utf-8")
  return data


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

def _print_options(args) -> dict:
  return dict(enable_debug_info=args.mlir_print_debuginfo,
              print_generic_op_form=args.mlir_print_op_generic,
              large_elements_limit=args.mlir_elide_elementsattrs_if_larger)


def _names(values: list[str]) -> frozenset[str]:
  return frozenset(n.strip() for v in values for n in v.split(",") if n.strip())


def instrumentation(args, where: "_Locations", timing) -> framework.Instrumentation:
  """The command line's printing, timing and verifier flags."""
  return framework.Instrumentation(
      print_ir_before=args.mlir_print_ir_before_all or _names(args.mlir_print_ir_before),
      print_ir_after=args.mlir_print_ir_after_all or _names(args.mlir_print_ir_after),
      print_ir_after_change=args.mlir_print_ir_after_change,
      print_ir_after_failure=args.mlir_print_ir_after_failure,
      verify_each=args.verify_each, timing=timing, print_options=_print_options(args),
      text_filter=where if args.mlir_print_debuginfo else None)


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


def _warning(message: str) -> None:
  print(f"{PROG}: warning: {message}", file=sys.stderr)


WHERE_COMPOSITES_COME_FROM = (
    "composites come from lowering under gshard_op.lowering(\"composite\"), e.g. "
    "`with gshard_op.lowering(\"composite\"): text = jax.jit(f).lower(*args).as_text()`; "
    "plain jax.jit lowers the op to chunked loops instead")


def _report_unrewritten(where: _Locations, pipeline: list, before: int, after: int) -> None:
  """Warns when the pipeline has gshard passes and none of them rewrote a composite."""
  names = sorted({e.name for e in pipeline if isinstance(e, passes.ModulePass)})
  if not names or (before and after < before):
    return
  ran = ", ".join(names)
  if not before:
    _warning(f"{where.name}: no gshard composite ({' or '.join(composites.NAMES)}) in the "
             f"input, so {ran} changed nothing; {WHERE_COMPOSITES_COME_FROM}")
  else:
    _warning(f"{where.name}: {ran} rewrote none of its {before} gshard composites")


def process(text: str, args, context: ir.Context, where: _Locations,
            timing: framework.PassTiming | None = None) -> str:
  """Parses one module, runs the pipeline on it and returns it printed.

  Passes' declines go to stderr as warnings (none with `--quiet`), then one
  more when the pipeline's gshard passes rewrote no composite."""
  timed = timing.measure if timing is not None else lambda _: contextlib.nullcontext()
  with timed("Parser"):
    module = parse_module(text, context, where)
  if args.pass_pipeline is not None:
    pipeline = passes.parse_pipeline(args.pass_pipeline)
    before = len(composites.find(module.operation))
    sink = None if args.quiet else lambda line: _warning(where(line))
    try:
      with framework.reporting_declines(sink):
        passes.run_pipeline(module, pipeline, instrumentation(args, where, timing))
    except passes.PassError as e:
      raise passes.PassError(where(str(e))) from e
    if not args.quiet:
      _report_unrewritten(where, pipeline, before, len(composites.find(module.operation)))
  with timed("Output"):
    out = module.operation.get_asm(**_print_options(args))
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


def _pass_failed(e: passes.PassError, args) -> None:
  """The pass's message; with --show-traceback, first the traceback of the
  exception it chains (a pass's own bug)."""
  if args.show_traceback and e.__cause__ is not None:
    cause = e.__cause__
    while isinstance(cause, passes.PassError) and cause.__cause__ is not None:
      cause = cause.__cause__
    sys.stderr.write("".join(traceback.format_exception(cause)))
  print(e, file=sys.stderr)


def _check_print_flags(args) -> None:
  for flag, values in (("--mlir-print-ir-before", args.mlir_print_ir_before),
                       ("--mlir-print-ir-after", args.mlir_print_ir_after)):
    for name in sorted(_names(values)):
      try:
        framework.check_pass_name(name)
      except passes.PipelineError as e:
        raise UsageError(f"{flag}: {e}") from None


def run(args) -> int:
  for path in args.load_pass_plugin:
    framework.load_pass_plugin(path)
  _check_print_flags(args)
  if args.list_passes:
    with _output(args.output) as out:
      out.write(list_passes())
    return EXIT_OK
  context = framework.make_context(args.allow_unregistered_dialect)
  if args.pass_pipeline is not None:
    check_pipeline(args.pass_pipeline, context)
  text = read_input(args.input)
  pieces = split_input(text) if args.split_input_file else [(0, text)]
  timing = framework.PassTiming() if args.mlir_timing else None
  try:
    return _run_pieces(args, context, pieces, timing)
  finally:
    if timing is not None:
      sys.stderr.write(timing.report())


def _run_pieces(args, context, pieces, timing) -> int:
  results, status = [], EXIT_OK
  with context:
    for line_offset, piece in pieces:
      where = _Locations(args.input, line_offset)
      try:
        results.append(process(piece, args, context, where, timing))
      except UsageError as e:
        if not args.split_input_file:
          raise
        _error(str(e))
        status = max(status, EXIT_USAGE)
      except passes.PipelineError:
        raise  # the same pipeline fails on every piece: stop at once
      except passes.PassError as e:
        _pass_failed(e, args)
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
  except framework.PluginError as e:
    _error(f"cannot load {e}")
    if args.show_traceback and e.__cause__ is not None:
      sys.stderr.write("".join(traceback.format_exception(e.__cause__)))
    return EXIT_USAGE
  except passes.PipelineError as e:
    _error(f"bad pass pipeline: {str(e).rstrip()}")
    return EXIT_USAGE
  except passes.PassError as e:
    _pass_failed(e, args)
    return EXIT_PASS_FAILED


if __name__ == "__main__":
  sys.exit(main())
