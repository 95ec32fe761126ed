"""`gshard-run` (`gshard_op.passes.run`): the differential runner of StableHLO modules.

A correct rewrite agrees with the module it came from; a wrong one (an edited
constant) fails with exit status 1 naming the results that differ; modules
whose signatures differ, or inputs that do not fit, are refused with status 2.
The sharded modules are made here, on 4 of this process's 8 host devices
(tests/conftest.py's); the runner runs them in a subprocess, since what is
checked there is that it asks for its host devices itself, before JAX's CPU
backend starts, which in this process it already has.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gshard_op
from gshard_op.passes import driver, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, M, V = 8, 16, 50
SCALE = "2.500000e-01"  # the logit scale M**-0.5, a constant of every rewrite


def _step(x, e, ids, w):
  def loss(x, e):
    o = gshard_op.shared_embedding_softmax(x, e, w, ids, z_loss_weight=0.1)
    return o.avg_xent + o.z_loss, o.per_example_argmax
  return jax.value_and_grad(loss, (0, 1), has_aux=True)(x, e)


def _lowered_text(n=N, m=M, v=V) -> str:
  args = (jnp.zeros((n, m)), jnp.zeros((v, m)), jnp.zeros((n, 1), jnp.int32), jnp.ones((n, 1)))
  with gshard_op.lowering("composite"):
    return jax.jit(_step).lower(*args).as_text()


@pytest.fixture(scope="module")
def before(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("run") / "before.mlir"
  path.write_text(_lowered_text())
  return str(path)


def _rewrite(before: str, pipeline: str, out) -> str:
  status = driver.main([before, f"--pass-pipeline={pipeline}", "-o", str(out)])
  assert status == 0
  return str(out)


@pytest.fixture(scope="module")
def after(before, tmp_path_factory) -> str:
  out = tmp_path_factory.mktemp("run") / "after.mlir"
  return _rewrite(before, "gshard-chunk-softmax{vocab-chunk=16},canonicalize,cse", out)


def runner(capsys, *argv):
  """`(status, stdout, stderr)` of `gshard-run argv...`."""
  status = run.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return status, out, err


def _rows(out: str) -> dict[str, str]:
  """Result name -> its report row."""
  return {m.group(1): m.group(0) for m in re.finditer(r"^(#\d+ result\S*)\s.*$", out, re.M)}


# --- comparisons -------------------------------------------------------------------------

def test_correct_rewrite_agrees(capsys, before, after):
  assert "stablehlo.composite" in open(before).read()
  assert "stablehlo.composite" not in open(after).read()
  status, out, err = runner(capsys, before, after, "--rtol", "1e-5")
  assert (status, err) == (0, ""), out + err
  rows = _rows(out)
  assert list(rows) == ["#0 result[0][0]", "#1 result[0][1]", "#2 result[1][0]",
                        "#3 result[1][1]"]
  assert all(row.endswith(" ok") for row in rows.values()), out
  assert "0 of 8 differ" in rows["#1 result[0][1]"]  # argmax: exactly equal
  assert "all 4 results agree" in out
  # The class ids are drawn in range: [0, V) from the composite.
  assert f"tensor<8x1xi32> in [0, {V})" in out


def test_edited_constant_fails_naming_the_results(capsys, after, before, tmp_path):
  text = open(after).read()
  assert text.count(SCALE) >= 1
  wrong = tmp_path / "wrong.mlir"
  wrong.write_text(text.replace(SCALE, "2.600000e-01"))
  status, out, err = runner(capsys, before, wrong)
  assert (status, err) == (1, ""), out + err
  rows = _rows(out)
  for name in ("#0 result[0][0]", "#2 result[1][0]", "#3 result[1][1]"):
    assert rows[name].endswith(" FAIL"), rows[name]
    max_rel = float(rows[name].split()[-2])
    assert 1e-3 < max_rel < 1.0, rows[name]
  assert re.search(r"results differ: .*#0 result\[0\]\[0\]", out)


def test_loose_tolerance_accepts_what_a_tight_one_refuses(capsys, before, after, tmp_path):
  wrong = tmp_path / "slightly.mlir"
  wrong.write_text(open(after).read().replace(SCALE, "2.500010e-01"))  # 4e-6 relative
  assert runner(capsys, before, wrong, "--rtol", "1e-7")[0] == 1
  assert runner(capsys, before, wrong, "--rtol", "1e-3")[0] == 0
  assert runner(capsys, before, wrong, "--rtol", "0", "--atol", "1")[0] == 0


def test_one_module_is_run_and_summarised(capsys, after, tmp_path):
  saved = tmp_path / "outputs.npz"
  status, out, err = runner(capsys, after, "--save-outputs", saved)
  assert (status, err) == (0, "")
  assert re.search(r"^#3 result\[1\]\[1\]\s+tensor<50x16xf32>\s+min ", out, re.M)
  with np.load(saved) as f:
    assert f["result3"].shape == (V, M) and f["result1"].dtype == np.int32


def test_inputs_round_trip_through_npz(capsys, before, after, tmp_path):
  saved = tmp_path / "inputs.npz"
  first = runner(capsys, before, after, "--seed", "7", "--save-inputs", saved)
  with np.load(saved) as f:
    arrays = [f[k] for k in f.files]
  assert [a.shape for a in arrays] == [(N, M), (V, M), (N, 1), (N, 1)]
  assert arrays[2].min() >= 0 and arrays[2].max() < V
  again = runner(capsys, before, after, "--inputs", saved)
  assert first[0] == again[0] == 0
  assert _rows(first[1]) == _rows(again[1])  # the same inputs give the same errors
  other = runner(capsys, before, after, "--seed", "8")
  assert _rows(other[1]) != _rows(first[1])


# --- refusals: status 2 --------------------------------------------------------------------

def test_different_signatures_are_refused(capsys, before, tmp_path):
  smaller = tmp_path / "smaller.mlir"
  smaller.write_text(_lowered_text(n=4))
  status, out, err = runner(capsys, before, smaller)
  assert status == 2
  assert err.startswith(f"gshard-run: error: {before} and {smaller} have different signatures: "
                        "operand #0 is tensor<8x16xf32> vs tensor<4x16xf32>")


def test_inputs_that_do_not_fit_are_refused(capsys, before, tmp_path):
  bad = tmp_path / "bad.npz"
  np.savez(bad, np.zeros((N, M), np.float32), np.zeros((V, M + 1), np.float32),
           np.zeros((N, 1), np.int32), np.ones((N, 1), np.float32))
  status, _, err = runner(capsys, before, "--inputs", bad)
  assert status == 2 and "array #1 is float32[50, 17]; operand #1 is tensor<50x16xf32>" in err
  few = tmp_path / "few.npz"
  np.savez(few, np.zeros((N, M), np.float32))
  status, _, err = runner(capsys, before, "--inputs", few)
  assert status == 2 and "holds 1 arrays; the module takes 4 operands" in err


@pytest.mark.parametrize("text, message", [
    ("module {\n  func.func @f() {\n    return\n  }\n}\n", "has no @main function"),
    ("func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n  %0 = stablehlo.add %x, %x : "
     "tensor<4xf64>\n  return %0 : tensor<4xf32>\n}\n", "cannot parse"),
    ("func.func @main(%x: tensor<?xf32>) -> tensor<?xf32> {\n  return %x : tensor<?xf32>\n}\n",
     "only statically shaped tensors"),
])
def test_bad_modules_are_refused(capsys, tmp_path, text, message):
  path = tmp_path / "bad.mlir"
  path.write_text(text)
  status, _, err = runner(capsys, path)
  assert status == 2 and err.startswith("gshard-run: error: ") and message in err, err


def test_missing_file_and_bad_usage(capsys, before, tmp_path):
  status, _, err = runner(capsys, tmp_path / "nope.mlir")
  assert status == 2 and "cannot read" in err
  assert runner(capsys, before, before, before)[0] == 2
  assert runner(capsys, "--no-such-flag", before)[0] == 2


# --- the comparison itself ---------------------------------------------------------------

def _type(shape, dtype):
  return run.TensorType(text=f"{dtype}{list(shape)}", shape=shape, dtype=dtype)


def test_compare_floats_nans_and_integers():
  t = _type((4,), "float32")
  a = np.array([1.0, -2.0, np.nan, np.inf], np.float32)
  same = run.compare("r", t, a, a.copy(), rtol=0, atol=0)
  assert same.ok and same.max_abs == 0
  moved_nan = run.compare("r", t, a, np.array([1.0, -2.0, 0.0, np.inf], np.float32),
                          rtol=1, atol=1)
  assert not moved_nan.ok and moved_nan.mismatches == 1
  off = run.compare("r", t, a, np.array([1.0, -2.5, np.nan, np.inf], np.float32),
                    rtol=0.2, atol=0)
  assert (off.max_abs, off.max_rel) == (0.5, 0.25) and not off.ok  # 0.5 > 0.2 * 2
  assert run.compare("r", t, a, np.array([1.0, -2.5, np.nan, np.inf], np.float32),
                     rtol=0.25, atol=0).ok
  i = _type((2, 3), "int32")
  x = np.arange(6, dtype=np.int32).reshape(2, 3)
  y = x.copy()
  y[1, 2] = 9
  c = run.compare("ids", i, x, y, rtol=1, atol=1)
  assert not c.ok and c.mismatches == 1 and "first at [1, 2]: 5 vs 9" in c.row()


def test_random_inputs_are_seeded_and_typed():
  types = [_type((3, 4), "bfloat16"), _type((5,), "int32"), _type((2,), "bool")]
  a = run.random_inputs(types, seed=3, bound=7)
  b = run.random_inputs(types, seed=3, bound=7)
  assert [x.dtype.name for x in a] == ["bfloat16", "int32", "bool"]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert a[1].min() >= 0 and a[1].max() < 7


# --- sharded modules --------------------------------------------------------------------

def _make_sharded(out) -> None:
  """`before.mlir` (Shardy), `gspmd.mlir` (GSPMD) and `after.mlir` (the shard
  pass's rewrite of `before.mlir`) of a step with its embedding over a (4,)
  "model" mesh, in `out`."""
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  mesh = jax.make_mesh((4,), ("model",), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:4])

  def step(x, e, ids, w):
    def loss(x, e):
      return gshard_op.shared_embedding_softmax(x, e, w, ids, z_loss_weight=0.1).avg_xent
    return jax.value_and_grad(loss, (0, 1))(x, e)

  rep = NamedSharding(mesh, P())
  args = (jax.device_put(jnp.zeros((8, 16)), rep),
          jax.device_put(jnp.zeros((64, 16)), NamedSharding(mesh, P("model"))),
          jax.device_put(jnp.zeros((8, 1), jnp.int32), rep), jax.device_put(jnp.ones((8, 1)), rep))
  shardy = jax.config.jax_use_shardy_partitioner
  with gshard_op.lowering("composite"):
    (out / "before.mlir").write_text(jax.jit(step).lower(*args).as_text())
    jax.config.update("jax_use_shardy_partitioner", False)
    try:
      (out / "gspmd.mlir").write_text(jax.jit(step).lower(*args).as_text())
    finally:
      jax.config.update("jax_use_shardy_partitioner", shardy)
  assert driver.main([str(out / "before.mlir"), "-o", str(out / "after.mlir"),
                      "--pass-pipeline=gshard-shard-vocab{vocab-chunk=8},canonicalize"]) == 0


def _subprocess(argv, env_extra=None):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
  return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300,
                        env=env, cwd=REPO)


def test_sharded_rewrite_on_host_devices(host_devices, tmp_path):
  _make_sharded(tmp_path)
  before, gspmd, after = (str(tmp_path / f) for f in ("before.mlir", "gspmd.mlir", "after.mlir"))
  assert "mhlo.num_partitions = 4" in open(after).read()
  assert "sdy.manual_computation" in open(after).read()
  assert "sdy.sharding" not in open(gspmd).read() and "mhlo.sharding" in open(gspmd).read()
  wrong = tmp_path / "wrong.mlir"
  wrong.write_text(open(after).read().replace(SCALE, "2.600000e-01"))
  # A fresh process with no XLA_FLAGS, since that is the point: gshard-run asks
  # for the 4 host devices itself. Three runs in one process each would be
  # cheaper, but the device count is fixed per process.
  script = textwrap.dedent(f"""
    import json, sys
    sys.path.insert(0, {REPO!r})
    from gshard_op.passes import run
    codes = [run.main([{before!r}, {after!r}]), run.main([{gspmd!r}, {after!r}]),
             run.main([{before!r}, {str(wrong)!r}])]
    print("CODES", json.dumps(codes))
  """)
  proc = _subprocess(["-c", script])
  assert proc.returncode == 0, proc.stderr[-3000:]
  codes = json.loads(proc.stdout.split("CODES", 1)[1])
  assert codes == [0, 0, 1], proc.stdout
  assert "(4 device(s))" in proc.stdout
  assert proc.stdout.count("all 3 results agree") == 2
  assert re.search(r"^#1 result\[1\]\[0\] .* FAIL$", proc.stdout, re.M), proc.stdout


def test_tools_wrapper(tmp_path, before):
  # A fresh process: the command line wrapper itself is what is tested.
  proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gshard-run"), before],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr
  assert "#0 result[0][0]" in proc.stdout


def test_module_from_stdin(capsys, monkeypatch, before, after):
  monkeypatch.setattr(sys, "stdin", io.StringIO(open(after).read()))
  status, out, err = runner(capsys, before, "-")
  assert (status, err) == (0, "")
  assert f"{before} (1 device(s)) vs <stdin> (1)" in out
  status, _, err = runner(capsys, "-", "-")
  assert status == 2 and "only one module can come from stdin" in err
