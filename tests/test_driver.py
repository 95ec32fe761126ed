"""`gshard-opt` (`gshard_op.passes.driver.main`): exit statuses, messages, input and output.

The IR the passes produce is checked by the lit tests (`tests/lit/`, `make lit`);
here the driver itself: 0 on success, 1 when a pass fails (its message on
stderr), 2 for a bad command line, pipeline, input file or input IR (a message
starting `gshard-opt: error: `), and nothing on stdout when a run fails.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from gshard_op.passes import driver, framework

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ATTRIBUTES = ("{label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, "
              "logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, "
              "use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}")
RESULTS = "(tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)"


def composite_module(version: int = 1, ids: str = "tensor<8xi32>") -> str:
  """A forward composite with a stub decomposition (only its types matter here)."""
  operands = f"(tensor<8x16xf32>, tensor<50x16xf32>, {ids})"
  return f"""
func.func @f(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: {ids}) -> tensor<8xf32> {{
  %0:4 = stablehlo.composite "gshard.shared_embedding_softmax" %x, %e, %ids {{composite_attributes = {ATTRIBUTES}, decomposition = @decomposition, version = {version} : i32}} : {operands} -> {RESULTS}
  return %0#0 : tensor<8xf32>
}}
func.func private @decomposition(%x: tensor<8x16xf32>, %e: tensor<50x16xf32>, %ids: {ids}) -> {RESULTS} {{
  %f = stablehlo.constant dense<0.0> : tensor<8xf32>
  %i = stablehlo.constant dense<0> : tensor<8xi32>
  return %f, %i, %f, %f : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}}
