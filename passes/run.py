"""`gshard-run`: runs StableHLO modules with XLA and compares their results.

The differential check of a rewrite, with no JAX program around it:

  gshard-run before.mlir after.mlir --rtol 1e-5     # same inputs, compare results
  gshard-run step.mlir                              # run one module, summarise results
  gshard-run before.mlir after.mlir --inputs args.npz --save-inputs used.npz
  gshard-opt before.mlir --pass-pipeline=gshard-chunk-softmax | gshard-run before.mlir -

A module is `jax.jit(f).lower(...).as_text()` or `gshard-opt`'s output: its
`@main` gives the operand and result types. Each module is compiled by the
local XLA client (`jax.extend.backend.get_backend`, CPU by default) for its
`mhlo.num_partitions` devices, with Shardy or GSPMD partitioning as its
annotations say; sharded operands are placed on the devices as the compiled
executable asks. On the CPU, `gshard-run` asks for enough host devices
(`jax_num_cpu_devices`) unless XLA_FLAGS sets
`--xla_force_host_platform_device_count` or JAX's CPU backend has started.

Inputs are seeded: floats standard normal (times `--scale`), booleans fair
coins, integers uniform in `[0, B)`, B being `--id-bound` or, by default, the
smallest vocabulary of the gshard composites in the modules (class ids in
range), else the smallest dimension above 1 of the float operands. `--inputs`
takes them from a `.npz` instead (in the file's order).

Two modules must have the same signature. A float result passes when
`max|a - b| <= atol + rtol * max|a|` (`a` from the first module; the report's
"max rel err" is `max|a - b| / max|a|`), NaNs must sit in the same places; an
integer or boolean result must be equal.

Exit status: 0 every result agrees (or one module ran); 1 some result differs
(the report names it); 2 bad usage, unreadable or uncompilable module,
signatures that differ, or inputs that do not fit (`gshard-run: error: `).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Sequence

import numpy as np

# Bad usage, module or inputs exit with status 2, as in gshard-opt.
from gshard_op.passes.driver import UsageError, read_input

PROG = "gshard-run"
EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2

_ELEMENT_TYPES = {
    "f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16",
    "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8",
    "ui64": "uint64", "ui32": "uint32", "ui16": "uint16", "ui8": "uint8", "i1": "bool",
}
_PARTITIONS = re.compile(r"mhlo\.num_partitions\s*=\s*(\d+)")
_REPLICAS = re.compile(r"mhlo\.num_replicas\s*=\s*(\d+)")



@dataclasses.dataclass(frozen=True)
class TensorType:
  """A ranked tensor type of `@main`'s signature."""

  text: str                # as MLIR prints it: tensor<8x16xf32>
  shape: tuple[int, ...]
  dtype: str               # a NumPy (ml_dtypes) dtype name

  @property
  def np_dtype(self) -> np.dtype:
    import jax.numpy as jnp  # bfloat16 and friends
    return np.dtype(getattr(jnp, self.dtype))

  @property
  def is_float(self) -> bool:
    return self.dtype.startswith(("float", "bfloat"))


@dataclasses.dataclass
class Module:
  """One parsed module: its text, `@main`'s signature, its partitioning."""

  path: str
  text: str
  operands: list[TensorType]
  results: list[TensorType]
  result_names: list[str]
  num_partitions: int
  num_replicas: int
  vocab_sizes: list[int]   # V of each gshard composite
  printed: str = ""        # the module as MLIR prints it, without locations

  @property
  def shardy(self) -> bool | None:
    """Shardy annotations (True), GSPMD ones (False), or none (None)."""
    if "sdy.mesh" in self.text or "sdy.sharding" in self.text:
      return True
    return False if "mhlo.sharding" in self.text else None


def partition_count(text: str) -> int:
  """`mhlo.num_partitions` of a module's text, without parsing it (1 if absent)."""
  m = _PARTITIONS.search(text)
  return int(m.group(1)) if m else 1


