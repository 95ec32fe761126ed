"""Nested pipelines as mlir-opt reads them (`func.func(canonicalize)`,
`builtin.module(gshard-...,func.func(cse))`): parsing, running, the errors,
and `gshard-opt` from the command line."""

import io
import os
import re
import shlex
import subprocess
import sys

import pytest
from jaxlib.mlir import ir

from gshard_op import passes
from gshard_op.passes import driver, framework
from gshard_op.passes.chunk import ChunkSoftmaxPass
from gshard_op.passes.framework import PipelineError
from gshard_op.passes.inline import InlinePass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIT = os.path.join(REPO, "tests", "lit")

TWO_FUNCTIONS = """
func.func @twice(%x: tensor<f32>) -> tensor<f32> {
  %c = stablehlo.constant dense<2.0> : tensor<f32>
  %a = stablehlo.multiply %x, %c : tensor<f32>
  %b = stablehlo.multiply %x, %c : tensor<f32>
  %s = stablehlo.add %a, %b : tensor<f32>
  return %s : tensor<f32>
}
func.func @thrice(%x: tensor<f32>) -> tensor<f32> {
  %a = stablehlo.multiply %x, %x : tensor<f32>
  %b = stablehlo.multiply %x, %x : tensor<f32>
  %s = stablehlo.add %a, %b : tensor<f32>
  return %s : tensor<f32>
}
"""


def _module(text: str = TWO_FUNCTIONS) -> ir.Module:
  return ir.Module.parse(text, context=framework.make_context())


@pytest.mark.parametrize("text, expected", [
    ("func.func(canonicalize)", ["func.func(canonicalize)"]),
    ("builtin.module(canonicalize,cse)", ["canonicalize", "cse"]),
    ("builtin.module(func.func(cse))", ["func.func(cse)"]),
    ("builtin.module(gshard-chunk-softmax{vocab-chunk=256},func.func(canonicalize))",
     [ChunkSoftmaxPass(vocab_chunk=256), "func.func(canonicalize)"]),
    # One element per nested pass, in its anchors; spaces and newlines anywhere.
    (" builtin.module(\n func.func( canonicalize{max-iterations=2} , cse ),\n gshard-inline ) ",
     ["func.func(canonicalize{max-iterations=2})", "func.func(cse)", InlinePass()]),
    ("gshard-inline,func.func(cse),gshard-chunk-softmax",
     [InlinePass(), "func.func(cse)", ChunkSoftmaxPass()]),
    # An inner builtin.module is a module nested in the module, as in mlir-opt.
    ("builtin.module(builtin.module(func.func(cse)))", ["builtin.module(func.func(cse))"]),
    ("any(cse)", ["any(cse)"]),
    # Options keep nested braces and parentheses.
    ("inline{default-pipeline=canonicalize op-pipelines={func.func(cse)}}",
     ["inline{default-pipeline=canonicalize op-pipelines={func.func(cse)}}"]),
])
def test_nested_pipelines_parse(text, expected):
  assert passes.parse_pipeline(text) == expected


_OLD_ELEMENT = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(\{([^{}]*)\})?\s*(,|$)")


def _old_parse(text):
  """The flat parser this one replaced (elements as (name, options) pairs)."""
  body = text.strip()
  wrapped = re.fullmatch(r"builtin\.module\((.*)\)", body, re.S)
  body = wrapped.group(1).strip() if wrapped else body
  pos, elements = 0, []
  while pos < len(body):
    m = _OLD_ELEMENT.match(body, pos)
    if not m or m.end() == pos:
      return None
    elements.append(m.group(1) if m.group(1) in passes.REGISTRY
                    else m.group(0).strip().rstrip(",").strip())
    pos = m.end()
  return elements


@pytest.mark.parametrize("text", [
    "gshard-chunk-softmax{vocab-chunk=16},gshard-inline",
    "builtin.module(gshard-chunk-softmax{vocab-chunk=16 token-chunk=4},canonicalize,cse)",
    "  gshard-chunk-softmax{ vocab-chunk=16 } , gshard-inline  ",
    "canonicalize{max-iterations=2 region-simplify=disabled},symbol-dce",
    "canonicalize {max-iterations=2}",
    "gshard-inline,",
    "builtin.module(\n  gshard-inline,\n  cse\n)",
])
def test_flat_pipelines_parse_as_before(text):
  got = [e.name if isinstance(e, passes.ModulePass) else e for e in passes.parse_pipeline(text)]
  assert got == _old_parse(text)


