"""tools/bench.py --torch: the PyTorch op against torch's own steps.

Each checked row runs `loss.backward()` of the mean cross-entropy w.r.t. the
inputs and the embedding, on torch tensors, and is checked equal to torch
eager (loss and both gradients) before it is timed; the floors are the three
matmuls alone, on each side, to show how far each runtime's CPU matmul is
from the other's. Time: medians of interleaved rounds in this process.
Memory: the peak resident set of one step above the resident set before it,
each row in a fresh process after a warm-up step (VmHWM reset through
/proc/self/clear_refs), so that every allocator (torch's, XLA's) counts the
same way.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_measure import floor_step, log, rel_error
from bench_modes import TOLERANCE
from bench_report import fmt_mib

# The command line whose hidden --torch-memory runs `torch_memory_worker`.
BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py")


@dataclasses.dataclass(frozen=True)
class TorchRow:
  """One row of the --torch table: its name, what it runs, and whether it is
  checked against torch eager (the floors compute no loss)."""
  name: str
  means: str
  checked: bool = True


TORCH_ROWS = (
    TorchRow("torch eager", "F.cross_entropy(F.linear(x * M**-0.5, E), y), eager autograd"),
    TorchRow("torch.compile", "the same under torch.compile(fullgraph=True), inductor"),
    TorchRow("torch chunked", "F.linear_cross_entropy(x * M**-0.5, E, y, "
                              "options=LinearCrossEntropyOptions()), eager"),
    TorchRow("compile chunked", "torch.compile(fullgraph=True) of torch chunked: torch falls "
                                "back to eager at the chunked op"),
    TorchRow("gshard_op.torch", "gshard_op.torch.cross_entropy(x, E, y): the op, its fused "
                                "gradient"),
    TorchRow("torch floor", "the three matmuls alone in torch (logits materialised)", False),
    TorchRow("jax floor", "the same three matmuls under jax.jit (the JAX table's floor)", False),
)
TORCH_CANDIDATES = tuple(row.name for row in TORCH_ROWS)


def torch_loss_fns(in_features: int, names) -> dict:
  """The checked rows' losses, `(x, E, y) -> scalar`."""
  import torch
  import torch.nn.functional as F

  import gshard_op.torch as gt

  scale = in_features**-0.5

  def dense(x, embedding, ids):
    return F.cross_entropy(F.linear(x * scale, embedding), ids)

  def chunked_with(options):
    def chunked(x, embedding, ids):
      return F.linear_cross_entropy(x * scale, embedding, ids, options=options)
    return chunked

  def ours(x, embedding, ids):
    return gt.cross_entropy(x, embedding, ids)

  makers = {
      "torch eager": lambda: dense,
      "torch.compile": lambda: torch.compile(dense, fullgraph=True),
      "torch chunked": lambda: chunked_with(torch.nn.LinearCrossEntropyOptions()),
      # Under torch.compile the chunked op wants allow_retain_graph=True (it
      # warns and forces it otherwise, and the warning breaks fullgraph).
      "compile chunked": lambda: torch.compile(
          chunked_with(torch.nn.LinearCrossEntropyOptions(allow_retain_graph=True)),
          fullgraph=True),
      "gshard_op.torch": lambda: ours,
  }
  return {name: makers[name]() for name in names}


def torch_inputs(n: int, m: int, v: int, dtype_name: str, seed: int = 0):
  import torch
  g = torch.Generator().manual_seed(seed)
  dtype = getattr(torch, dtype_name)
  x = torch.randn((n, m), generator=g).to(dtype)
  embedding = torch.randn((v, m), generator=g).to(dtype)
  return x, embedding, torch.randint(0, v, (n,), generator=g)


def torch_step(loss_fn, x, embedding, ids):
  """`(loss, d_x, d_embedding)` of one forward and backward."""
  x, embedding = x.detach().requires_grad_(), embedding.detach().requires_grad_()
  loss = loss_fn(x, embedding, ids)
  loss.backward()
  return loss.detach(), x.grad, embedding.grad


def torch_floor_step(x, embedding, ids):
  """`floor_step` in torch: the three matmuls, `dlogits` elementwise in the logits."""
  import torch
  del ids
  with torch.no_grad():
    logits = x @ embedding.T
    dlogits = logits * torch.ones((x.shape[0], 1), dtype=x.dtype)
    return None, dlogits @ embedding, dlogits.T @ x


def torch_steps(shape, names, args) -> dict:
  """`{name: () -> (loss | None, d_x, d_embedding)}` on the torch inputs `args`;
  the JAX floor gets them as JAX arrays, compiled beforehand."""
  steps = {name: functools.partial(torch_step, fn, *args)
           for name, fn in torch_loss_fns(shape[1], [n for n in names if "floor" not in n]).items()}
  if "torch floor" in names:
    steps["torch floor"] = functools.partial(torch_floor_step, *args)
  if "jax floor" in names:
    x, embedding, ids = (jnp.asarray(t.numpy()) for t in args)
    jax_args = (x, embedding, ids.astype(jnp.int32), jnp.ones((x.shape[0], 1), jnp.float32))
    compiled = jax.jit(floor_step).lower(*jax_args).compile()
    steps["jax floor"] = lambda: (None, *jax.block_until_ready(compiled(*jax_args)))
  return {name: steps[name] for name in names}


def _proc_status_kib(key: str) -> int:
  with open("/proc/self/status") as f:
    return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1))