def _ranked(t):
  """`t` as an `ir.RankedTensorType`, or None."""
  from jaxlib.mlir import ir
  try:
    return ir.RankedTensorType(t)
  except ValueError:
    return None


def _tensor_type(t, where: str) -> TensorType:
  rt = _ranked(t)
  if rt is None or not rt.has_static_shape:
    raise UsageError(f"{where} has type {t}; only statically shaped tensors can be fed and "
                     "compared")
  element = str(rt.element_type)
  if element not in _ELEMENT_TYPES:
    raise UsageError(f"{where} has element type {element}, which {PROG} does not handle")
  return TensorType(text=str(t), shape=tuple(rt.shape), dtype=_ELEMENT_TYPES[element])


def parse(path: str, text: str) -> Module:
  """Parses `text` (read from `path`) in jax's MLIR context and reads `@main`."""
  from jaxlib.mlir import ir
  from gshard_op.passes import composites
  from gshard_op.passes.framework import make_context
  with make_context():
    try:
      module = ir.Module.parse(text)
    except ir.MLIRError as e:
      raise UsageError(f"cannot parse {path}: {e}") from None
    main = None
    for op in module.body.operations:
      if (op.operation.name == "func.func"
          and ir.StringAttr(op.attributes["sym_name"]).value == "main"):
        main = op.operation
    if main is None:
      raise UsageError(f"{path} has no @main function")
    ftype = ir.FunctionType(ir.TypeAttr(main.attributes["function_type"]).value)
    operands = [_tensor_type(t, f"{path}: operand #{i}") for i, t in enumerate(ftype.inputs)]
    results = [_tensor_type(t, f"{path}: result #{i}") for i, t in enumerate(ftype.results)]
    names = []
    res_attrs = ir.ArrayAttr(main.attributes["res_attrs"]) if "res_attrs" in main.attributes else []
    for i in range(len(results)):
      name = f"#{i}"
      if i < len(res_attrs):
        attrs = ir.DictAttr(res_attrs[i])
        if "jax.result_info" in attrs:
          name += f" {ir.StringAttr(attrs['jax.result_info']).value}"
      names.append(name)
    embeddings = [op.operands[1] for op in composites.find(module.operation)
                  if len(op.operands) > 1]
    vocab = [_ranked(e.type).shape[0] for e in embeddings if _ranked(e.type) is not None]
    printed = module.operation.get_asm()
  replicas = _REPLICAS.search(text)
  return Module(path=path, text=text, operands=operands, results=results, result_names=names,
                num_partitions=partition_count(text),
                num_replicas=int(replicas.group(1)) if replicas else 1, vocab_sizes=vocab,
                printed=printed)


def check_signatures(a: Module, b: Module) -> None:
  """Raises `UsageError` naming the first operand or result whose type differs."""
  for kind, xs, ys in (("operand", a.operands, b.operands), ("result", a.results, b.results)):
    if len(xs) != len(ys):
      raise UsageError(f"{a.path} and {b.path} have different signatures: {len(xs)} vs "
                       f"{len(ys)} {kind}s")
    for i, (x, y) in enumerate(zip(xs, ys)):
      if x != y:
        raise UsageError(f"{a.path} and {b.path} have different signatures: {kind} #{i} is "
                         f"{x.text} vs {y.text}")


# --- inputs -----------------------------------------------------------------------

def id_bound(modules: Sequence[Module]) -> int:
  """The default bound of integer inputs: see the module docstring."""
  vocab = [v for m in modules for v in m.vocab_sizes]
  if vocab:
    return min(vocab)
  dims = [d for t in modules[0].operands if t.is_float for d in t.shape if d > 1]
  return min(dims) if dims else 2


