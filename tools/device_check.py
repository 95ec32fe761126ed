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
import re  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402

import aot_targets  # noqa: E402  (tools/aot_targets.py: the AOT matrix's targets, shapes, routes)
import bench  # noqa: E402  (tools/bench.py: the programs, builds, timing, checks)
from gshard_op.passes.pipelines import PALLAS_PLATFORMS, default_pipeline  # noqa: E402

UNMEASURED = "unmeasured: no accelerator"
ACCELERATORS = {"gpu": "cuda", "tpu": "tpu"}  # JAX backend -> jax.export platform
CLEANUP = bench.CLEANUP

# DESIGN.md section 5's anchor shapes (N x M x V), in bfloat16: the AOT matrix's.
ANCHOR_SHAPES = ",".join("x".join(map(str, s)) for s in aot_targets.ANCHOR_SHAPES.values())
# The routes' medium shape: no dimension a multiple of the kernels' blocks, so
# every loop of every kernel has a clamped last block.
ROUTE_SHAPE = (2000, 1000, 32003)
# Without an accelerator: the kernels in Pallas's interpreter, at a width that
# is no power of two, with features in blocks that do not divide it.
INTERPRET_SHAPE = (48, 320, 1000)
INTERPRET_BLOCKS = "block-tokens=32 block-vocab=256 block-features=128 block-grad-features=256"
PRECISION = {"float32": "highest", "bfloat16": "default"}
# A second Pallas configuration for the benchmark (within the cuda estimate of
# passes/pallas.py at both anchor shapes in bfloat16).
WIDE_COLUMNS = "block-tokens=16 block-vocab=16 block-grad-features=1024"
WORKER_TIMEOUT_S = 240
PYTEST_TIMEOUT_S = 240


def log(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def unmeasured() -> dict:
  return {"status": "unmeasured", "note": UNMEASURED, "results": None}


def skipped(why: str) -> dict:
  return {"status": "skipped", "note": why, "results": None}


def out_of_time(deadline: float, need_s: float = 0.0) -> bool:
  return time.monotonic() + need_s > deadline


# --- 1. the accelerator-marked tests ------------------------------------------------------

def accelerator_tests(deadline: float) -> dict:
  """`pytest -m accelerator tests` in a fresh process; its summary line."""
  timeout = max(1.0, min(PYTEST_TIMEOUT_S, deadline - time.monotonic()))
  cmd = [sys.executable, "-m", "pytest", "-q", "-m", "accelerator", "-p", "no:cacheprovider",
         os.path.join(REPO, "tests")]
  log(f"accelerator tests: {' '.join(cmd[1:])}")
  t0 = time.monotonic()
  try:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired as e:
    tail = (e.stdout or "")[-3000:] if isinstance(e.stdout, str) else ""
    return {"status": "failed", "note": f"timed out after {timeout:.0f} s", "output_tail": tail,
            "results": None}
  lines = [x for x in proc.stdout.strip().splitlines() if x.strip()]
  summary = lines[-1] if lines else ""
  # pytest's exit status 5: nothing collected (no test carries the marker).
  status = "passed" if proc.returncode == 0 else "no tests" if proc.returncode == 5 else "failed"
  counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)",
                                              summary)}
  return {"status": status, "note": summary, "returncode": proc.returncode,
          "wall_s": round(time.monotonic() - t0, 1), "results": counts,
          "output_tail": proc.stdout[-3000:] if status == "failed" else None}


# --- 2. the routes against the dense reference ----------------------------------------------

def pallas_pipeline(kernel_platform: str, pallas_options: str = "") -> str:
  """The AOT matrix's Pallas route (tools/aot_targets.py), with options: it
  falls back to the chunked loops for what the kernels decline, so a decline
  shows as `kernels: no`, not as a wrong answer."""
  return aot_targets.ROUTES["pallas"].pipeline_for(kernel_platform, pallas_options)


def route_pipelines(kernel_platform: str, pallas_options: str = "") -> dict[str, str | None]:
  """route -> `gshard_op.jit` pipeline (None: plain `jax.jit`)."""
  return {
      "plain jit": None,
      "default": default_pipeline(),
      "fused": f"{bench.FUSE},{bench.CHUNK},{CLEANUP}",
      "pallas": pallas_pipeline(kernel_platform, pallas_options),
  }


