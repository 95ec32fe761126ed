"""tools/device_check.py's checks: the accelerator-marked tests, and every
route's loss and gradients against the dense reference (built, run and checked
with tools/bench.py's programs, tools/bench_measure.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import traceback

import jax
import jax.numpy as jnp

import aot_targets
import bench_measure
from bench_modes import CHUNK, CLEANUP, FUSE, TOLERANCE
from gshard_op.passes.pipelines import default_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISION = {"float32": "highest", "bfloat16": "default"}
PYTEST_TIMEOUT_S = 240


def log(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


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
      "fused": f"{FUSE},{CHUNK},{CLEANUP}",
      "pallas": pallas_pipeline(kernel_platform, pallas_options),
  }


def build_plain(cand: bench_measure.Candidate, args) -> None:
  """`bench_measure.build` for plain `jax.jit` of the functional op (the
  primitive's own lowering rule: the chunked loops, DESIGN.md section 7)."""
  t0 = time.perf_counter()
  lowered = jax.jit(bench_measure.loss_and_grads("composite")).lower(*args)
  cand.plans = sorted(set(bench_measure.PLAN_RE.findall(lowered.as_text())))
  cand.compiled = lowered.compile()
  cand.compile_s = time.perf_counter() - t0
  stats = cand.compiled.memory_analysis()
  cand.temp_bytes = None if stats is None else int(stats.temp_size_in_bytes)


def check_routes(shape, dtype_name: str, routes: dict[str, str | None], deadline: float) -> list:
  """Each route's loss and gradients against the dense reference on the same
  inputs (`bench_measure.check`: largest error relative to the reference's
  largest value, `TOLERANCE` per dtype)."""
  args = bench_measure.make_inputs(*shape, jnp.dtype(dtype_name))
  precision = PRECISION[dtype_name]
  rows = []
  with jax.default_matmul_precision(precision):
    dense = bench_measure.Candidate("dense", "dense", None, 3, None)
    bench_measure.build(dense, args)
    ref, _ = bench_measure.run_once(dense, args)
    for name, pipeline in routes.items():
      cand = bench_measure.Candidate(name, "passes", pipeline, None, None)
      row = {"route": name, "shape": list(shape), "dtype": dtype_name, "precision": precision,
             "pipeline": pipeline, "tolerance": TOLERANCE[dtype_name]}
      if out_of_time(deadline):
        rows.append({**row, "ok": None, "error": "skipped: out of time"})
        continue
      log(f"  route {name:<10} {dtype_name}")
      try:
        (build_plain if pipeline is None else bench_measure.build)(cand, args)
        out, seconds = bench_measure.run_once(cand, args)
        bench_measure.check(cand, out, ref, dtype_name)
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
