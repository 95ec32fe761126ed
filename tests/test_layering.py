"""Imports run one way: the primitives and the passes both stand on the math
(`gshard_op/online_softmax.py`, `chunked.py`, `sharded.py`) and `gshard_op/ir`.

A plain `jax.jit` of the op lowers through the chunked programs alone: no pass
module (and so none of the Pallas kernels, Triton or Mosaic they lower with)
is imported. Checked in a fresh process, where nothing else imported them.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
import jax, numpy as np
from jax.extend import core  # JAX's public primitive API; what it loads is JAX's
before = set(sys.modules)
import gshard_op
x = np.ones((8, 4), np.float32)
e = np.ones((16, 4), np.float32)
step = jax.jit(jax.value_and_grad(lambda x, e: gshard_op.shared_embedding_softmax(
    x, e, np.ones((8, 1), np.float32), class_ids=np.zeros((8,), np.int32)).avg_xent,
    argnums=(0, 1)))
step(x, e)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_plain_jit_lowering_imports_no_pass_and_no_kernel():
  proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                        timeout=300, env={"JAX_PLATFORMS": "cpu", **_env()})
  assert proc.returncode == 0, proc.stderr
  loaded = json.loads(proc.stdout.splitlines()[-1])
  ours = [m for m in loaded if m.startswith("gshard_op")]
  assert "gshard_op.chunked" in ours and "gshard_op.primitive" in ours, ours
  assert not [m for m in ours if m.startswith("gshard_op.passes")], ours
  kernels = [m for m in loaded if any(k in m for k in ("pallas", "triton", "mosaic"))]
  assert not kernels, kernels


def test_the_math_and_the_ir_package_import_no_pass():
  proc = subprocess.run(
      [sys.executable, "-c", "import sys, gshard_op.chunked, gshard_op.fused, gshard_op.sharded, "
       "gshard_op.ir.splice, gshard_op.ir.manual; "
       "print([m for m in sys.modules if m.startswith('gshard_op.passes')])"],
      capture_output=True, text=True, timeout=300, env={"JAX_PLATFORMS": "cpu", **_env()})
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "[]"


def _env() -> dict:
  import os
  return {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