@pytest.mark.parametrize("text, words", [
    ("func.func(gshard-inline)", ["gshard pass 'gshard-inline'", "nested under 'func.func'",
                                  "'func.func(gshard-inline)'", "top level"]),
    ("builtin.module(func.func(cse,gshard-chunk-softmax{vocab-chunk=8}))",
     ["'gshard-chunk-softmax'", "'func.func'"]),
    ("builtin.module(builtin.module(gshard-inline))", ["'gshard-inline'", "'builtin.module'"]),
    ("any(gshard-inline)", ["'gshard-inline'", "'any'"]),
    ("builtin.module(func.func(cse)", ["unbalanced parentheses", "'builtin.module('",
                                      "column 15", "never closed"]),
    ("func.func(cse))", ["unbalanced parentheses", "')' at column 15 closes nothing"]),
    ("func.func(canonicalize{max-iterations=2)", ["unbalanced braces", "'canonicalize{'"]),
    ("gshard-inline}", ["unbalanced braces", "closes nothing"]),
    ("no.such_op(cse)", ["unknown anchor 'no.such_op'", "builtin.module, func.func"]),
    ("builtin.module(func.func(nosuch.op(cse)))",
     ["unknown anchor 'nosuch.op'", "'func.func(nosuch.op(cse))'"]),
    ("func.func(canonicalize,no-such-pass)", ["unknown pass 'no-such-pass'", "gshard-inline"]),
    ("func.func(gshard-nope)", ["unknown pass 'gshard-nope'"]),
    ("func.func(canonicalize{no-such-option=1})",
     ["MLIR pass 'canonicalize' rejected its options", "func.func(canonicalize{no-such-option=1})"]),
    ("func.func{x}(cse)", ["cannot parse pipeline"]),
    ("func.func()", ["empty pipeline"]),
    ("func.func(cse,,canonicalize)", ["cannot parse pipeline"]),
])
def test_nested_pipeline_errors(text, words):
  with pytest.raises(PipelineError) as info:
    passes.parse_pipeline(text)
  for word in words:
    assert word in str(info.value), (text, str(info.value))


def test_nested_mlir_passes_run_on_every_function():
  module = _module()
  passes.run_pipeline(module, "builtin.module(func.func(canonicalize,cse))")
  text = str(module)
  assert text.count("stablehlo.multiply") == 2  # one left in each function
  flat = _module()
  passes.run_pipeline(flat, "canonicalize,cse")
  assert text == str(flat)


def test_instrumentation_names_the_nested_passes():
  stream = io.StringIO()
  inst = framework.Instrumentation(print_ir_after=frozenset({"cse"}), stream=stream,
                                   timing=framework.PassTiming())
  passes.run_pipeline(_module(), "func.func(canonicalize,cse),symbol-dce", inst)
  assert stream.getvalue().count("// -----// IR Dump After cse //----- //") == 1
  report = inst.timing.report()
  for name in ("canonicalize", "cse", "symbol-dce"):
    assert re.search(rf"\)  {name}$", report, re.M), report


def _run(capsys, *argv):
  status = driver.main(list(argv))
  out, err = capsys.readouterr()
  return status, out, err


def test_driver_runs_a_nested_gshard_pipeline_as_the_flat_one(capsys):
  path = os.path.join(LIT, "chunk-forward.mlir")
  nested = _run(capsys, path, "--split-input-file",
                "-p", "builtin.module(gshard-chunk-softmax{vocab-chunk=16},func.func(canonicalize))")
  flat = _run(capsys, path, "--split-input-file", "-p", "gshard-chunk-softmax{vocab-chunk=16},canonicalize")
  assert nested[0] == 0 and nested == flat
  assert "stablehlo.while" in nested[1] and "stablehlo.composite" not in nested[1]


def test_gshard_opt_command_line():
  tool = [sys.executable, os.path.join(REPO, "tools", "gshard-opt")]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  opt, lit = shlex.join(tool), shlex.quote(LIT)
  script = " && ".join([
      f"{opt} {lit}/driver.mlir -p 'func.func(canonicalize)' > /dev/null",
      f"{opt} {lit}/chunk-forward.mlir --split-input-file "
      "-p 'builtin.module(gshard-chunk-softmax{vocab-chunk=16},func.func(canonicalize,cse))'",
  ])
  proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "stablehlo.while" in proc.stdout and "stablehlo.composite" not in proc.stdout
  bad = subprocess.run([*tool, f"{LIT}/driver.mlir", "-p", "func.func(gshard-inline)"],
                       capture_output=True, text=True, env=env, timeout=300)
  assert bad.returncode == 2 and bad.stdout == ""
  assert bad.stderr.startswith("gshard-opt: error: bad pass pipeline: gshard pass 'gshard-inline' "
                               "cannot run nested under 'func.func'")
