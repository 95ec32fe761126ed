#!/usr/bin/env python3
"""Benchmark: the shared embedding softmax's training step, dense XLA vs. the passes.

For each shape N x M x V (tokens x features x classes), in one process, times
`value_and_grad` of the mean loss (`avg_xent`) w.r.t. the inputs and the
embedding under:

  dense   plain `jax.jit` of the dense reference (`implementation="reference"`);
  lean    the leanest thing a user writes instead: `logits = (x * M**-0.5) @ E.T`,
          `optax.softmax_cross_entropy_with_integer_labels(logits, ids).mean()`;
  floor   the three matmuls alone (logits = x @ E.T materialised,
          dx = dlogits @ E, dE = dlogits.T @ x), what no implementation beats;
  <mode>  `gshard_op.jit` with each pipeline of `MODES` (the table below).

Rounds are interleaved (each round runs every candidate once, after a warm-up
run that also supplies the outputs checked against dense); the median is
reported, with `compiled.memory_analysis().temp_size_in_bytes`.

  python tools/bench.py                          # default shapes for the backend
  python tools/bench.py --shapes 2048x512x32768 --dtype bfloat16 --repeats 3
  python tools/bench.py --modes speed,memory --pipeline 'c1k=gshard-chunk-softmax{vocab-chunk=1024}'
  python tools/bench.py --quick                  # tiny shape (tests)
  python tools/bench.py --torch --shapes 2048x512x32768   # PyTorch rows (below)

Writes `bench.json` (every number, jax version, device) and `bench.png` to --out.
Exits 1 when a mode fails to build or its loss/gradients differ from dense.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)  # the bench_*.py modules beside this file

import jax  # noqa: E402
import jaxlib  # noqa: E402

from gshard_op import passes  # noqa: E402

from bench_measure import bench_shapes  # noqa: E402  (the programs, timing, checks)
from bench_modes import DEFAULT_SHAPES, MODES, QUICK, TORCH_SHAPES, Mode  # noqa: E402
from bench_report import failures, write_outputs  # noqa: E402  (tables, plot, bench.json)
from bench_torch import torch_main, torch_memory_worker  # noqa: E402  (--torch)


# --- command line --------------------------------------------------------------

def parse_shapes(text: str) -> list[tuple[int, int, int]]:
  shapes = []
  for item in text.split(","):
    parts = item.strip().lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
      raise argparse.ArgumentTypeError(f"shape must be NxMxV, got {item!r}")
    shapes.append(tuple(int(p) for p in parts))
  return shapes


def select_modes(names: str | None, extra: list[str]) -> list[Mode]:
  """`MODES` (all, or those named in --modes), then the --pipeline extras."""
  modes = list(MODES)
  if names:
    wanted = [x.strip() for x in names.split(",") if x.strip()]
    known = {md.name: md for md in MODES}
    unknown = [w for w in wanted if w not in known]
    if unknown:
      raise SystemExit(f"unknown mode(s) {unknown}; known: {sorted(known)}")
    modes = [known[w] for w in wanted]
  for item in extra:
    name, sep, pipeline = item.partition("=")
    if not sep or not name or not pipeline:
      raise SystemExit(f"--pipeline wants NAME=PIPELINE, got {item!r}")
    modes.append(Mode(name, pipeline))
  return modes


def parse_args(argv):
  """The options, the backend's defaults filled in: `(args, shapes, dtype name, repeats)`."""
  backend = jax.default_backend()
  shapes_default, dtype_default, repeats_default = DEFAULT_SHAPES.get(backend, DEFAULT_SHAPES["cpu"])
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--shapes", type=parse_shapes, default=None,
                  help=f"NxMxV,... (default on {backend}: {shapes_default})")
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                  help=f"input dtype (default on {backend}: {dtype_default})")
  ap.add_argument("--repeats", type=int, default=None,
                  help=f"timed rounds after the warm-up (default {repeats_default})")
  ap.add_argument("--out", default="out/bench", help="folder for bench.json and bench.png")
  ap.add_argument("--modes", default=None,
                  help=f"comma-separated subset of {[md.name for md in MODES]} "
                       "(dense, lean and floor always run)")
  ap.add_argument("--pipeline", action="append", default=[], metavar="NAME=PIPELINE",
                  help="an extra mode (repeatable)")
  ap.add_argument("--quick", action="store_true", help=f"tiny run: {QUICK[0]}, {QUICK[1]} rounds")
  ap.add_argument("--no-plot", action="store_true")
  ap.add_argument("--torch", action="store_true",
                  help="PyTorch: torch eager, torch.compile, torch's chunked "
                       "F.linear_cross_entropy (eager and compiled), gshard_op.torch and "
                       "both runtimes' three-matmul floors (time and peak resident "
                       f"memory; default shape {TORCH_SHAPES}); writes bench_torch.json")
  ap.add_argument("--torch-memory", metavar="MODE", help=argparse.SUPPRESS)  # the worker
  args = ap.parse_args(argv)

  if args.quick:
    shapes_default = QUICK[0]
  elif args.torch or args.torch_memory:
    shapes_default = TORCH_SHAPES
  shapes = args.shapes or parse_shapes(shapes_default)
  repeats = args.repeats or (QUICK[1] if args.quick else repeats_default)
  return args, shapes, args.dtype or dtype_default, repeats


def checked_modes(names: str | None, extra: list[str]) -> list[Mode]:
  """`select_modes`, each pipeline parsed: a typo fails here, before any compile."""
  modes = select_modes(names, extra)
  for md in modes:
    try:
      passes.parse_pipeline(md.pipeline)
    except passes.PipelineError as e:
      raise SystemExit(f"mode {md.name!r}: {e}") from None
  return modes


def main(argv=None) -> int:
  args, shapes, dtype_name, repeats = parse_args(argv)
  if args.torch_memory:
    return torch_memory_worker(args.torch_memory, shapes[0], dtype_name)
  if args.torch:
    return torch_main(shapes, dtype_name, repeats, args.out)
  modes = checked_modes(args.modes, args.pipeline)

  backend, device = jax.default_backend(), jax.devices()[0]
  load_start = os.getloadavg()
  print(f"jax {jax.__version__} on {backend} ({device.device_kind}, {os.cpu_count()} CPUs, "
        f"load average {load_start[0]:.1f}); "
        f"dtype {dtype_name}; {repeats} interleaved rounds after 1 warm-up; "
        f"modes {[md.name for md in modes]}")
  t0 = time.perf_counter()
  results = bench_shapes(shapes, dtype_name, repeats, modes)
  wall = time.perf_counter() - t0

  summary = {
      "jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
      "backend": backend, "device_kind": device.device_kind, "cpu_count": os.cpu_count(),
      "platform": platform.platform(), "dtype": dtype_name, "repeats": repeats,
      "shapes": [list(s) for s in shapes],
      "modes": [dataclasses.asdict(md) for md in modes],
      "registered_passes": sorted(passes.REGISTRY), "wall_s": round(wall, 1),
      # Other work on the machine skews the times (not the memory): 1-minute loads.
      "load_average": {"start": load_start[0], "end": os.getloadavg()[0]},
      "results": results,
  }
  written = write_outputs(args.out, summary, plot_it=not args.no_plot)
  print(f"\nwrote {written} ({wall:.0f} s; load average {load_start[0]:.1f} -> "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
  if bad := failures(results):
    print(f"FAILED: {bad}")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
