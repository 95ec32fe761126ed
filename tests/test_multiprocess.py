"""The vocab-sharded training step in a real two-process JAX job.

Two subprocesses (`multiprocess_worker.py`), each with 4 host CPU devices,
join one job through `jax.distributed` with gloo CPU collectives (README,
"Across processes and hosts"): 8 devices in all. Each runs
`jax.value_and_grad(loss)` under `gshard_op.jit` and under plain `jax.jit`,
with the embedding sharded over "vocab" on an 8-device Auto mesh (the
vocabulary's shards on both processes) and on a (2, 4) ("data", "vocab") mesh
(the tokens split between the processes). The gathered loss and gradients
must equal the same step computed here, in one process on one device, and the
float64 NumPy model; the sharded programs must hold no all-gather: rewritten
by the shard pass (`sdy.manual_computation`, no composite left) under
`gshard_op.jit`, partitioned by the primitives themselves under `jax.jit`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import multiprocess_worker as worker
import numpy_reference as npref
from arrays import assert_close
from pass_testing import host_devices_env

HERE = os.path.dirname(os.path.abspath(__file__))
PROCESSES, LOCAL_DEVICES = 2, 4
TIMEOUT_S = 300


def _gloo_available() -> bool:
  from jax._src.lib import _jax
  return hasattr(_jax, "make_gloo_tcp_collectives")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _wait_all(procs, timeout_s: float) -> list:
  """Exit codes, once all have exited; "timeout" for those still running at
  the deadline. One failing stops the wait: its peer would only hang on the
  collective it can no longer join (the caller kills it)."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    codes = [p.poll() for p in procs]
    if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
      return ["killed" if c is None else c for c in codes]
    time.sleep(0.2)
  return ["timeout" if p.poll() is None else p.returncode for p in procs]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  """Runs the two workers; returns `(arrays, facts)` of each process."""
  if not _gloo_available():
    pytest.skip("this jaxlib has no gloo CPU collectives (make_gloo_tcp_collectives)")
  out = tmp_path_factory.mktemp("multiprocess")
  coordinator = f"localhost:{_free_port()}"
  procs = []
  try:
    for i in range(PROCESSES):
      log = open(out / f"process{i}.log", "w")
      procs.append((subprocess.Popen(
          [sys.executable, os.path.join(HERE, "multiprocess_worker.py"), coordinator, str(i),
           str(PROCESSES), str(out)],
          env=host_devices_env(LOCAL_DEVICES), cwd=HERE, stdout=log, stderr=subprocess.STDOUT),
          log))
    codes = _wait_all([p for p, _ in procs], TIMEOUT_S)
  finally:
    for p, log in procs:
      if p.poll() is None:  # timed out, or its peer failed first
        p.kill()
        p.wait()
      log.close()
  logs = "\n".join(f"--- process {i} (rc {c})\n{(out / f'process{i}.log').read_text()[-3000:]}"
                   for i, c in enumerate(codes))
  assert codes == [0] * PROCESSES, f"a worker failed:\n{logs}"
  results = []
  for i in range(PROCESSES):
    with np.load(out / f"process{i}.npz") as arrays, open(out / f"process{i}.json") as f:
      results.append(({k: arrays[k] for k in arrays.files}, json.load(f)))
  return results


@pytest.fixture(scope="module")
def single_process():
  """The same step on this process's one device (the gshard_op.jit pipeline
  leaves an unsharded embedding's step unsharded)."""
  import jax

  import gshard_op
  value, (d_x, d_e) = gshard_op.jit(worker.step_fn())(*worker.inputs())
  return {"loss": np.asarray(value), "d_x": np.asarray(jax.device_get(d_x)),
          "d_e": np.asarray(jax.device_get(d_e))}


def test_job_has_two_processes_and_eight_devices(job):
  for i, (_, facts) in enumerate(job):
    assert facts["process_index"] == i
    assert facts["process_count"] == PROCESSES
    assert facts["device_count"] == PROCESSES * LOCAL_DEVICES
    assert facts["local_device_count"] == LOCAL_DEVICES
  for route in worker.ROUTES:
    assert job[0][1][f"{route}/vocab8"]["axis_spans_processes"] == {"vocab": True}
    assert job[0][1][f"{route}/data2_vocab4"]["axis_spans_processes"]["data"] is True


RUNS = [f"{route}/{mesh}" for route in worker.ROUTES for mesh in worker.MESHES]


@pytest.mark.parametrize("run", RUNS)
def test_sharded_without_all_gather(job, run):
  for _, facts in job:
    f = facts[run]
    if run.startswith("gshard_op.jit/"):
      assert f["composites_left"] == 0 and f["manual_computation"], f
    else:
      assert f["custom_partitioning"], f
    assert not f["all_gather"] and f["all_reduce"] > 0, f
    assert f["d_e_sharded_over_vocab"], f


@pytest.mark.parametrize("run", RUNS)
def test_loss_and_gradients_match_single_process(job, single_process, run):
  """Both processes gathered the same values; they equal the one-device step
  to float32 rounding (summation order differs across shards)."""
  for i, (arrays, _) in enumerate(job):
    for key, want in single_process.items():
      got = arrays[f"{run}/{key}"]
      assert got.shape == want.shape, (i, key, got.shape, want.shape)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7,
                                 err_msg=f"process {i} {run} {key}")
  for key in single_process:
    np.testing.assert_array_equal(job[0][0][f"{run}/{key}"], job[1][0][f"{run}/{key}"],
                                  err_msg=f"{run} {key}: the processes disagree")


def test_single_process_step_matches_numpy(single_process):
  """The reference itself against the float64 model."""
  x, e, w, ids, c = worker.inputs()
  opts = npref.Options(**worker.OPTIONS)
  ref = npref.forward(x, e, w, ids, opts=opts)
  assert_close(single_process["loss"],
               ref["avg_xent"] + ref["z_loss"] + np.sum(c * ref["per_example_xent"]),
               np.float32, "loss")
  cot = npref.loss_cotangents("avg_xent_plus_z_loss", x, e, w, ids, opts=opts)
  cot["g_xent"] = cot["g_xent"] + c
  want_x, want_e = npref.backward(x, e, ids, opts=opts, **cot)
  assert_close(single_process["d_x"], want_x, np.float32, "d_x", kind="grads")
  assert_close(single_process["d_e"], want_e, np.float32, "d_e", kind="grads")
