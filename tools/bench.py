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
import functools
import json
import os
import platform
import re
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jaxlib  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gshard_op  # noqa: E402
from gshard_op import passes  # noqa: E402
from gshard_op.functional import shared_embedding_softmax  # noqa: E402
from gshard_op.passes.pipelines import default_pipeline  # noqa: E402

MIB = 2**20
CLEANUP = "canonicalize,cse"
FUSE = "gshard-fuse-fwd-bwd"
CHUNK = "gshard-chunk-softmax"


@dataclasses.dataclass(frozen=True)
class Mode:
  """One `gshard_op.jit` configuration.

  matmuls: `[N, M] x [M, V]`-sized matmuls the step performs (for TFLOP/s);
    None: read it off the rewritten IR's `gshard.plan` tags (4 when the
    gradient recomputes the logits, 3 when fused or dense).
  tol: the largest relative error accepted against dense (None: per dtype).
  entropy: the loss adds the mean `per_example_entropy` (`with_entropy=True`),
    checked against dense XLA's same loss; its temp against the mode without.
  """
  name: str
  pipeline: str
  matmuls: int | None = None
  tol: float | None = None
  entropy: bool = False


# --- the modes: one line each --------------------------------------------------
# gshard-chunk-softmax after the fuse pass rewrites whatever it left alone.
MODES = [
    Mode("speed", default_pipeline()),                          # what gshard_op.jit runs
    Mode("memory", f"{CHUNK}{{memory-budget-mib=4}},{CLEANUP}"),  # recompute, small chunks
    Mode("fused", f"{FUSE},{CHUNK},{CLEANUP}"),  # the fuse pass's own defaults
    Mode("fused-bf16acc", f"{FUSE}{{accumulate-bf16=true}},{CHUNK},{CLEANUP}", tol=5e-2),
    Mode("fused-4mib", f"{FUSE}{{memory-budget-mib=4}},{CHUNK},{CLEANUP}"),
    # The default pipeline on `avg_xent + mean(per_example_entropy)` (issue 23):
    # its temp against speed's is what asking for the entropy costs.
    Mode("speed+entropy", default_pipeline(), entropy=True),
]
# gshard-shard-vocab only acts on an embedding sharded over a mesh of several
# devices; on one device the default pipeline (speed) runs it as a no-op.

# Relative error accepted against dense, per input dtype.
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}

DEFAULT_SHAPES = {
    # 3 rounds keep the CPU default near 5 minutes on 2 cores (7 candidates x 2 shapes).
    "cpu": ("2048x512x32768,4096x256x32768", "float32", 3),
    "gpu": ("8192x2304x256000,8192x4096x128256", "bfloat16", 10),
}
QUICK = ("256x64x3000", 1)  # V not a power of two: partial last chunks
TORCH_SHAPES = "2048x512x32768"  # --torch's default, in the input dtype's default (float32 on CPU)

PLAN_RE = re.compile(r'gshard\.plan = "([^"]*)"')


# --- the programs --------------------------------------------------------------

def make_inputs(n: int, m: int, v: int, dtype, seed: int = 0):
  kx, ke, ki = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (n, m), jnp.float32).astype(dtype)
  embedding = jax.random.normal(ke, (v, m), jnp.float32).astype(dtype)
  ids = jax.random.randint(ki, (n,), 0, v, jnp.int32)
  weights = jnp.ones((n, 1), jnp.float32)
  return x, embedding, ids, weights


def loss_and_grads(implementation: str, with_entropy: bool = False):
  def loss(x, embedding, ids, weights):
    out = shared_embedding_softmax(x, embedding, weights, ids[:, None],
                                   implementation=implementation, with_entropy=with_entropy)
    if with_entropy:
      return out.avg_xent + jnp.mean(out.per_example_entropy)
    return out.avg_xent

  def step(x, embedding, ids, weights):
    return jax.value_and_grad(loss, argnums=(0, 1))(x, embedding, ids, weights)
  return step


