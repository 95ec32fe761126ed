#!/usr/bin/env python3
"""One command for a lent GPU or TPU: the checks that need the device, in minutes.

On a machine with an accelerator (JAX's default backend is "gpu" or "tpu"):

  1. the accelerator-marked tests (`pytest -m accelerator tests`);
  2. every route against the dense reference (`implementation="reference"`)
     at a medium shape, bfloat16 and float32 (float32 under
     `jax.default_matmul_precision("highest")`, so that the reference is
     exact float32): plain `jax.jit` of the functional op, `gshard_op.jit`'s
     default pipeline, the fused pipeline (`gshard-fuse-fwd-bwd`) and the
     Pallas kernels (`gshard-pallas`), each with the loss and both gradients;
  3. the benchmark at both anchor shapes of DESIGN.md section 5 in bfloat16
     (tools/bench.py's programs): the routes tools/aot_check.py compiles
     ahead of time for the same chip (tools/aot_targets.py: the dense
     reference, plain `jax.jit`, `gshard_op.jit`'s default, the Pallas kernels
     named by hand), the three-matmul floor and the XLA passes without kernels;
     median time, XLA's temp memory, and the peak device memory of each
     candidate (`device.memory_stats()`, each in a fresh process, so that one
     candidate's peak is its own).

Without one it says so, runs the same route checks at a small shape with the
kernels in Pallas's interpreter (a width that is no power of two, features in
clamped blocks), and exits 0; the device's sections of the JSON are marked
`"unmeasured: no accelerator"`.

The anchor shapes and the routes come from tools/aot_targets.py, the list
tools/aot_check.py compiles, and the JSON names the matrix target the device
is (`accelerator.matrix_target`): the day a GPU or TPU is lent, one call times
what the matrix compiled.

Writes one table (stdout and `device_check.md`) and one JSON file
(`device_check.json`) to --out (default `out/device_check` in the checkout,
which git ignores). Exits 1 when a check fails, a candidate fails to build, or
the accelerator tests fail.

  python tools/device_check.py
  python tools/device_check.py --out /tmp/dc --budget-s 420
  python tools/device_check.py --shapes 4096x2304x65536   # a smaller device
"""

from __future__ import annotations

import os
import sys

# Before JAX starts: JAX reserves 75% of a GPU's memory by default, which makes
# every candidate's peak the same (DESIGN.md section 8).
os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform as platform_module  # noqa: E402
import time  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jaxlib  # noqa: E402

import aot_targets  # noqa: E402  (tools/aot_targets.py: the AOT matrix's targets, shapes, routes)
import bench  # noqa: E402  (tools/bench.py: its shapes' syntax)
from device_check_bench import bench_candidates, bench_worker, benchmark  # noqa: E402
from device_check_report import UNMEASURED, failures_of, markdown  # noqa: E402
from device_check_runs import (  # noqa: E402
    accelerator_tests, check_routes, log, route_pipelines)
from gshard_op.passes.pipelines import PALLAS_PLATFORMS  # noqa: E402

# What tests/test_device_check.py reads off this module (the tool's pieces
# live in the device_check_*.py modules beside it).
__all__ = ["ANCHOR_SHAPES", "aot_targets", "bench", "bench_candidates", "benchmark",
           "failures_of", "main", "markdown", "skipped"]

ACCELERATORS = {"gpu": "cuda", "tpu": "tpu"}  # JAX backend -> jax.export platform

# DESIGN.md section 5's anchor shapes (N x M x V), in bfloat16: the AOT matrix's.
ANCHOR_SHAPES = ",".join("x".join(map(str, s)) for s in aot_targets.ANCHOR_SHAPES.values())
# The routes' medium shape: no dimension a multiple of the kernels' blocks, so
# every loop of every kernel has a clamped last block.
ROUTE_SHAPE = (2000, 1000, 32003)
# Without an accelerator: the kernels in Pallas's interpreter, at a width that
# is no power of two, with features in blocks that do not divide it.
INTERPRET_SHAPE = (48, 320, 1000)
INTERPRET_BLOCKS = "block-tokens=32 block-vocab=256 block-features=128 block-grad-features=256"


def unmeasured() -> dict:
  return {"status": "unmeasured", "note": UNMEASURED, "results": None}


def skipped(why: str) -> dict:
  return {"status": "skipped", "note": why, "results": None}


