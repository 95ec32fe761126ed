#!/usr/bin/env python3
"""Compile every route for TPUs and NVIDIA GPUs from a host without them.

For each target, shape and route of tools/aot_targets.py, compiles
`jax.value_and_grad` of `avg_xent` with respect to the inputs and the
embedding for the target's compile-only devices (DESIGN.md section 9: the
chip's real compiler runs, Mosaic and Triton kernels included; the arguments
are abstract, so an anchor shape costs no memory) and records, per device:

  status     "compiled", or "error" with the compiler's own first lines
  temp, argument, output MiB   `compiled.memory_analysis()`
  kernels    Pallas kernels in the compiled program (`tpu_custom_call`, or
             `__gpu$xla.gpu.triton` custom calls)
  V gathers  all-gathers whose result has a dimension of V (the [V, M]
             embedding or its gradient gathered onto every device)
  pipeline   what `gshard_op.jit` ran, and the passes' declines

One compile failing never stops the rest. Prints a table and writes JSON
(--out). Needs the compiler plugins (`make aot-check` installs them in
.venv-aot) and JAX_PLATFORMS=cpu, which this script sets if unset.

  python tools/aot_check.py --list
  python tools/aot_check.py --targets tpu-v5e,h100 --shapes small --routes jit,pallas
  python tools/aot_check.py --out out/aot_check/aot_check.json
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import aot_targets  # noqa: E402
import gshard_op  # noqa: E402
from gshard_op.passes.module_pass import reporting_declines  # noqa: E402

MIB = 2**20
ERROR_LINES = 4
ERROR_CHARS = 600
KERNEL_TARGETS = ("tpu_custom_call", "__gpu$xla.gpu.triton")
PLAN_RE = re.compile(r'gshard\.plan = "([^"]*)"')
# An HLO instruction: `name = <result shapes> all-gather[-start](...`.
ALL_GATHER_RE = re.compile(r"=\s*(.*?)\s+all-gather(?:-start)?\(")
SHAPE_RE = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")


def step(implementation: str):
  """value_and_grad of avg_xent wrt inputs and embedding (ids and weights are data)."""
  def loss(x, embedding, ids, weights):
    return gshard_op.shared_embedding_softmax(
        x, embedding, weights, ids[:, None], implementation=implementation).avg_xent

  def value_and_grads(x, embedding, ids, weights):
    return jax.value_and_grad(loss, argnums=(0, 1))(x, embedding, ids, weights)
  return value_and_grads


def abstract_args(shape, dtype, devices, mesh: bool):
  """ShapeDtypeStructs of (x, embedding, ids, weights) on `devices`: one
  chip, or the 2 x 4 mesh with tokens on one axis and the vocabulary on the other."""
  n, m, v = shape
  if mesh:
    grid = Mesh(np.array(devices).reshape(aot_targets.MESH_SHAPE), aot_targets.MESH_AXES)
    tokens, vocab = aot_targets.MESH_AXES
    specs = (P(tokens, None), P(vocab, None), P(tokens), P(tokens, None))
  else:
    grid = Mesh(np.array(devices[:1]), ("chip",))
    specs = (P(),) * 4
  shapes = (((n, m), dtype), ((v, m), dtype), ((n,), jnp.int32), ((n, 1), jnp.float32))
  return tuple(jax.ShapeDtypeStruct(s, d, sharding=NamedSharding(grid, spec))
               for (s, d), spec in zip(shapes, specs))


def first_lines(e: BaseException) -> str:
  text = f"{type(e).__name__}: {e}"
  lines = [x for x in text.splitlines() if x.strip()][:ERROR_LINES]
  text = "\n".join(lines)
  return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + " ..."


def count_kernels(text: str) -> int:
  return sum(text.count(f'custom_call_target="{t}"') for t in KERNEL_TARGETS) or sum(
      text.count(f"@{t}") + text.count(f'@"{t}"') for t in KERNEL_TARGETS)


def v_all_gathers(hlo: str, v: int) -> list[str]:
  """The all-gathers of `hlo` whose result has a dimension of size `v`."""
  found = []
  for line in hlo.splitlines():
    match = ALL_GATHER_RE.search(line)
    if not match:
      continue
    dims = [int(d) for shape in SHAPE_RE.findall(match.group(1)) for d in shape.split(",") if d]
    if v in dims:
      found.append(line.strip()[:200])
  return found


def compile_one(target: aot_targets.Target, shape, dtype, route: aot_targets.Route) -> dict:
  """One compile, as a JSON row; any failure becomes the row's error."""
  row = {"target": target.name, "platform": target.platform,
         "topology": target.mesh_topology if route.mesh else target.topology,
         "shape": list(shape), "dtype": jnp.dtype(dtype).name, "route": route.name,
         "devices": target.devices if route.mesh else 1}
  declines: list[str] = []
  t0 = time.perf_counter()
  stage = "devices"
  try:
    devices = aot_targets.compile_only_devices(target, mesh=route.mesh)
    args = abstract_args(shape, dtype, devices, route.mesh)
    stage = "lower"
    if route.kind == "reference":
      fn = jax.jit(step("reference"))
    elif route.kind == "jit":
      fn = jax.jit(step("composite"))
    else:
      pipeline = route.pipeline_for(target.platform)
      fn = gshard_op.jit(step("composite"), **({} if pipeline is None else
                                               {"pipeline": pipeline}))
    with reporting_declines(declines.append):
      lowered = fn.lower(*args)
    lowered_text = lowered.as_text()
    row["pipeline"] = getattr(lowered, "pipeline", None)
    row["plans"] = sorted(set(PLAN_RE.findall(lowered_text)))
    row["declines"] = declines
    stage = "compile"
    compiled = lowered.compile()
    hlo = compiled.as_text() or ""
    stats = compiled.memory_analysis()
    row.update(
        status="compiled",
        temp_mib=None if stats is None else stats.temp_size_in_bytes / MIB,
        argument_mib=None if stats is None else stats.argument_size_in_bytes / MIB,
        output_mib=None if stats is None else stats.output_size_in_bytes / MIB,
        kernels=count_kernels(hlo) if hlo else count_kernels(lowered_text),
        kernels_counted_in="compiled" if hlo else "lowered",
        v_all_gathers=len(gathers := v_all_gathers(hlo, shape[2])),
        v_all_gather_ops=gathers)
  except aot_targets.ToolchainMissing as e:
    row.update(status="missing toolchain", error=str(e))
  except Exception as e:  # the compiler's own error is the finding
    row.update(status="error", stage=stage, error=first_lines(e),
               error_type=f"{type(e).__module__}.{type(e).__qualname__}", declines=declines)
    logging.getLogger("aot_check").debug("%s", traceback.format_exc())
  row["seconds"] = round(time.perf_counter() - t0, 2)
  return row