"""


UNPARSABLE = """func.func @g(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = stablehlo.add %x, %x : tensor<4xf64>
  return %0 : tensor<4xf32>
}
"""


@pytest.fixture
def write(tmp_path):
  def write(text: str, name: str = "input.mlir") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)
  return write


def run(capsys, *argv):
  """`(status, stdout, stderr)` of `gshard-opt argv...`."""
  status = driver.main(list(argv))
  out, err = capsys.readouterr()
  return status, out, err


# --- success ---------------------------------------------------------------------

def test_list_passes_shows_every_pass_with_its_options(capsys):
  status, out, err = run(capsys, "--list-passes")
  assert status == 0 and err == ""
  assert "gshard-inline  Replace gshard composites by calls to their decomposition" in out
  assert "gshard-chunk-softmax" in out
  assert "vocab-chunk=" in out and "(int)" in out


def test_without_a_pipeline_the_module_is_printed_back(capsys, write):
  status, out, err = run(capsys, write(composite_module()))
  assert (status, err) == (0, "")
  assert out.startswith("module {")
  assert 'stablehlo.composite "gshard.shared_embedding_softmax"' in out
  assert "loc(" not in out


@pytest.mark.parametrize("pipeline", ["gshard-inline", "builtin.module(gshard-inline)",
                                      "builtin.module(canonicalize,gshard-inline,cse)"])
def test_pipeline_runs_with_or_without_the_module_wrapper(capsys, write, pipeline):
  status, out, err = run(capsys, write(composite_module()), f"--pass-pipeline={pipeline}")
  assert (status, err) == (0, "")
  assert "stablehlo.composite" not in out
  assert "call @decomposition(%arg0, %arg1, %arg2)" in out


def test_pipeline_as_a_separate_argument(capsys, write):
  status, out, _ = run(capsys, write(composite_module()), "--pass-pipeline", "gshard-inline")
  assert status == 0 and "call @decomposition" in out


def test_reads_stdin(capsys, monkeypatch):
  monkeypatch.setattr(sys, "stdin", io.StringIO(composite_module()))
  status, out, _ = run(capsys, "-", "--pass-pipeline=gshard-inline")
  assert status == 0 and "call @decomposition" in out
  monkeypatch.setattr(sys, "stdin", io.StringIO(composite_module()))
  status, out, _ = run(capsys, "--pass-pipeline=gshard-inline")  # no input: stdin
  assert status == 0 and "call @decomposition" in out


def test_output_file(capsys, write, tmp_path):
  target = tmp_path / "out.mlir"
  status, out, err = run(capsys, write(composite_module()), "--pass-pipeline=gshard-inline",
                         "-o", str(target))
  assert (status, out, err) == (0, "", "")
  assert "call @decomposition" in target.read_text()


def test_debuginfo_names_the_input_file(capsys, write):
  path = write(composite_module(), "located.mlir")
  status, out, _ = run(capsys, path, "--mlir-print-debuginfo")
  assert status == 0
  assert f'loc("{path}":3:' in out  # the composite is on line 3
  assert '"-":' not in out


def test_split_input_file_runs_each_piece(capsys, write):
  text = composite_module() + "\n// -----\n" + composite_module()
  status, out, err = run(capsys, write(text), "--split-input-file",
                         "--pass-pipeline=gshard-inline")
  assert (status, err) == (0, "")
  pieces = out.split("// -----\n")
  assert len(pieces) == 2
  assert all(p.startswith("module {") and "call @decomposition" in p for p in pieces)


def test_split_input_file_keeps_going_after_a_bad_piece(capsys, write):
  first = composite_module(version=7)
  text = first + "// -----\n" + UNPARSABLE + "// -----\n" + composite_module()
  path = write(text)
  status, out, err = run(capsys, path, "--split-input-file", "--pass-pipeline=gshard-inline")
  assert status == 2  # the worst of: pass failure (1), unparsable piece (2)
  assert out.count("module {") == 1 and "call @decomposition" in out
  assert "has version 7" in err
  # Line numbers count from the top of the whole file, not of the piece.
  bad_line = first.count("\n") + 1 + 2
  assert f"{path}:{bad_line}:" in err


# --- pipeline and usage errors: status 2, before any input is read ---------------

@pytest.mark.parametrize("pipeline, message", [
    ("gshard-nope", "unknown pass 'gshard-nope'"),
    ("builtin.module(gshard-inline,not-a-pass)", "unknown pass 'not-a-pass'"),
    ("gshard-chunk-softmax{vocab-size=16}", "has no option 'vocab-size'"),
    ("gshard-inline{verbose=true}", "has no option 'verbose'"),
    ("gshard-chunk-softmax{vocab-chunk=lots}", "option 'vocab-chunk' expects int, got 'lots'"),
    ("gshard-chunk-softmax{vocab-chunk}", "needs a value"),
    ("gshard-inline,,", "cannot parse pipeline"),
])
def test_bad_pipeline(capsys, pipeline, message):
  # The input does not exist: a bad pipeline is reported first.
  status, out, err = run(capsys, "/nonexistent/input.mlir", f"--pass-pipeline={pipeline}")
  assert status == 2 and out == ""
  assert err.startswith("gshard-opt: error: bad pass pipeline: ")
  assert message in err


def test_help(capsys):
  status, out, _ = run(capsys, "--help")
  assert status == 0
  assert "--pass-pipeline" in out and "--split-input-file" in out


def test_missing_input_file(capsys):
  status, out, err = run(capsys, "/nonexistent/input.mlir")
  assert (status, out) == (2, "")
  assert err.startswith("gshard-opt: error: cannot read '/nonexistent/input.mlir'")


def test_unknown_flag(capsys):
  status, out, err = run(capsys, "--no-such-flag")
  assert (status, out) == (2, "")
  assert err.startswith("gshard-opt: error: unrecognized arguments: --no-such-flag")


def test_unparsable_input_points_at_the_line(capsys, write):
  path = write(UNPARSABLE)
  status, out, err = run(capsys, path, "--pass-pipeline=gshard-inline")
  assert (status, out) == (2, "")
  assert err.startswith(f"gshard-opt: error: cannot parse {path}\n")
  assert f"{path}:2:" in err and "error: use of value '%x' expects different type" in err
  assert f"{path}:1:" in err and "note: prior use here" in err


def test_unparsable_stdin(capsys, monkeypatch):
  monkeypatch.setattr(sys, "stdin", io.StringIO(UNPARSABLE))
  status, _, err = run(capsys, "-")
  assert status == 2
  assert err.startswith("gshard-opt: error: cannot parse <stdin>\n<stdin>:2:")


NOT_UTF8 = composite_module().encode() + b"// \xff\xfe not UTF-8\n"


@pytest.mark.parametrize("stdin", [
    lambda: io.TextIOWrapper(io.BytesIO(NOT_UTF8), encoding="utf-8"),  # a real stdin: bytes
    # what Python's stdin gives in a C locale: the bytes as lone surrogates
    lambda: io.StringIO(NOT_UTF8.decode("utf-8", "surrogateescape")),
])
def test_stdin_that_is_not_utf8_is_refused_as_a_file_is(capsys, monkeypatch, tmp_path, stdin):
  path = tmp_path / "latin.mlir"
  path.write_bytes(NOT_UTF8)
  status, out, err = run(capsys, str(path), "--pass-pipeline=gshard-inline")
  assert (status, out) == (2, "")
  assert err == f"gshard-opt: error: cannot read '{path}': not UTF-8 text (invalid start byte)\n"
  monkeypatch.setattr(sys, "stdin", stdin())
  status, out, err = run(capsys, "-", "--pass-pipeline=gshard-inline")
  assert (status, out) == (2, "")
  assert err.startswith("gshard-opt: error: cannot read standard input: not UTF-8 text ("), err
  assert "TypeError" not in err


def test_stdin_bytes_are_read_as_utf8(capsys, monkeypatch):
  text = composite_module() + "// caf\u00e9, \u00fcber, \u4e2d\n"
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode()), encoding="ascii"))
  status, out, err = run(capsys, "--pass-pipeline=gshard-inline")
  assert (status, err) == (0, "") and "call @decomposition" in out


# --- pass failures: status 1, the pass's own message ----------------------------

@pytest.mark.parametrize("pipeline", ["gshard-inline", "gshard-chunk-softmax{vocab-chunk=16}"])
def test_unknown_version_is_rejected(capsys, write, pipeline):
  path = write(composite_module(version=7))
  status, out, err = run(capsys, path, f"--pass-pipeline={pipeline}")
  assert (status, out) == (1, "")
  assert err.startswith(f"pass '{pipeline.split('{')[0]}' failed: ")
  assert "gshard.shared_embedding_softmax has version 7" in err
  assert f'at loc("{path}":3:' in err  # where the composite is


@pytest.mark.parametrize("pipeline", ["gshard-inline", "gshard-chunk-softmax{vocab-chunk=16}"])
def test_wrong_operand_types_are_rejected(capsys, write, pipeline):
  status, out, err = run(capsys, write(composite_module(ids="tensor<8xi64>")),
                         f"--pass-pipeline={pipeline}")
  assert (status, out) == (1, "")
  assert "labels must be i32[8] ids or float [8, 50] probabilities" in err


# --- warnings: nothing rewritten, declines, --quiet -------------------------------

NO_COMPOSITE = """func.func @twice(%x: tensor<f32>) -> tensor<f32> {
  %0 = stablehlo.add %x, %x : tensor<f32>
  return %0 : tensor<f32>
}
"""


@pytest.mark.parametrize("pipeline", ["gshard-chunk-softmax", "gshard-inline,cse",
                                      "builtin.module(gshard-fuse-fwd-bwd,gshard-chunk-softmax)"])
def test_no_composite_warns_where_composites_come_from_and_exits_0(capsys, write, pipeline):
  path = write(NO_COMPOSITE, "plain.mlir")
  status, out, err = run(capsys, path, f"--pass-pipeline={pipeline}")
  assert status == 0 and "func.func @twice" in out
  (line,) = err.splitlines()
  assert line.startswith(f"gshard-opt: warning: {path}: no gshard composite "), line
  assert "changed nothing" in line and 'gshard_op.lowering("composite")' in line, line
  status, out_quiet, err = run(capsys, path, f"--pass-pipeline={pipeline}", "--quiet")
  assert (status, out_quiet, err) == (0, out, "")


def test_mlir_passes_alone_say_nothing_of_composites(capsys, write):
  status, _, err = run(capsys, write(NO_COMPOSITE), "--pass-pipeline=canonicalize,cse")
  assert (status, err) == (0, "")


def test_a_declined_composite_is_reported_in_one_line(capsys, write):
  """`gshard-pallas{platform=cuda}` leaves an 8-token composite (below a Triton
  block): one line saying why, then that the pipeline rewrote nothing."""
  path = write(composite_module())
  status, out, err = run(capsys, path, "--pass-pipeline=gshard-pallas{platform=cuda}")
  assert status == 0 and 'stablehlo.composite "gshard.shared_embedding_softmax"' in out
  declined, summary = err.splitlines()
  assert re.fullmatch(
      r'gshard-opt: warning: gshard-pallas: gshard\.shared_embedding_softmax at '
      rf'loc\("{re.escape(path)}":\d+:\d+\) not rewritten \(.+\); left to later passes',
      declined), declined
  assert summary == (f"gshard-opt: warning: {path}: gshard-pallas rewrote none of its 1 "
                     "gshard composites")
  status, _, err = run(capsys, path, "--pass-pipeline=gshard-pallas{platform=cuda}", "-q")
  assert (status, err) == (0, "")


def test_a_rewrite_says_nothing(capsys, write):
  status, _, err = run(capsys, write(composite_module()), "--pass-pipeline=gshard-inline")
  assert (status, err) == (0, "")
  # A pass later in the pipeline took what gshard-pallas left: only the decline.
  status, _, err = run(capsys, write(composite_module()),
                       "--pass-pipeline=gshard-pallas{platform=cuda},gshard-inline")
  assert status == 0 and len(err.splitlines()) == 1 and "gshard-pallas: " in err, err


def test_list_passes_explains_zero_and_the_default_budget(capsys):
  import jax

  from gshard_op import budget as budgets
  status, out, err = run(capsys, "--list-passes")
  assert status == 0 and err == ""
  budget = budgets.default_mib()
  assert "vocab-chunk=0  (int)  0: automatic" in out
  # One default for every pass (issue 20): 0, the platform's budget.
  assert f"memory-budget-mib=0.0  (float)  0: automatic (here {budget} MiB)" in out
  assert "\n0 means automatic: " in out
  assert f"\nDefault budget here ({jax.default_backend()}): {budget} MiB " in out


# --- the checkout wrapper ------------------------------------------------------

def test_tools_wrapper_runs_from_anywhere(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gshard-opt"), "--list-passes"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr
  assert "gshard-inline" in proc.stdout


@pytest.mark.parametrize("option", ["memory-budget-mib=nan", "memory-budget-mib=inf",
                                    "memory-budget-mib=-inf"])
def test_non_finite_budget_is_a_pipeline_error(capsys, option):
  status, out, err = run(capsys, "/nonexistent/input.mlir",
                         f"--pass-pipeline=gshard-chunk-softmax{{vocab-chunk=4 {option}}}")
  assert (status, out) == (2, "")
  assert err.startswith("gshard-opt: error: bad pass pipeline: pass 'gshard-chunk-softmax': "
                        f"option {option} rejected: ")


# --- pass plugins ----------------------------------------------------------------

PLUGINS = os.path.join(REPO, "tests", "plugins")
VOCAB_TILES = os.path.join(PLUGINS, "vocab_tiles.py")
DEBUGGING = os.path.join(PLUGINS, "debugging.py")


@pytest.fixture
def isolated():
  """Plugins loaded by a test are forgotten after it."""
  with framework.isolated_registry():
    yield


def test_plugin_passes_are_listed_and_run(capsys, write, isolated):
  status, out, err = run(capsys, f"--load-pass-plugin={VOCAB_TILES}",
                         "--load-pass-plugin", DEBUGGING, "--list-passes")
  assert (status, err) == (0, "")
  assert f"example-vocab-tiles  {framework.REGISTRY['example-vocab-tiles'].summary}  " \
         f"[pass plugin '{VOCAB_TILES}']" in out
  assert "test-crash" in out and "tiles=4  (int)" in out
  status, out, err = run(capsys, write(composite_module()), f"--load-pass-plugin={VOCAB_TILES}",
                         "--pass-pipeline=example-vocab-tiles{tiles=5}")
  assert (status, err) == (0, "")
  assert "stablehlo.while" in out and "sizes = [10, 16]" in out  # 50 classes in 5 tiles
  assert "stablehlo.composite" not in out and "@decomposition" not in out


def test_plugin_example_runs_from_any_folder(tmp_path):
  """The README's plugin command, run from a folder outside the checkout with
  the checkout-relative path: the plugin is found in the source tree, and
  the output goes where -o says."""
  (tmp_path / "step.mlir").write_text(composite_module())
  tool = [sys.executable, os.path.join(REPO, "tools", "gshard-opt")]
  proc = subprocess.run([*tool, "step.mlir", "--load-pass-plugin=tests/plugins/vocab_tiles.py",
                         "--pass-pipeline=example-vocab-tiles{tiles=5}", "-o", "tiled.mlir"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
  tiled = (tmp_path / "tiled.mlir").read_text()
  assert "stablehlo.while" in tiled and "stablehlo.composite" not in tiled


def test_plugin_path_found_neither_here_nor_in_the_source_tree(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  status, _, err = run(capsys, "--load-pass-plugin=tests/plugins/nowhere.py", "--list-passes")
  assert status == 2
  assert err.startswith("gshard-opt: error: cannot load pass plugin 'tests/plugins/nowhere.py': "
                        f"no such file (nor in the gshard-op source tree {framework.SOURCE_TREE})")


def test_plugin_pass_is_unknown_without_the_plugin(capsys, write):
  status, _, err = run(capsys, write(composite_module()), "--pass-pipeline=example-vocab-tiles")
  assert status == 2 and "unknown pass 'example-vocab-tiles'" in err


@pytest.mark.parametrize("name, reason", [
    ("broken_import.py", "ModuleNotFoundError: No module named 'gshard_op.no_such_module'"),
    ("clashing_name.py", "needs a unique name, got 'gshard-inline'"),
    ("missing.py", "no such file"),
])
def test_plugin_that_cannot_load_exits_2(capsys, write, isolated, name, reason):
  path = os.path.join(PLUGINS, name)
  status, out, err = run(capsys, write(composite_module()), f"--load-pass-plugin={path}",
                         "--pass-pipeline=gshard-inline")
  assert (status, out) == (2, "")
  assert err.startswith(f"gshard-opt: error: cannot load pass plugin '{path}': ")
  assert reason in err and "Traceback" not in err
  assert "test-clash-first" not in framework.REGISTRY


_ENTRY_POINT_PLUGIN = '''
from gshard_op.passes.framework import ModulePass, register

@register
class Counted(ModulePass):
  name = "test-installed-pass"
  summary = "From an installed distribution"
  times: int = 1

  def run(self, module):
    pass
'''


def _install(site, dist: str, entry: str, module: str | None = None, text: str = ""):
  """A distribution of one module with one `gshard_op.passes` entry point."""
  info = site / f"{dist}-1.0.dist-info"
  info.mkdir(parents=True)
  (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
  (info / "entry_points.txt").write_text(f"[gshard_op.passes]\n{entry}\n")
  if module:
    (site / f"{module}.py").write_text(text)


def test_entry_points_of_installed_distributions(tmp_path, write):
  site = tmp_path / "site"
  _install(site, "my_passes", "counted = my_passes_mod", "my_passes_mod", _ENTRY_POINT_PLUGIN)
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(site), REPO])}
  tool = [sys.executable, os.path.join(REPO, "tools", "gshard-opt")]
  listed = subprocess.run([*tool, "--list-passes"], capture_output=True, text=True,
                          timeout=300, env=env)
  assert listed.returncode == 0, listed.stderr
  assert ("test-installed-pass  From an installed distribution  [pass plugin entry point "
          "'counted = my_passes_mod' of my_passes]") in listed.stdout
  _install(site, "broken_passes", "broken = not_a_module_anywhere")
  broken = subprocess.run([*tool, write(composite_module()), "--pass-pipeline=gshard-inline"],
                          capture_output=True, text=True, timeout=300, env=env)
  assert broken.returncode == 2 and broken.stdout == ""
  assert ("gshard-opt: error: cannot load pass plugin entry point 'broken = "
          "not_a_module_anywhere' of broken_passes: ModuleNotFoundError") in broken.stderr


# --- printing, timing, verification, tracebacks ------------------------------------------

def _dumps(text):
  return re.findall(r"^// -----// IR Dump (Before|After) (.+) //----- //$", text, re.M)


def test_print_ir_goes_to_stderr_for_every_piece(capsys, write):
  text = composite_module() + "// -----\n" + composite_module()
  status, out, err = run(capsys, write(text), "--split-input-file", "--mlir-print-ir-after-all",
                         "--mlir-print-ir-before=gshard-inline",
                         "--pass-pipeline=gshard-inline,symbol-dce")
  assert status == 0 and "IR Dump" not in out
  assert _dumps(err) == [("Before", "gshard-inline"), ("After", "gshard-inline"),
                         ("After", "symbol-dce")] * 2
  assert "call @decomposition" in err.split("IR Dump After gshard-inline")[1]


def test_timing_is_reported_after_a_failure_too(capsys, write):
  status, out, err = run(capsys, write(composite_module(version=7)), "--mlir-timing",
                         "--pass-pipeline=cse,gshard-inline")
  assert (status, out) == (1, "")
  failure, report = err.split("===-", 1)
  assert "has version 7" in failure
  names = re.findall(r"^\s+\d+\.\d{4} \(\s*[\d.]+%\)  (\S+)$", report, re.M)
  assert names == ["Parser", "cse", "gshard-inline", "Total"]  # nothing was printed


def test_verify_each_and_no_verify_each(capsys, write, isolated):
  path = write("func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
               "  %y = stablehlo.multiply %x, %x : tensor<4xf32>\n"
               "  %s = stablehlo.sine %y : tensor<4xf32>\n  return %s : tensor<4xf32>\n}\n")
  plugin = f"--load-pass-plugin={DEBUGGING}"
  status, out, err = run(capsys, path, plugin, "--pass-pipeline=test-break-dominance,cse")
  assert (status, out) == (1, "")
  assert err.startswith("pass 'test-break-dominance' left IR that does not verify")
  status, out, err = run(capsys, path, plugin, "--no-verify-each",
                         "--pass-pipeline=test-break-dominance,cse")
  assert (status, out) == (1, "")
  assert err.startswith("the pipeline left IR that does not verify")
  assert "does not dominate" in err
  status, out, err = run(capsys, path, "--no-verify-each", "--pass-pipeline=cse")
  assert (status, err) == (0, "") and "stablehlo.sine" in out


@pytest.mark.parametrize("how", ["flag", "environment", "neither"])
def test_show_traceback(capsys, write, isolated, monkeypatch, how):
  monkeypatch.delenv("GSHARD_DEBUG", raising=False)
  argv = [write(composite_module()), f"--load-pass-plugin={DEBUGGING}", "--pass-pipeline=test-crash"]
  if how == "flag":
    argv.append("--show-traceback")
  elif how == "environment":
    monkeypatch.setenv("GSHARD_DEBUG", "1")
  status, out, err = run(capsys, *argv)
  assert (status, out) == (1, "")
  assert re.search(r"^pass 'test-crash' raised ZeroDivisionError: division by zero$", err, re.M)
  if how == "neither":
    assert "Traceback" not in err
  else:
    assert err.startswith("Traceback (most recent call last):")
    assert re.search(r'debugging\.py", line \d+, in run\n.*\n.*debugging\.py", line \d+, '
                     r'in _divide\n', err), err


# --- docs/writing-a-pass.md stays true ---------------------------------------------

GUIDE = os.path.join(REPO, "docs", "writing-a-pass.md")


def _guide_blocks(marker: str) -> list[tuple[str, str]]:
  """`(argument, code)` of each fenced block right after `<!-- marker ARG -->`."""
  text = open(GUIDE, encoding="utf-8").read()
  return re.findall(rf"<!-- {marker}:? ?(\S*) -->\n```\w*\n(.*?)```", text, re.S)


def test_guide_quotes_the_example_plugin_verbatim():
  quotes = _guide_blocks("quote")
  assert len(quotes) >= 3
  for path, code in quotes:
    assert path == "tests/plugins/vocab_tiles.py"
    source = open(os.path.join(REPO, path), encoding="utf-8").read()
    assert code in source, f"the guide's quote is not in {path}:\n{code}"
  lines = _guide_blocks("quote lines")
  assert lines
  for path, code in lines:
    source = open(os.path.join(REPO, path), encoding="utf-8").read().splitlines()
    for line in code.splitlines():
      assert line in source, f"{line!r} is not a line of {path}"


def test_guide_python_example_runs(isolated, monkeypatch):
  (code,) = [c for kind, c in _guide_blocks("run") if kind == "python"]
  monkeypatch.chdir(REPO)  # the example names the plugin relative to the checkout
  exec(compile(code, GUIDE, "exec"), {"__name__": "guide"})  # noqa: S102
  assert "example-vocab-tiles" in framework.REGISTRY


def test_print_flags_name_known_passes(capsys, write, isolated):
  status, out, err = run(capsys, write(composite_module()), "--mlir-print-ir-after=cse,gshard-inlin",
                         "--pass-pipeline=gshard-inline")
  assert (status, out) == (2, "")
  assert err.startswith("gshard-opt: error: --mlir-print-ir-after: unknown pass 'gshard-inlin'")
  status, _, err = run(capsys, write(composite_module()), f"--load-pass-plugin={VOCAB_TILES}",
                       "--mlir-print-ir-before=example-vocab-tiles,canonicalize",
                       "--pass-pipeline=gshard-inline")
  assert (status, err) == (0, "")  # known passes, not in this pipeline: nothing to print