def random_inputs(types: Sequence[TensorType], seed: int, bound: int,
                  scale: float = 1.0) -> list[np.ndarray]:
  """Seeded inputs of the given types, drawn in operand order."""
  rng = np.random.default_rng(seed)
  arrays = []
  for t in types:
    if t.is_float:
      a = scale * rng.standard_normal(t.shape)
    elif t.dtype == "bool":
      a = rng.integers(0, 2, t.shape).astype(bool)
    else:
      a = rng.integers(0, bound, t.shape)
    arrays.append(np.asarray(a).astype(t.np_dtype))
  return arrays


def load_inputs(path: str, types: Sequence[TensorType]) -> list[np.ndarray]:
  """The arrays of a `.npz`, in the file's order, checked against `types`."""
  try:
    with np.load(path) as f:
      arrays = [f[name] for name in f.files]
  except (OSError, ValueError) as e:
    raise UsageError(f"cannot read inputs '{path}': {e}") from None
  if len(arrays) != len(types):
    raise UsageError(f"'{path}' holds {len(arrays)} arrays; the module takes {len(types)} operands")
  out = []
  for i, (a, t) in enumerate(zip(arrays, types)):
    same_kind = (np.issubdtype(a.dtype, np.floating) or a.dtype.kind == "V") == t.is_float
    if a.shape != t.shape or not same_kind:
      raise UsageError(f"'{path}': array #{i} is {a.dtype}{list(a.shape)}; operand #{i} is {t.text}")
    out.append(a.astype(t.np_dtype))
  return out


def describe_inputs(types: Sequence[TensorType], bound: int) -> str:
  kinds = []
  for t in types:
    what = ("normal" if t.is_float else "bits" if t.dtype == "bool" else f"in [0, {bound})")
    kinds.append(f"{t.text} {what}")
  return ", ".join(kinds) or "none"


# --- running ----------------------------------------------------------------------

def execute(module: Module, inputs: Sequence[np.ndarray], platform: str = "cpu") -> list[np.ndarray]:
  """Compiles `module` for its partitions on `platform` and runs it on `inputs`."""
  import jax
  from jax.extend.backend import get_backend, get_compile_options
  # jaxlib's own client: the device list compile_and_load takes.
  from jaxlib import xla_client as xc
  # No public sharding wraps an executable's HloSharding to place arrays by it.
  from gshard_op._private.jax_sharding import from_hlo_sharding

  backend = get_backend(platform)
  if module.num_replicas != 1:
    raise UsageError(f"{module.path}: mhlo.num_replicas = {module.num_replicas}; only 1 is supported")
  count = module.num_partitions
  devices = backend.local_devices()[:count]
  if len(devices) < count:
    raise UsageError(f"{module.path} needs {count} devices, {platform} has {len(devices)}"
                     + (f" (XLA_FLAGS=--xla_force_host_platform_device_count={count})"
                        if platform == "cpu" else ""))
  options = get_compile_options(num_replicas=1, num_partitions=count,
                                         device_assignment=np.array(devices).reshape(1, count),
                                         backend=backend)
  if module.shardy is not None:
    options.executable_build_options.use_shardy_partitioner = module.shardy
  try:
    exe = backend.compile_and_load(module.text, xc.DeviceList(tuple(devices)), options)
  except Exception as e:  # XlaRuntimeError: the message is XLA's
    raise UsageError(f"cannot compile {module.path}: {e}") from None
  if count == 1:
    results = exe.execute([jax.device_put(a, devices[0]) for a in inputs])
    return [np.asarray(r) for r in results]
  args = [jax.device_put(a, from_hlo_sharding(devices, s))
          for a, s in zip(inputs, exe.get_parameter_shardings())]
  shards = exe.execute_sharded(args).disassemble_into_single_device_arrays()
  return [np.asarray(jax.make_array_from_single_device_arrays(
              t.shape, from_hlo_sharding(devices, s), pieces))
          for t, s, pieces in zip(module.results, exe.get_output_shardings(), shards)]


