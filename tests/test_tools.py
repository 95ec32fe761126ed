"""The demo and the benchmark run end to end (their --quick forms, in subprocesses)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(*args: str) -> subprocess.CompletedProcess:
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, (f"{args} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
                                f"\n--- stderr\n{proc.stderr[-4000:]}")
  return proc


def test_demo_quick():
  out = run_tool("tools/demo.py", "--quick").stdout
  # The IR before and after the pipeline.
  assert 'stablehlo.composite "gshard.shared_embedding_softmax"' in out
  assert 'stablehlo.composite "gshard.shared_embedding_softmax_grad"' in out
  assert re.search(r"stablehlo\.while\(.*gshard\.plan = ", out)
  assert "0 composites left" in out
  # Memory of the three compilations, the loss curve, and the verdict.
  for route in (r"nnx\.jit, dense reference", r"nnx\.jit, the op \(chunked lowering\)",
                r"gshard_op\.nnx_jit \(passes\)"):
    assert re.search(route + r" *: +[\d.]+ MiB", out), route
  assert "gshard-fuse-fwd-bwd" in out  # the step is the fused sweep
  assert "loss curve" in out and "held-out loss" in out
  assert out.rstrip().endswith("demo: OK")


def test_bench_quick(tmp_path):
  out = run_tool("tools/bench.py", "--quick", "--out", str(tmp_path)).stdout
  for mode in ("dense", "lean", "floor", "speed", "memory"):
    assert re.search(rf"^{mode} +[\d.]+ ", out, re.M), f"no row for {mode}:\n{out}"
  assert re.search(r"^speed .* ok$", out, re.M) and re.search(r"^memory .* ok$", out, re.M)
  assert "FAIL" not in out
  with open(tmp_path / "bench.json") as f:
    summary = json.load(f)
  assert summary["jax_version"] and summary["device_kind"] and summary["dtype"] == "float32"
  (result,) = summary["results"]
  rows = {r["mode"]: r for r in result["rows"]}
  assert {"dense", "lean", "floor", "speed", "memory"} <= set(rows)
  for name, row in rows.items():
    assert row["median_ms"] > 0 and row["temp_bytes"] is not None, name
    assert row["ratio_to_lean"] > 0, name
    if row["kind"] == "passes":
      assert row["correct"] and row["plans"], name
  # The lean baseline (optax's cross-entropy) computes the same loss and gradients.
  assert rows["lean"]["correct"], rows["lean"]["max_rel_error"]
  assert (tmp_path / "bench.png").stat().st_size > 0


def test_command_line_wrappers_run_from_a_bare_checkout(tmp_path):
  """`tools/gshard-opt` and `tools/gshard-run` run this checkout's code without
  an install: `python -S` skips the `.pth` files, the editable install's among
  them, so only the dependencies are importable (through PYTHONPATH)."""
  import sysconfig
  env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
  probe = subprocess.run([sys.executable, "-S", "-c", "import gshard_op"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
  assert probe.returncode != 0, "gshard_op importable without the checkout: not a bare run"
  for tool, expected in (("gshard-opt", "gshard-chunk-softmax"), ("gshard-run", "usage")):
    args = ["--list-passes"] if tool == "gshard-opt" else ["--help"]
    proc = subprocess.run([sys.executable, "-S", os.path.join(ROOT, "tools", tool), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout, proc.stdout[-2000:]
