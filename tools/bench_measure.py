"""tools/bench.py's measuring: the programs, their builds, timing and checks.

Each candidate of a shape is compiled once, run once as a warm-up (its outputs
checked against dense), then timed in interleaved rounds. tools/device_check.py
builds, runs and checks its routes with the same functions.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gshard_op
from gshard_op.functional import shared_embedding_softmax

from bench_modes import FUSE, TOLERANCE, Mode
from bench_report import fmt_mib, print_table, report_shape

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


def bench_shapes(shapes, dtype_name: str, repeats: int, modes: list[Mode]) -> list[dict]:
  """Every shape's results, each table printed as soon as it is measured."""
  results = []
  for shape in shapes:
    log(f"{'x'.join(map(str, shape))} {dtype_name}")
    res = bench_shape(shape, jnp.dtype(dtype_name), repeats, modes, log)
    results.append(res)
    print_table(res)
  return results
