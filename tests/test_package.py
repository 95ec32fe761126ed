"""The package's import structure: names, the old alias, no import cycle.

Each check runs in a fresh interpreter, since what it looks at is the state of
`sys.modules` right after an import.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, cwd: str) -> str:
  proc = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-c", code],
                        cwd=cwd, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout + proc.stderr


@pytest.mark.parametrize("first", ["gshard_op", "gshard_op.passes", "gshard_op.contract",
                                   "gshard_op.pipelined_jit", "gshard_op.primitive"])
def test_any_module_imports_first(first, tmp_path):
  """No import cycle: whichever module comes first, the package loads, and the
  passes register once."""
  out = run_python(f"import {first}\n"
                   "import gshard_op, gshard_op.passes as p\n"
                   "print(sorted(n for n in p.REGISTRY if n.startswith('gshard-')))\n",
                   str(tmp_path))
  assert "'gshard-chunk-softmax'" in out and "'gshard-pallas'" in out


def test_import_gshard_op_is_light(tmp_path):
  """`import gshard_op` loads neither the passes nor flax: `jit` and the NNX
  layer are loaded on first use."""
  out = run_python("import sys, gshard_op\n"
                   "print('passes' in ' '.join(m for m in sys.modules if 'passes' in m),"
                   " 'flax' in sys.modules)\n"
                   "gshard_op.jit, gshard_op.GShardSharedEmbeddingSoftmax\n"
                   "print('gshard_op.passes' in sys.modules, 'flax' in sys.modules)\n",
                   str(tmp_path))
  assert out.split()[:4] == ["False", "False", "True", "True"], out


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_old_top_level_name_is_a_warning_alias(where, tmp_path):
  """`import passes` (from a checkout, or installed) gives the same modules as
  `gshard_op.passes`, with a DeprecationWarning."""
  out = run_python("import passes, passes.chunk\n"
                   "from passes.framework import register\n"
                   "import gshard_op.passes as p\n"
                   "print(passes is p, passes.chunk is p.chunk, register is p.framework.register)\n",
                   ROOT if where == "checkout" else str(tmp_path))
  assert "True True True" in out, out
  assert "DeprecationWarning" in out and "gshard_op.passes" in out


def test_nnx_layer_lives_in_gshard_op_nnx():
  """The NNX layer's module is `gshard_op.nnx` (beside `keras` and `torch`), and
  the top-level name stays."""
  import gshard_op
  import gshard_op.nnx
  assert gshard_op.GShardSharedEmbeddingSoftmax is gshard_op.nnx.GShardSharedEmbeddingSoftmax
  assert gshard_op.GShardSharedEmbeddingSoftmax.__module__ == "gshard_op.nnx"