# --- comparing --------------------------------------------------------------------

@dataclasses.dataclass
class Comparison:
  """How one result of the second module differs from the first's."""

  name: str
  type: TensorType
  ok: bool
  max_abs: float = 0.0
  max_rel: float = 0.0
  mismatches: int = 0   # integer / boolean elements that differ, or NaNs out of place
  note: str = ""

  def row(self) -> str:
    if self.type.is_float:
      errors = f"{self.max_abs:<12.3g} {self.max_rel:<12.3g}"
    else:
      errors = f"{f'{self.mismatches} of {max(1, int(np.prod(self.type.shape)))} differ':<25}"
    verdict = "ok" if self.ok else "FAIL"
    return f"{self.name:<24} {self.type.text:<26} {errors} {verdict}{self.note}"


def compare(name: str, t: TensorType, expected: np.ndarray, actual: np.ndarray, *,
            rtol: float, atol: float) -> Comparison:
  """Compares one result; see the module docstring for the criterion."""
  if not t.is_float:
    differ = (expected != actual).reshape(-1)
    mismatches = int(np.count_nonzero(differ))
    note = ""
    if mismatches:
      k = int(np.argmax(differ))
      where = [int(i) for i in np.unravel_index(k, expected.shape)] if expected.shape else []
      note = f"  (first at {where}: {expected.reshape(-1)[k]} vs {actual.reshape(-1)[k]})"
    return Comparison(name, t, ok=mismatches == 0, mismatches=mismatches, note=note)
  a = expected.astype(np.float64)
  b = actual.astype(np.float64)
  nan_a, nan_b = np.isnan(a), np.isnan(b)
  misplaced = int(np.count_nonzero(nan_a != nan_b))
  same = (a == b) | (nan_a & nan_b)  # equal infinities too
  with np.errstate(invalid="ignore"):  # inf - inf where `same` already decided
    diff = np.where(same, 0.0, np.abs(a - b))
  diff = np.where(np.isnan(diff), np.inf, diff)
  finite = np.abs(a[np.isfinite(a)])
  scale = float(finite.max()) if finite.size else 0.0
  max_abs = float(diff.max()) if diff.size else 0.0
  max_rel = max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf"))
  ok = misplaced == 0 and max_abs <= atol + rtol * scale
  note = f"  ({misplaced} NaNs out of place)" if misplaced else ""
  return Comparison(name, t, ok=ok, max_abs=max_abs, max_rel=max_rel, mismatches=misplaced,
                    note=note)


def summarise(name: str, t: TensorType, value: np.ndarray) -> str:
  v = value.astype(np.float64) if value.size else np.zeros(1)
  return (f"{name:<24} {t.text:<26} min {v.min():<11.4g} max {v.max():<11.4g} "
          f"mean {v.mean():.4g}")


# --- the command line -------------------------------------------------------------

def _arg_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=PROG, description=(
      "Run one StableHLO module, or two on the same inputs and compare their results."),
      epilog="Exit status: 0 results agree, 1 a result differs, 2 bad usage, module or inputs.")
  p.add_argument("modules", nargs="+", metavar="MODULE.mlir",
                 help="one module to run, or the reference and the module to check "
                      "('-' reads one of them from stdin)")
  p.add_argument("--rtol", type=float, default=1e-5,
                 help="allowed max|a - b| relative to max|a| per float result (default 1e-5)")
  p.add_argument("--atol", type=float, default=0.0, help="allowed absolute error (default 0)")
  p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
  p.add_argument("--scale", type=float, default=1.0, help="std of float inputs (default 1)")
  p.add_argument("--id-bound", type=int, metavar="B",
                 help="integer inputs in [0, B) (default: the gshard composites' vocabulary)")
  p.add_argument("--inputs", metavar="FILE.npz", help="take the inputs from a .npz file")
  p.add_argument("--save-inputs", metavar="FILE.npz", help="write the inputs used to a .npz file")
  p.add_argument("--save-outputs", metavar="FILE.npz",
                 help="write the results of the last module to a .npz file")
  p.add_argument("--platform", default="cpu", help="XLA backend to compile for (default cpu)")
  return p


