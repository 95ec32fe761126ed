"""tools/device_check.py's benchmark: each candidate in a fresh process (the
hidden `--bench-worker` of tools/device_check.py), so that one candidate's
peak device memory is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

import aot_targets
import bench_measure
from bench_modes import CHUNK, CLEANUP
from device_check_runs import build_plain, log, out_of_time, pallas_pipeline
from gshard_op.passes.pipelines import default_pipeline

# The command line whose hidden --bench-worker runs `bench_worker`.
TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "device_check.py")
# A second Pallas configuration for the benchmark (within the cuda estimate of
# passes/pallas.py at both anchor shapes in bfloat16).
WIDE_COLUMNS = "block-tokens=16 block-vocab=16 block-grad-features=1024"
WORKER_TIMEOUT_S = 240


# --- 3. the benchmark, one candidate per process --------------------------------------------

def bench_candidates(kernel_platform: str) -> list[dict]:
  """name, kind (`bench_measure.Candidate`'s, or "plain": `jax.jit` of the op),
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
      # logit recomputes (gshard_op/kernels/bodies.py) for smaller dots. Which
      # wins is for the device to say.
      {"name": "pallas wide", "kind": "passes", "tier": 2,
       "pipeline": f"gshard-pallas{{platform={kernel_platform} {WIDE_COLUMNS}}},"
                   f"{CHUNK},{CLEANUP}"},
  ]


def bench_worker(spec: dict) -> int:
  """Runs one candidate (`--bench-worker`) and prints one JSON line: times,
  XLA's temp memory, and the device's peak memory in this process."""
  device = jax.devices()[0]
  n, m, v = spec["shape"]
  args = jax.block_until_ready(bench_measure.make_inputs(n, m, v, jnp.dtype(spec["dtype"])))
  before = device.memory_stats() or {}
  cand = bench_measure.Candidate(spec["name"], spec["kind"], spec["pipeline"],
                         None if spec["kind"] in ("passes", "plain") else 3, None)
  (build_plain if spec["kind"] == "plain" else bench_measure.build)(cand, args)
  out, first = bench_measure.run_once(cand, args)
  loss = float(out[0]) if spec["kind"] != "floor" else None
  del out
  for _ in range(spec["repeats"]):
    out, seconds = bench_measure.run_once(cand, args)
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
  cmd = [sys.executable, TOOL, "--bench-worker", json.dumps(spec)]
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
