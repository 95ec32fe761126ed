"""Every Python block of README.md runs as written, and so do its `gshard-opt` commands.

Each ```python block runs on its own, in a fresh interpreter, in an empty
temporary folder (what a reader who pastes it into a file gets): a block that
needs inputs must make them. Blocks that mention Keras get `KERAS_BACKEND=jax`,
as the README asks. The ```sh blocks of the `gshard-opt` section then run in
order, with bash, in the folder where the section's Python block wrote
`step.mlir`: a folder outside the checkout, so the plugin example must work from
anywhere and write nothing into the checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
GSHARD_OPT_SECTION = "`gshard-opt`"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
_HEADING = re.compile(r"^(#{2,3}) (.+)$", re.M)


def blocks(language: str) -> list[tuple[str, str]]:
  """`(section, code)` of each fenced block in `language`, in README order;
  the section is the `## ` heading above it."""
  with open(README, encoding="utf-8") as f:
    text = f.read()
  headings = [(m.start(), m.group(2)) for m in _HEADING.finditer(text) if m.group(1) == "##"]
  found = []
  for m in _FENCE.finditer(text):
    if m.group(1) == language:
      section = [title for start, title in headings if start < m.start()]
      found.append((section[-1] if section else "top", m.group(2)))
  return found


def _slug(section: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", section.lower()).strip("-")


PYTHON_BLOCKS = blocks("python")


def _env(home, code: str = "") -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "XLA_FLAGS"))}
  env.update(JAX_PLATFORMS="cpu", HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3",
             PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]))
  if "keras" in code:
    env["KERAS_BACKEND"] = "jax"
  return env


def run_python(code: str, folder, home) -> subprocess.CompletedProcess:
  script = folder / "readme_block.py"
  script.write_text(code)
  return subprocess.run([sys.executable, str(script)], cwd=folder, env=_env(home, code),
                        capture_output=True, text=True, timeout=600)


def _report(proc: subprocess.CompletedProcess, code: str) -> str:
  return (f"exit {proc.returncode}\n--- block\n{code}\n--- stdout\n{proc.stdout[-3000:]}"
          f"\n--- stderr\n{proc.stderr[-6000:]}")


def test_the_readme_has_the_blocks_it_should():
  sections = [section for section, _ in PYTHON_BLOCKS]
  for wanted in ("Two routes to XLA", "Flax NNX", "Keras 3 (JAX backend)", "PyTorch",
                 GSHARD_OPT_SECTION):
    assert wanted in sections, (wanted, sections)
  assert any("--load-pass-plugin" in code for section, code in blocks("sh")
             if section == GSHARD_OPT_SECTION)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)),
                         ids=[f"{i}-{_slug(s)}" for i, (s, _) in enumerate(PYTHON_BLOCKS)])
def test_python_block_runs(index, tmp_path):
  section, code = PYTHON_BLOCKS[index]
  folder, home = tmp_path / "work", tmp_path / "home"
  folder.mkdir()
  home.mkdir()
  proc = run_python(code, folder, home)
  assert proc.returncode == 0, f"README block {index} ({section}): {_report(proc, code)}"


def test_gshard_opt_commands_run_outside_the_checkout(tmp_path):
  """The section's Python block writes `step.mlir` into a scratch folder; its
  shell blocks (list the passes, chunk, the plugin example with its relative
  path, gshard-run comparing the modules) then run there and exit 0, and
  nothing appears in the checkout."""
  (py,) = [code for section, code in PYTHON_BLOCKS if section == GSHARD_OPT_SECTION]
  shell = [code for section, code in blocks("sh") if section == GSHARD_OPT_SECTION]
  folder, home = tmp_path / "scratch", tmp_path / "home"
  folder.mkdir()
  home.mkdir()
  before = set(os.listdir(ROOT))
  proc = run_python(py, folder, home)
  assert proc.returncode == 0, _report(proc, py)
  assert "stablehlo.composite" in (folder / "step.mlir").read_text()
  for code in shell:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=folder,
                          env=_env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, _report(proc, code)
    assert "warning" not in proc.stderr, _report(proc, code)  # every pass found its composites
  assert "stablehlo.while" in (folder / "tiled.mlir").read_text()
  written = set(os.listdir(folder))
  assert {"step.mlir", "chunked.mlir", "tiled.mlir"} <= written, written
  assert not (written & (set(os.listdir(ROOT)) - before)), "the commands wrote into the checkout"


# --- the README's statements about its own blocks --------------------------------------

def _block(section: str, marker: str) -> str:
  (code,) = [code for s, code in PYTHON_BLOCKS if s == section and marker in code]
  return code


def _readme() -> str:
  with open(README, encoding="utf-8") as f:
    return f.read()


def test_route_1_holds_no_more_than_the_budgets_chunk(tmp_path):
  """"No [N, V] tensor beyond the memory budget's chunk; at these sizes the whole
  vocabulary fits the CPU's 64 MiB, so the one chunk is the whole f32[256, 4096]":
  the block's own Route 1 step, compiled at the default budget and at 1 MiB."""
  from gshard_op import budget

  code = _block("Two routes to XLA", "# Route 1")
  assert (f"fits the CPU's {budget.CPU_MEMORY_BUDGET_MIB:.0f} MiB, so the one chunk is the "
          "whole f32[256, 4096]") in " ".join(code.split()).replace("# ", "")
  check = code[:code.index("# Route 2")] + (
      "import re\n"
      "def largest(**lowering):\n"
      "  with gshard_op.lowering(**lowering):\n"
      "    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))\n"
      "    hlo = step.lower(x, embedding).compile().as_text()\n"
      "  return max(int(a) * int(b) for a, b in re.findall(r'f32\\[(\\d+),(\\d+)\\]', hlo))\n"
      "print(largest(), largest(memory_budget_mib=1))\n")
  folder, home = tmp_path / "work", tmp_path / "home"
  folder.mkdir()
  home.mkdir()
  proc = run_python(check, folder, home)
  assert proc.returncode == 0, _report(proc, check)
  default, small = map(int, proc.stdout.split())
  assert default == 256 * 4096                     # the one chunk: the whole vocabulary
  assert small < 256 * 4096 and small <= 4096 * 64  # at 1 MiB: nothing above the embedding