def build_plain(cand: bench.Candidate, args) -> None:
  """`bench.build` for plain `jax.jit` of the functional op (the primitive's own
  lowering rule: the chunked loops, DESIGN.md section 7)."""
  t0 = time.perf_counter()
  lowered = jax.jit(bench.loss_and_grads("composite")).lower(*args)
  cand.plans = sorted(set(bench.PLAN_RE.findall(lowered.as_text())))
  cand.compiled = lowered.compile()
  cand.compile_s = time.perf_counter() - t0
  stats = cand.compiled.memory_analysis()
  cand.temp_bytes = None if stats is None else int(stats.temp_size_in_bytes)


def check_routes(shape, dtype_name: str, routes: dict[str, str | None], deadline: float) -> list:
  """Each route's loss and gradients against the dense reference on the same
  inputs (`bench.check`: largest error relative to the reference's largest
  value, `bench.TOLERANCE` per dtype)."""
  args = bench.make_inputs(*shape, jnp.dtype(dtype_name))
  precision = PRECISION[dtype_name]
  rows = []
  with jax.default_matmul_precision(precision):
    dense = bench.Candidate("dense", "dense", None, 3, None)
    bench.build(dense, args)
    ref, _ = bench.run_once(dense, args)
    for name, pipeline in routes.items():
      cand = bench.Candidate(name, "passes", pipeline, None, None)
      row = {"route": name, "shape": list(shape), "dtype": dtype_name, "precision": precision,
             "pipeline": pipeline, "tolerance": bench.TOLERANCE[dtype_name]}
      if out_of_time(deadline):
        rows.append({**row, "ok": None, "error": "skipped: out of time"})
        continue
      log(f"  route {name:<10} {dtype_name}")
      try:
        (build_plain if pipeline is None else bench.build)(cand, args)
        out, seconds = bench.run_once(cand, args)
        bench.check(cand, out, ref, dtype_name)
        del out
      except Exception as e:  # a route that does not build or run is a finding, not a crash
        cand.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        traceback.print_exc(limit=3, file=sys.stderr)
      kernels = any(p.startswith("gshard-pallas") for p in cand.plans)
      ok = cand.error is None and bool(cand.ok)
      error = cand.error
      if name == "pallas" and cand.error is None and not kernels:
        ok, error = False, "the kernels declined every composite (see the plans)"
      rows.append({**row, "plans": cand.plans, "kernels": kernels, "errors": cand.errors or None,
                   "compile_s": round(cand.compile_s, 2), "temp_bytes": cand.temp_bytes,
                   "ok": ok, "error": error})
  return rows


# --- 3. the benchmark, one candidate per process --------------------------------------------

def bench_candidates(kernel_platform: str) -> list[dict]:
  """name, kind (`bench.Candidate`'s, or "plain": `jax.jit` of the op),
  pipeline, the AOT matrix's route it times (tools/aot_targets.py; None: no
  route), and tier: every shape's tier-1 candidates run before any tier 2
  one, so that a tight budget cuts the least needed."""
  routes = aot_targets.ROUTES
  return [
      {"name": "dense", "kind": "dense", "pipeline": None, "tier": 1,
       "route": routes["reference"].name},
      {"name": "floor", "kind": "floor", "pipeline": None, "tier": 1},
      {"name": "jit", "kind": "plain", "pipeline": None, "tier": 1, "route": routes["jit"].name},
      # pipeline None: `gshard_op.jit`'s own default, as the matrix compiles it.
      {"name": "default", "kind": "passes", "pipeline": None, "tier": 1,
       "route": routes["gshard_op.jit"].name},
      {"name": "pallas", "kind": "passes", "pipeline": pallas_pipeline(kernel_platform),
       "tier": 1, "route": routes["pallas"].name},
      # The default pipeline without the kernels: what XLA alone reaches.
      {"name": "xla passes", "kind": "passes", "pipeline": default_pipeline(platform="cpu"),
       "tier": 2},
      # Small token and class blocks buy wide gradient column blocks: fewer
      # logit recomputes (passes/pallas_kernels.py) for smaller dots. Which
      # wins is for the device to say.
      {"name": "pallas wide", "kind": "passes", "tier": 2,
       "pipeline": f"gshard-pallas{{platform={kernel_platform} {WIDE_COLUMNS}}},"
                   f"{bench.CHUNK},{CLEANUP}"},
  ]