def runs(targets, shapes, routes):
  """(target, shape name, route) in order; mesh routes only on mesh targets."""
  for t in targets:
    target = aot_targets.TARGETS[t]
    for s in shapes:
      for r in routes:
        route = aot_targets.ROUTES[r]
        if route.mesh and target.mesh_topology is None:
          continue
        yield target, s, route


def fmt(x, digits=1) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def table(rows: list[dict]) -> str:
  lines = ["| target | shape | dtype | route | result | temp MiB | arg MiB | out MiB | kernels "
           "| V gathers | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    shape = "x".join(map(str, r["shape"]))
    if r["status"] == "compiled":
      result = "compiled"
      if r["route"] in ("pallas", "gshard_op.jit", "mesh gshard_op.jit") and r["declines"]:
        result += f" ({len(r['declines'])} declined)"
      lines.append(f"| {r['target']} | {shape} | {r['dtype']} | {r['route']} | {result} "
                   f"| {fmt(r['temp_mib'])} | {fmt(r['argument_mib'])} "
                   f"| {fmt(r['output_mib'])} | {r['kernels']} | {r['v_all_gathers']} "
                   f"| {r['seconds']:.0f} |")
    else:
      error = r["error"].splitlines()[0].replace("|", "/")[:160]
      lines.append(f"| {r['target']} | {shape} | {r['dtype']} | {r['route']} "
                   f"| **{r['status']}**: {error} | | | | | | {r['seconds']:.0f} |")
  return "\n".join(lines)


def pivot(rows: list[dict]) -> str:
  """One line per (target, shape, dtype), one column per route: temp MiB per
  device, "k3" for 3 kernels, "G2" for 2 all-gathers on V, "error" (its first
  words in the JSON and the long table)."""
  routes = list(dict.fromkeys(r["route"] for r in rows))
  cells: dict[tuple, dict] = {}
  for r in rows:
    key = (r["target"], "x".join(map(str, r["shape"])), r["dtype"])
    if r["status"] != "compiled":
      cell = "refused" if r.get("stage") == "lower" else r["status"]
    else:
      cell = fmt(r["temp_mib"], 0 if r["temp_mib"] >= 10 else 1)
      cell += f" k{r['kernels']}" if r["kernels"] else ""
      cell += f" G{r['v_all_gathers']}" if r["v_all_gathers"] else ""
    cells.setdefault(key, {})[r["route"]] = cell
  lines = ["| target | shape | dtype | " + " | ".join(routes) + " |",
           "|---|---|---|" + "---|" * len(routes)]
  for (target, shape, dtype), by in cells.items():
    lines.append(f"| {target} | {shape} | {dtype} | "
                 + " | ".join(by.get(route, "") for route in routes) + " |")
  return "\n".join(lines)


def listing() -> str:
  out = ["targets (name: platform, topology, mesh topology, config):"]
  for t in aot_targets.TARGETS.values():
    absent = aot_targets.missing_toolchain(t.platform)
    out.append(f"  {t.name}: {t.platform} {t.topology} mesh={t.mesh_topology or '-'} "
               f"config={t.config or '-'}{'  [missing: ' + ', '.join(absent) + ']' if absent else ''}"
               f"{'  # ' + t.note if t.note else ''}")
  out.append("shapes (N x M x V):")
  out += [f"  {k}: {'x'.join(map(str, v))}"
          + ("  (anchor)" if k in aot_targets.ANCHOR_SHAPES else "")
          for k, v in aot_targets.SHAPES.items()]
  out.append("routes:")
  out += [f"  {r.name}: {r.kind}{' on the 2x4 mesh' if r.mesh else ''}"
          f"{' pipeline=' + r.pipeline_for('<platform>') if r.pipeline else ''}" for r in aot_targets.ROUTES.values()]
  return "\n".join(out)


def parse_args(argv):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog=__doc__.split("\n\n", 1)[1])
  ap.add_argument("--targets", default="all",
                  help="comma-separated target names, or 'all' (default); see --list")
  ap.add_argument("--shapes", default=",".join(aot_targets.ANCHOR_SHAPES) + ",small",
                  help="comma-separated shape names (see --list) or NxMxV; 'all' for every "
                       "named shape (default: %(default)s)")
  ap.add_argument("--routes", default="all",
                  help="comma-separated route names, or 'all' (default); see --list")
  ap.add_argument("--dtype", default=aot_targets.ANCHOR_DTYPE, choices=("bfloat16", "float32"),
                  help="dtype of the inputs and embedding (default %(default)s)")
  ap.add_argument("--out", default=os.path.join(REPO, "out", "aot_check", "aot_check.json"),
                  help="JSON file to write (default: %(default)s)")
  ap.add_argument("--list", action="store_true",
                  help="print the targets, shapes and routes (and missing plugins), then exit")
  args = ap.parse_args(argv)
  try:
    args.targets = aot_targets.parse_names(args.targets, aot_targets.TARGETS, "target")
    args.routes = aot_targets.parse_names(args.routes, aot_targets.ROUTES, "route")
    shapes = {}
    for name in (aot_targets.SHAPES if args.shapes == "all" else args.shapes.split(",")):
      name = name.strip()
      if name in aot_targets.SHAPES:
        shapes[name] = aot_targets.SHAPES[name]
      elif re.fullmatch(r"\d+x\d+x\d+", name) and all(int(d) > 0 for d in name.split("x")):
        shapes[name] = tuple(int(d) for d in name.split("x"))
      else:
        raise ValueError(f"unknown shape {name!r}: a name ({', '.join(aot_targets.SHAPES)}) "
                         "or NxMxV")
    args.shapes = shapes
  except ValueError as e:
    ap.error(str(e))
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.list:
    print(listing())
    return 0
  if jax.config.jax_platforms != "cpu":
    print(f"note: JAX_PLATFORMS={jax.config.jax_platforms!r}; the NVIDIA targets need 'cpu'",
          file=sys.stderr)
  t0 = time.monotonic()
  rows = []
  for target, shape_name, route in runs(args.targets, args.shapes, args.routes):
    shape = args.shapes[shape_name]
    print(f"{target.name} {shape_name} {args.dtype} {route.name} ...", file=sys.stderr,
          flush=True)
    row = compile_one(target, shape, jnp.dtype(args.dtype), route)
    print(f"  {row['status']} in {row['seconds']} s"
          + (f": temp {row['temp_mib']:.1f} MiB, {row['kernels']} kernels"
             if row["status"] == "compiled" else f": {row['error'].splitlines()[0][:200]}"),
          file=sys.stderr, flush=True)
    rows.append(row)
  report = {
      "tool": "tools/aot_check.py",
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "jax": jax.__version__, "wall_s": round(time.monotonic() - t0, 1),
      "targets": {n: dataclasses.asdict(aot_targets.TARGETS[n]) for n in args.targets},
      "shapes": {k: list(v) for k, v in args.shapes.items()},
      "routes": {n: dataclasses.asdict(aot_targets.ROUTES[n]) for n in args.routes},
      "results": rows,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  print(table(rows))
  print("\nTemp MiB per device (kN: N Pallas kernels; GN: N all-gathers on V):\n")
  print(pivot(rows))
  failed = [r for r in rows if r["status"] != "compiled"]
  print(f"\n{len(rows) - len(failed)} of {len(rows)} compiled in {report['wall_s']:.0f} s; "
        f"wrote {args.out}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