def test_printed_partition_spec_is_the_one_the_readme_shows(tmp_path):
  code = _block("Flax NNX", "sharding.spec")
  (shown,) = re.findall(r"print\(layer\.embedding\[\.\.\.\]\.sharding\.spec\)\s+# (.+)", code)
  folder, home = tmp_path / "work", tmp_path / "home"
  folder.mkdir()
  home.mkdir()
  proc = run_python(code, folder, home)
  assert proc.returncode == 0, _report(proc, code)
  assert proc.stdout.splitlines()[0] == shown


def test_stated_versions_budgets_and_messages_are_the_codes():
  """The contract version, the default budgets and the temperature's error
  message, as the README states them."""
  from gshard_op import budget, contract
  from gshard_op.options import SoftmaxOptions

  text = " ".join(_readme().split())
  assert f"the current version is {contract.VERSION};" in text
  assert (f"The default budget is {budget.CPU_MEMORY_BUDGET_MIB:.0f} MiB of float32 `[T, C]` "
          f"buffers on the CPU and {budget.ACCELERATOR_MEMORY_BUDGET_MIB:.0f} MiB on an "
          "accelerator") in text
  assert "1/64 of an accelerator" not in text
  (quoted,) = re.findall(r"`(temperature must be [^`]*), got \.\.\.`", text)
  for bad in (-1.0, 0.0, float("nan"), float("inf"), 1e-39):
    with pytest.raises(ValueError) as err:
      SoftmaxOptions(temperature=bad)
    assert str(err.value) == f"{quoted}, got {bad!r}"