def bench_worker(spec: dict) -> int:
  """Runs one candidate (`--bench-worker`) and prints one JSON line: times,
  XLA's temp memory, and the device's peak memory in this process."""
  device = jax.devices()[0]
  n, m, v = spec["shape"]
  args = jax.block_until_ready(bench.make_inputs(n, m, v, jnp.dtype(spec["dtype"])))
  before = device.memory_stats() or {}
  cand = bench.Candidate(spec["name"], spec["kind"], spec["pipeline"],
                         None if spec["kind"] in ("passes", "plain") else 3, None)
  (build_plain if spec["kind"] == "plain" else bench.build)(cand, args)
  out, first = bench.run_once(cand, args)
  loss = float(out[0]) if spec["kind"] != "floor" else None
  del out
  for _ in range(spec["repeats"]):
    out, seconds = bench.run_once(cand, args)
    del out
    cand.times.append(seconds)
  stats = device.memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  held = before.get("bytes_in_use")
  print(json.dumps({
      "median_ms": cand.median_ms(), "times_ms": [round(t * 1e3, 3) for t in cand.times],
      "first_call_ms": round(first * 1e3, 3), "compile_s": round(cand.compile_s, 2),
      "temp_bytes": cand.temp_bytes, "peak_bytes": peak, "inputs_bytes": held,
      "step_peak_bytes": None if peak is None or held is None else peak - held,
      "plans": cand.plans, "matmuls": cand.matmuls, "loss": loss}))
  return 0