def _ensure_host_devices(count: int) -> None:
  """Asks for `count` host CPU devices unless the backend has started or the
  environment already says how many (`jax_num_cpu_devices`, or the XLA flag)."""
  import jax
  # No public way to ask whether the backends are up without starting them.
  from gshard_op._private.jax_backend import backends_started
  flags = os.environ.get("XLA_FLAGS", "")
  if (count > 1 and not backends_started()
      and "xla_force_host_platform_device_count" not in flags
      and jax.config.jax_num_cpu_devices < 0):
    jax.config.update("jax_num_cpu_devices", count)


def run(args) -> int:
  if len(args.modules) > 2:
    raise UsageError(f"expected one or two modules, got {len(args.modules)}")
  if args.modules.count("-") > 1:
    raise UsageError("only one module can come from stdin ('-')")
  texts = [("<stdin>" if path == "-" else path, read_input(path)) for path in args.modules]
  if args.platform == "cpu":
    _ensure_host_devices(max(partition_count(text) for _, text in texts))
  modules = [parse(path, text) for path, text in texts]
  if len(modules) == 2:
    check_signatures(*modules)
    if modules[0].printed == modules[1].printed:
      print(f"{PROG}: warning: {modules[0].path} and {modules[1].path} are the same program "
            "(did the passes rewrite anything? gshard-opt warns when they did not); the "
            "comparison below shows nothing", file=sys.stderr)
  first = modules[0]
  bound = args.id_bound if args.id_bound is not None else id_bound(modules)
  if bound < 1:
    raise UsageError(f"--id-bound must be at least 1, got {bound}")
  if args.inputs:
    inputs = load_inputs(args.inputs, first.operands)
    print(f"{PROG}: inputs from {args.inputs}")
  else:
    inputs = random_inputs(first.operands, args.seed, bound, args.scale)
    print(f"{PROG}: inputs (seed {args.seed}): {describe_inputs(first.operands, bound)}")
  if args.save_inputs:
    np.savez(args.save_inputs, **{f"arg{i}": a for i, a in enumerate(inputs)})
  outputs = [execute(m, inputs, args.platform) for m in modules]
  if args.save_outputs:
    np.savez(args.save_outputs, **{f"result{i}": r for i, r in enumerate(outputs[-1])})
  if len(modules) == 1:
    print(f"{PROG}: {first.path} on {first.num_partitions} {args.platform} device(s)")
    for name, t, value in zip(first.result_names, first.results, outputs[0]):
      print(summarise(name, t, value))
    return EXIT_OK
  before, after = modules
  print(f"{PROG}: {before.path} ({before.num_partitions} device(s)) vs {after.path} "
        f"({after.num_partitions}), rtol {args.rtol:g}, atol {args.atol:g}")
  print(f"{'result':<24} {'type':<26} {'max abs err':<12} {'max rel err':<12}")
  failed = []
  for name, t, a, b in zip(before.result_names, before.results, *outputs):
    c = compare(name, t, a, b, rtol=args.rtol, atol=args.atol)
    print(c.row())
    if not c.ok:
      failed.append(name)
  if failed:
    print(f"{PROG}: {len(failed)} of {len(before.results)} results differ: {', '.join(failed)}")
    return EXIT_MISMATCH
  print(f"{PROG}: all {len(before.results)} results agree")
  return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
  """The console script; returns the exit status."""
  parser = _arg_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # --help, or argparse's own usage error (status 2)
    return e.code if isinstance(e.code, int) else EXIT_OK
  try:
    return run(args)
  except UsageError as e:
    sys.stdout.flush()
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
  sys.exit(main())
