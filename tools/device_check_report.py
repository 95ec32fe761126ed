"""tools/device_check.py's table (`device_check.md`) and its verdict."""

from __future__ import annotations

from bench_report import fmt_mib

UNMEASURED = "unmeasured: no accelerator"


# --- the table ------------------------------------------------------------------------------

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
            f"| {fmt_mib(r['temp_bytes'])} | {fmt_mib(r['step_peak_bytes'])} "
            f"| {fmt_mib(r['peak_bytes'])} "
            f"| {'yes' if kernels else 'no'} |")
    lines.append("")
  verdict = "all checks passed" if report["ok"] else "FAILED: " + "; ".join(report["failures"])
  lines += [f"Result: {verdict} ({report['wall_s']:.0f} s).", ""]
  return "\n".join(lines)


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