def run_worker(spec: dict, deadline: float) -> dict:
  timeout = max(1.0, min(WORKER_TIMEOUT_S, deadline - time.monotonic()))
  cmd = [sys.executable, os.path.abspath(__file__), "--bench-worker", json.dumps(spec)]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s"}
  if proc.returncode != 0:
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    return {"error": lines[-1] if lines else f"exit status {proc.returncode}",
            "stderr_tail": proc.stderr[-2000:]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def benchmark(shapes, kernel_platform: str, repeats: int, deadline: float) -> list:
  candidates = bench_candidates(kernel_platform)
  measured = {}
  for tier in sorted({c["tier"] for c in candidates}):
    for shape in shapes:
      for cand in (c for c in candidates if c["tier"] == tier):
        if out_of_time(deadline, 20):
          measured[shape, cand["name"]] = {"error": "skipped: out of time"}
          continue
        log(f"  bench {'x'.join(map(str, shape))} {cand['name']}")
        spec = {k: cand[k] for k in ("name", "kind", "pipeline")}
        spec.update(shape=list(shape), dtype="bfloat16", repeats=repeats)
        measured[shape, cand["name"]] = run_worker(spec, deadline)
  results = []
  for shape in shapes:
    rows = [{"candidate": c["name"], "route": c.get("route"), "pipeline": c["pipeline"],
             **measured[shape, c["name"]]} for c in candidates]
    by = {r["candidate"]: r for r in rows}
    for r in rows:
      for base in ("dense", "floor"):
        if r.get("median_ms") and by[base].get("median_ms"):
          r[f"ratio_to_{base}"] = r["median_ms"] / by[base]["median_ms"]
      if r.get("median_ms"):  # the step's useful work: three [N, M] x [M, V] matmuls
        n, m, v = shape
        r["useful_tflops"] = 2 * 3 * n * m * v / (r["median_ms"] * 1e-3) / 1e12
    results.append({"shape": {"N": shape[0], "M": shape[1], "V": shape[2]}, "dtype": "bfloat16",
                    "rows": rows})
  return results


# --- the table ------------------------------------------------------------------------------

def mib(b) -> str:
  return "-" if b is None else f"{b / 2**20:.1f}"


def markdown(report: dict) -> str:
  acc = report["accelerator"]
  lines = [f"# device_check: {acc['device_kind']} ({acc['backend']}), "
           f"jax {report['environment']['jax']}", ""]
  if acc.get("matrix_target"):
    lines += [f"The AOT matrix's target {acc['matrix_target']} (tools/aot_targets.py).", ""]
  if not acc["present"]:
    lines += [f"No accelerator: JAX's default backend is {acc['backend']}. The device's "
              f"sections are {UNMEASURED}.", ""]

  def routes_table(title: str, section: dict):
    lines.extend([f"## {title}", ""])
    if section["results"] is None:
      lines.extend([section["note"], ""])
      return
    lines.append("| route | shape | dtype | precision | kernels | loss err | d_x err "
                 "| d_emb err | tol | ok |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in section["results"]:
      e = r.get("errors") or {}
      err = lambda k: "-" if k not in e else f"{e[k]:.1e}"  # noqa: E731
      ok = {True: "ok", False: f"FAIL {r.get('error') or ''}".strip(), None: r.get("error") or ""}
      lines.append(f"| {r['route']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} "
                   f"| {r['precision']} | {'yes' if r.get('kernels') else 'no'} "
                   f"| {err('loss')} | {err('d_x')} | {err('d_embedding')} | {r['tolerance']:g} "
                   f"| {ok[r['ok']]} |")
    lines.append("")

  routes_table("Routes on the CPU vs the dense reference (the kernels in Pallas's "
               "interpreter)", report["interpret_checks"])
  tests = report["accelerator_tests"]
  lines += ["## Accelerator tests (`pytest -m accelerator`)", "",
            tests["note"] if tests["status"] in ("unmeasured", "skipped")
            else f"{tests['status']}: {tests['note']}", ""]
  routes_table("Routes vs the dense reference", report["routes"])
  lines += ["## Benchmark (bfloat16; value_and_grad of the mean loss)", ""]
  if report["benchmark"]["results"] is None:
    lines += [report["benchmark"]["note"], ""]
  else:
    lines.append("| shape | candidate | median ms | x dense | x floor | useful TFLOP/s | temp MiB "
                 "| step peak MiB | peak MiB | kernels |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for res in report["benchmark"]["results"]:
      s = res["shape"]
      shape = f"{s['N']}x{s['M']}x{s['V']}"
      for r in res["rows"]:
        if r.get("error"):
          lines.append(f"| {shape} | {r['candidate']} | {r['error']} | | | | | | | |")
          continue
        kernels = any(p.startswith("gshard-pallas") for p in r.get("plans") or [])
        lines.append(
            f"| {shape} | {r['candidate']} | {r['median_ms']:.1f} "
            f"| {r.get('ratio_to_dense', float('nan')):.2f} "
            f"| {r.get('ratio_to_floor', float('nan')):.2f} "
            f"| {r.get('useful_tflops', float('nan')):.0f} "
            f"| {mib(r['temp_bytes'])} | {mib(r['step_peak_bytes'])} | {mib(r['peak_bytes'])} "
            f"| {'yes' if kernels else 'no'} |")
    lines.append("")
  verdict = "all checks passed" if report["ok"] else "FAILED: " + "; ".join(report["failures"])
  lines += [f"Result: {verdict} ({report['wall_s']:.0f} s).", ""]
  return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------

def checks_run(report: dict) -> int:
  """Checks that ran to a verdict: route rows judged, benchmark candidates
  timed, the accelerator tests passed or failed (skipped ones are none)."""
  rows = [r for key in ("interpret_checks", "routes") for r in report[key]["results"] or []]
  timed = [r for res in report["benchmark"]["results"] or [] for r in res["rows"]
           if r.get("median_ms") is not None]
  return (sum(r["ok"] is not None for r in rows) + len(timed)
          + (report["accelerator_tests"]["status"] in ("passed", "failed")))


def failures_of(report: dict) -> list[str]:
  bad = []
  if not checks_run(report):
    bad.append("nothing ran: every check was skipped (is --budget-s too small?)")
  for key in ("interpret_checks", "routes"):
    for r in report[key]["results"] or []:
      if r["ok"] is False:
        why = r.get("error") or "error above tolerance"
        bad.append(f"{key}: {r['route']} {r['dtype']} ({why})")
  if report["accelerator_tests"]["status"] == "failed":
    bad.append(f"accelerator tests: {report['accelerator_tests']['note']}")
  for res in report["benchmark"]["results"] or []:
    for r in res["rows"]:
      if r.get("error") and not r["error"].startswith("skipped"):
        bad.append(f"benchmark {res['shape']} {r['candidate']}: {r['error']}")
  return bad


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