def torch_memory_worker(name: str, shape, dtype_name: str) -> int:
  """Prints `{"peak_rss_bytes": ...}`: one step's peak resident set above the one before."""
  import gc
  step = torch_steps(shape, (name,), torch_inputs(*shape, dtype_name))[name]
  step()  # compiles
  gc.collect()
  before = _proc_status_kib("VmRSS")
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current resident set
  out = step()
  peak = _proc_status_kib("VmHWM")
  del out
  print(json.dumps({"peak_rss_bytes": (peak - before) * 1024}))
  return 0


def torch_peak_rss(name: str, shape, dtype_name: str) -> int | None:
  import subprocess
  cmd = [sys.executable, BENCH, "--torch-memory", name,
         "--shapes", "x".join(map(str, shape)), "--dtype", dtype_name]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    print(f"  memory of {name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None
  return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_bytes"]


def _as_numpy(t):
  return np.asarray(t.float().numpy() if hasattr(t, "numpy") else t, np.float64)


def torch_bench_shape(shape, dtype_name: str, repeats: int, log) -> dict:
  import torch
  n, m, v = shape
  steps = torch_steps(shape, TORCH_CANDIDATES, torch_inputs(n, m, v, dtype_name))
  rows = {row.name: {"mode": row.name, "means": row.means, "checked": row.checked,
                     "times_ms": [], "max_rel_error": None, "correct": None}
          for row in TORCH_ROWS}
  ref = None
  for row in TORCH_ROWS:  # warm-up (compiles); the checked rows against eager
    log(f"  warm-up {row.name:<16}", end="")
    t0 = time.perf_counter()
    out = steps[row.name]()
    rows[row.name]["first_call_s"] = round(time.perf_counter() - t0, 2)
    log(f" {rows[row.name]['first_call_s']:6.1f} s")
    if not row.checked:
      continue
    out = [_as_numpy(t) for t in out]
    if ref is None:
      ref = out
    errors = {k: rel_error(a, b) for k, a, b in zip(("loss", "d_x", "d_embedding"), out, ref)}
    rows[row.name]["max_rel_error"] = errors
    rows[row.name]["correct"] = all(np.isfinite(e) and e <= TOLERANCE.get(dtype_name, 3e-2)
                                    for e in errors.values())
  del ref, out
  names = list(TORCH_CANDIDATES)
  for r in range(repeats):
    log(f"\r  round {r + 1}/{repeats}", end="")
    for name in names[r % len(names):] + names[:r % len(names)]:
      t0 = time.perf_counter()
      steps[name]()
      rows[name]["times_ms"].append((time.perf_counter() - t0) * 1e3)
  log("")
  for name in names:
    log(f"  memory  {name}")
    rows[name]["peak_rss_bytes"] = torch_peak_rss(name, shape, dtype_name)
  eager = rows["torch eager"]
  for row in rows.values():
    row["median_ms"] = statistics.median(row["times_ms"])
    row["ratio_to_eager"] = row["median_ms"] / statistics.median(eager["times_ms"])
    if row["peak_rss_bytes"] and eager["peak_rss_bytes"]:
      row["eager_over_peak"] = eager["peak_rss_bytes"] / row["peak_rss_bytes"]
  return {"shape": {"N": n, "M": m, "V": v}, "dtype": dtype_name, "torch": torch.__version__,
          "threads": torch.get_num_threads(), "rows": list(rows.values())}


def print_torch_table(result: dict) -> None:
  s = result["shape"]
  print(f"\n{s['N']} x {s['M']} x {s['V']} {result['dtype']}, torch {result['torch']} "
        f"({result['threads']} threads): loss.backward() of the mean cross-entropy")
  head = (f"{'mode':<16} {'median ms':>10} {'min ms':>9} {'x eager':>8} {'peak MiB':>9} "
          f"{'eager/ours':>10} {'max rel err':>11}  check")
  print(head)
  print("-" * len(head))
  for r in result["rows"]:
    err = max(r["max_rel_error"].values()) if r["max_rel_error"] else None
    check = {True: "ok", False: "FAIL", None: "(floor)"}[r["correct"]]
    print(f"{r['mode']:<16} {r['median_ms']:>10.1f} {min(r['times_ms']):>9.1f} "
          f"{r['ratio_to_eager']:>8.3f} {fmt_mib(r['peak_rss_bytes']):>9} "
          f"{r.get('eager_over_peak', float('nan')):>9.1f}x "
          f"{'-' if err is None else f'{err:.1e}':>11}  {check}")
  for r in result["rows"]:
    print(f"  {r['mode']}: {r['means']}")


def torch_main(shapes, dtype_name: str, repeats: int, out_dir: str) -> int:
  import torch

  print(f"torch {torch.__version__}, jax {jax.__version__} on {jax.default_backend()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; dtype {dtype_name}; "
        f"{repeats} interleaved rounds after 1 warm-up")
  results = []
  for shape in shapes:
    log(f"{'x'.join(map(str, shape))} {dtype_name}")
    res = torch_bench_shape(shape, dtype_name, repeats, log)
    results.append(res)
    print_torch_table(res)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "bench_torch.json")
  with open(path, "w") as f:
    json.dump({"platform": platform.platform(), "cpu_count": os.cpu_count(),
               "jax_version": jax.__version__, "results": results}, f, indent=1)
  print(f"\nwrote {path}")
  bad = [(res["shape"], r["mode"]) for res in results for r in res["rows"]
         if r["checked"] and not r["correct"]]
  if bad:
    print(f"FAILED: {bad}")
    return 1
  return 0
