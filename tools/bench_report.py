"""tools/bench.py's reporting: the rows of a shape, its table, the plot, bench.json."""

from __future__ import annotations

import json
import os
import sys

MIB = 2**20


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