def positive_seconds(text: str) -> float:
  """--budget-s: a positive finite number of seconds (0, negative, nan and
  inf would skip every check, or run without a deadline)."""
  try:
    seconds = float(text)
  except ValueError:
    seconds = math.nan
  if not (math.isfinite(seconds) and seconds > 0):
    raise argparse.ArgumentTypeError(f"must be a positive finite number of seconds, got {text!r}")
  return seconds


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", default=os.path.join(REPO, "out", "device_check"),
                  help="folder for device_check.json and device_check.md (default: %(default)s)")
  ap.add_argument("--budget-s", type=positive_seconds, default=420.0,
                  help="wall-clock budget: steps that would start after it are skipped "
                       "(default %(default)s)")
  ap.add_argument("--repeats", type=int, default=5, help="timed runs per candidate after a warm-up")
  ap.add_argument("--shapes", type=bench.parse_shapes, default=None,
                  help=f"benchmark shapes NxMxV,... (default {ANCHOR_SHAPES})")
  ap.add_argument("--no-tests", action="store_true", help="skip `pytest -m accelerator`")
  ap.add_argument("--bench-worker", metavar="JSON", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.repeats < 1:
    ap.error("--repeats must be >= 1")
  if args.bench_worker:
    return bench_worker(json.loads(args.bench_worker))

  t0 = time.monotonic()
  deadline = t0 + args.budget_s
  backend = jax.default_backend()
  device = jax.devices()[0]
  kernel_platform = ACCELERATORS.get(backend)
  present = kernel_platform is not None and kernel_platform in PALLAS_PLATFORMS
  report = {
      "tool": "tools/device_check.py",
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "accelerator": {"present": present, "backend": backend, "device_kind": device.device_kind,
                      "device_count": jax.device_count(),
                      "matrix_target": aot_targets.target_of_device_kind(device.device_kind)
                      if present else None,
                      "note": None if present else UNMEASURED},
      "environment": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                      "python": platform_module.python_version(),
                      "platform": platform_module.platform(), "cpu_count": os.cpu_count(),
                      "XLA_PYTHON_CLIENT_PREALLOCATE":
                          os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")},
  }
  if present:
    print(f"accelerator: {device.device_kind} ({backend}, {jax.device_count()} devices); "
          f"budget {args.budget_s:.0f} s", flush=True)
    report["interpret_checks"] = skipped("the kernels run natively on the accelerator")
    report["accelerator_tests"] = (skipped("--no-tests") if args.no_tests
                                   else accelerator_tests(deadline))
    log("routes")
    report["routes"] = {"status": "measured", "note": None, "results": [
        row for dtype_name in ("bfloat16", "float32")
        for row in check_routes(ROUTE_SHAPE, dtype_name, route_pipelines(kernel_platform),
                                deadline)]}
    log("benchmark")
    shapes = args.shapes or bench.parse_shapes(ANCHOR_SHAPES)
    report["benchmark"] = {"status": "measured", "note": None,
                           "results": benchmark(shapes, kernel_platform, args.repeats, deadline)}
  else:
    print(f"No accelerator: JAX's default backend is {backend} ({device.device_kind}). "
          f"Running the Pallas kernels in interpret mode only; the GPU/TPU sections of the "
          f"JSON are marked '{UNMEASURED}'.", flush=True)
    # Every route, as on a device, at a small shape: the kernels interpreted.
    routes = route_pipelines("interpret", INTERPRET_BLOCKS)
    report["interpret_checks"] = {"status": "measured", "note": None, "results": [
        row for dtype_name in ("float32", "bfloat16")
        for row in check_routes(INTERPRET_SHAPE, dtype_name, routes, deadline)]}
    report["accelerator_tests"] = unmeasured()
    report["routes"] = unmeasured()
    report["benchmark"] = unmeasured()

  report["wall_s"] = round(time.monotonic() - t0, 1)
  report["failures"] = failures_of(report)
  report["ok"] = not report["failures"]
  os.makedirs(args.out, exist_ok=True)
  json_path = os.path.join(args.out, "device_check.json")
  md_path = os.path.join(args.out, "device_check.md")
  with open(json_path, "w") as f:
    json.dump(report, f, indent=1)
  table = markdown(report)
  with open(md_path, "w") as f:
    f.write(table)
  print(table)
  print(f"wrote {json_path} and {md_path}")
  return 0 if report["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