def floor_step(x, embedding, ids, weights):
  """The three matmuls of the step with the logits materialised; `dlogits` is
  an elementwise function of the logits so none of them can be skipped."""
  del ids
  logits = jnp.dot(x, embedding.T, preferred_element_type=jnp.float32)
  dlogits = (logits * weights).astype(x.dtype)
  d_x = jnp.dot(dlogits, embedding, preferred_element_type=jnp.float32).astype(x.dtype)
  d_emb = jnp.dot(dlogits.T, x, preferred_element_type=jnp.float32).astype(embedding.dtype)
  return d_x, d_emb


def lean_step(x, embedding, ids, weights):
  """The dense loss as a user writes it without the op: logits, optax's
  integer-label cross-entropy, the mean (the weights are all ones here, so
  this is `avg_xent`); value and gradients w.r.t. inputs and embedding."""
  del weights

  def loss(x, embedding):
    logits = ((x * x.shape[-1] ** -0.5) @ embedding.T).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, ids).mean()
  return jax.value_and_grad(loss, argnums=(0, 1))(x, embedding)


@dataclasses.dataclass
class Candidate:
  name: str
  kind: str            # "dense", "lean", "floor" or "passes"
  pipeline: str | None
  matmuls: int
  tol: float | None
  compiled: object = None
  compile_s: float = 0.0
  temp_bytes: int | None = None
  plans: list = dataclasses.field(default_factory=list)
  times: list = dataclasses.field(default_factory=list)
  error: str | None = None
  errors: dict = dataclasses.field(default_factory=dict)  # output -> rel error
  ok: bool | None = None
  entropy: bool = False

  def median_ms(self):
    return statistics.median(self.times) * 1e3 if self.times else None


def plan_matmuls(plans: list[str]) -> int:
  names = {p.split(":", 1)[0].strip() for p in plans}
  if FUSE in names:
    return 3
  if names:
    return 4
  return 3


def build(cand: Candidate, args) -> None:
  t0 = time.perf_counter()
  if cand.kind == "dense":
    lowered = jax.jit(loss_and_grads("reference")).lower(*args)
  elif cand.kind == "lean":
    lowered = jax.jit(lean_step).lower(*args)
  elif cand.kind == "floor":
    lowered = jax.jit(floor_step).lower(*args)
  else:
    lowered = gshard_op.jit(loss_and_grads("composite", cand.entropy),
                            pipeline=cand.pipeline).lower(*args)
    cand.plans = sorted(set(PLAN_RE.findall(lowered.as_text())))
    if cand.matmuls is None:
      cand.matmuls = plan_matmuls(cand.plans)
  cand.compiled = lowered.compile()
  cand.compile_s = time.perf_counter() - t0
  stats = cand.compiled.memory_analysis()
  cand.temp_bytes = None if stats is None else int(stats.temp_size_in_bytes)


def run_once(cand: Candidate, args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(cand.compiled(*args))
  return out, time.perf_counter() - t0


def rel_error(actual, expected) -> float:
  a = np.asarray(actual, np.float64)
  e = np.asarray(expected, np.float64)
  scale = max(float(np.max(np.abs(e))), 1e-30)
  return float(np.max(np.abs(a - e))) / scale


def check(cand: Candidate, out, ref, dtype_name: str) -> None:
  (loss, (d_x, d_emb)), (ref_loss, (ref_d_x, ref_d_emb)) = out, ref
  cand.errors = {"loss": rel_error(loss, ref_loss), "d_x": rel_error(d_x, ref_d_x),
                 "d_embedding": rel_error(d_emb, ref_d_emb)}
  tol = cand.tol if cand.tol is not None else TOLERANCE.get(dtype_name, 3e-2)
  cand.ok = all(np.isfinite(e) and e <= tol for e in cand.errors.values())


# --- one shape ---------------------------------------------------------------------

def log(text, end="\n"):
  """Progress, on stderr (the tables go to stdout)."""
  print(text, end=end, file=sys.stderr, flush=True)


def bench_shape(shape, dtype, repeats: int, modes: list[Mode], log) -> dict:
  n, m, v = shape
  dtype_name = jnp.dtype(dtype).name
  args = make_inputs(n, m, v, dtype)
  cands = [Candidate("dense", "dense", None, 3, None),
           Candidate("lean", "lean", None, 3, None),
           Candidate("floor", "floor", None, 3, None)]
  cands += [Candidate(md.name, "passes", md.pipeline, md.matmuls, md.tol, entropy=md.entropy)
            for md in modes]

  for c in cands:
    log(f"  compile {c.name:<14}", end="")
    try:
      build(c, args)
      log(f" {c.compile_s:6.1f} s  temp {fmt_mib(c.temp_bytes)} MiB")
    except Exception as e:  # a broken mode is reported, the others still run
      c.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
      log(f" FAILED: {c.error}")
      traceback.print_exc(limit=3, file=sys.stderr)
  live = [c for c in cands if c.error is None]

  # Warm-up: one run each; the outputs are checked against dense, then dropped.
  ref = None
  for c in live:
    out, _ = run_once(c, args)
    if c.kind == "dense":
      ref = out
    elif c.entropy:  # against dense XLA's loss with the entropy (computed once, not timed)
      check(c, out, jax.jit(loss_and_grads("reference", True))(*args), dtype_name)
    elif c.kind in ("passes", "lean") and ref is not None:
      check(c, out, ref, dtype_name)
    del out
  ref = None

  for r in range(repeats):
    log(f"\r  round {r + 1}/{repeats}", end="")
    shift = r % len(live)  # rotate the order so no candidate always runs first
    for c in live[shift:] + live[:shift]:
      _, dt = run_once(c, args)
      c.times.append(dt)
  log("")
  return report_shape(shape, dtype_name, cands)


def fmt_mib(b) -> str:
  return "-" if b is None else f"{b / MIB:.1f}"


def report_shape(shape, dtype_name, cands) -> dict:
  n, m, v = shape
  by = {c.name: c for c in cands}
  dense, lean, floor = by["dense"], by["lean"], by["floor"]
  rows = []
  for c in cands:
    row = {"mode": c.name, "kind": c.kind, "pipeline": c.pipeline, "plans": c.plans,
           "matmuls": c.matmuls, "error": c.error, "compile_s": round(c.compile_s, 3),
           "times_ms": [round(t * 1e3, 3) for t in c.times], "median_ms": c.median_ms(),
           "temp_bytes": c.temp_bytes, "max_rel_error": c.errors or None,
           "correct": c.ok}
    med = c.median_ms()
    if med:
      row["ratio_to_dense"] = med / dense.median_ms() if dense.median_ms() else None
      row["ratio_to_floor"] = med / floor.median_ms() if floor.median_ms() else None
      row["ratio_to_lean"] = med / lean.median_ms() if lean.median_ms() else None
      row["tflops"] = 2 * c.matmuls * n * m * v / (med * 1e-3) / 1e12
    if c.temp_bytes and dense.temp_bytes:
      row["dense_over_temp"] = dense.temp_bytes / c.temp_bytes
    if c.temp_bytes and lean.temp_bytes:
      row["lean_over_temp"] = lean.temp_bytes / c.temp_bytes
    rows.append(row)
  return {"shape": {"N": n, "M": m, "V": v}, "dtype": dtype_name, "rows": rows}


def print_table(result: dict) -> None:
  s = result["shape"]
  print(f"\n{s['N']} x {s['M']} x {s['V']} {result['dtype']}  (N tokens x M features x V classes;"
        " ratios of medians; mm: matmuls counted for TFLOP/s)")
  head = (f"{'mode':<14} {'median ms':>10} {'min ms':>9} {'x dense':>8} {'x lean':>7} "
          f"{'x floor':>8} {'TFLOP/s':>8} "
          f"{'mm':>3} {'temp MiB':>9} {'dense/ours':>10} {'max rel err':>11}  check")
  print(head)
  print("-" * len(head))
  for r in result["rows"]:
    if r["error"]:
      print(f"{r['mode']:<14} FAILED to build: {r['error']}")
      continue
    err = max(r["max_rel_error"].values()) if r["max_rel_error"] else None
    check_text = {None: "", True: "ok", False: "FAIL"}[r["correct"]]
    print(f"{r['mode']:<14} {r['median_ms']:>10.1f} {min(r['times_ms']):>9.1f} "
          f"{r['ratio_to_dense']:>8.3f} {r['ratio_to_lean']:>7.3f} "
          f"{r['ratio_to_floor']:>8.3f} {r['tflops']:>8.3f} {r['matmuls']:>3} "
          f"{fmt_mib(r['temp_bytes']):>9} "
          f"{r.get('dense_over_temp', float('nan')):>9.1f}x "
          f"{'-' if err is None else f'{err:.1e}':>11}  {check_text}")
  for r in result["rows"]:
    if r["kind"] == "passes":
      print(f"  {r['mode']}: {r['pipeline']}")
      for p in r["plans"]:
        print(f"      plan  {p}")


def plot(results: list[dict], path: str) -> bool:
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("matplotlib is not installed: no plot (pip install -e '.[tools]')", file=sys.stderr)
    return False
  fig, axes = plt.subplots(len(results), 2, figsize=(12, 3.6 * len(results)), squeeze=False)
  for (ax_t, ax_m), res in zip(axes, results):
    rows = [r for r in res["rows"] if not r["error"]]
    names = [r["mode"] for r in rows]
    colors = ["tab:gray" if r["kind"] in ("dense", "lean") else "tab:olive" if r["kind"] == "floor"
              else "tab:blue" for r in rows]
    s = res["shape"]
    title = f"{s['N']}x{s['M']}x{s['V']} {res['dtype']}"
    ax_t.bar(names, [r["median_ms"] for r in rows], color=colors)
    ax_t.bar_label(ax_t.containers[0], fmt="%.0f", fontsize=8)
    if floor := next((r for r in rows if r["kind"] == "floor"), None):
      ax_t.axhline(floor["median_ms"], color="tab:olive", linestyle="--", linewidth=1)
    ax_t.set_ylabel("median ms (lower is better)")
    ax_t.set_title(f"time, {title}")
    mem = [max((r["temp_bytes"] or 0) / MIB, 1e-3) for r in rows]
    ax_m.bar(names, mem, color=colors)
    ax_m.bar_label(ax_m.containers[0], fmt="%.1f", fontsize=8)
    ax_m.set_yscale("log")
    ax_m.set_ylim(top=max(mem) * 3)  # room for the labels
    ax_m.set_ylabel("temp MiB (log)")
    ax_m.set_title(f"temp memory, {title}")
    for ax in (ax_t, ax_m):
      ax.tick_params(axis="x", labelrotation=30)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


# --- --torch: the PyTorch op against torch's own steps ------------------------------
#
# Each checked row runs `loss.backward()` of the mean cross-entropy w.r.t. the
# inputs and the embedding, on torch tensors, and is checked equal to torch
# eager (loss and both gradients) before it is timed; the floors are the three
# matmuls alone, on each side, to show how far each runtime's CPU matmul is
# from the other's. Time: medians of interleaved rounds in this process.
# Memory: the peak resident set of one step above the resident set before it,
# each row in a fresh process after a warm-up step (VmHWM reset through
# /proc/self/clear_refs), so that every allocator (torch's, XLA's) counts the
# same way.


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
  cmd = [sys.executable, os.path.abspath(__file__), "--torch-memory", name,
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


def bench_shapes(shapes, dtype_name: str, repeats: int, modes: list[Mode]) -> list[dict]:
  """Every shape's results, each table printed as soon as it is measured."""
  results = []
  for shape in shapes:
    log(f"{'x'.join(map(str, shape))} {dtype_name}")
    res = bench_shape(shape, jnp.dtype(dtype_name), repeats, modes, log)
    results.append(res)
    print_table(res)
  return results


def write_outputs(out_dir: str, summary: dict, plot_it: bool) -> str:
  """Writes bench.json (and bench.png); returns what was written, in words."""
  os.makedirs(out_dir, exist_ok=True)
  json_path = os.path.join(out_dir, "bench.json")
  with open(json_path, "w") as f:
    json.dump(summary, f, indent=1)
  png_path = os.path.join(out_dir, "bench.png")
  wrote_png = plot_it and plot(summary["results"], png_path)
  return json_path + (f" and {png_path}" if wrote_png else "")


def failures(results: list[dict]) -> list:
  """`(shape, mode)` of every row that failed to build or to match dense."""
  return [(res["shape"], r["mode"]) for res in results for r in res["rows"]
          if r["error"] or r["correct"] is False]


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
