"""The ahead-of-time slice: compiles for TPU and NVIDIA targets from this host.

`make aot-test` runs these in .venv-aot, which has the compilers
(libtpu, the CUDA plugin), with `--confcutdir=tests/aot` so that this is the
only conftest loaded (tests/conftest.py needs the test extras). In the main
venv they skip, with one reason, because the compilers are absent.

Each (target, shape, route) compiles once per session (`compiled`), and the
rows are printed as tools/aot_check.py's table at the end of the run.
"""

from __future__ import annotations

import os
import sys

# Before JAX starts (it does not here under `make aot-test`): the host is the
# CPU, the chips are compile targets only (DESIGN.md section 9).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "tools")
sys.path.insert(0, TOOLS)

import aot_targets  # noqa: E402

_ROWS: dict[tuple, dict] = {}


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: the whole AOT matrix (minutes); `make aot-test` "
                                     "deselects it, `pytest -m slow tests/aot` runs it")


def compile_row(target: str, shape: str, route: str, dtype: str = aot_targets.ANCHOR_DTYPE):
  """tools/aot_check.py's row for one compile, compiled once per session."""
  key = (target, shape, route, dtype)
  if key not in _ROWS:
    import aot_check
    import jax.numpy as jnp
    _ROWS[key] = aot_check.compile_one(aot_targets.TARGETS[target], aot_targets.SHAPES[shape],
                                       jnp.dtype(dtype), aot_targets.ROUTES[route])
  return _ROWS[key]


@pytest.fixture
def compiled(record_property):
  """compiled(target, shape, route[, dtype]) -> aot_check's row; the test's
  report records each row's temp MiB (or its error)."""
  def get(target, shape, route, dtype=aot_targets.ANCHOR_DTYPE):
    missing = aot_targets.missing_toolchain(aot_targets.TARGETS[target].platform)
    if missing:
      pytest.skip(f"{target}: {', '.join(missing)} not installed (`make aot-test` has them)")
    row = compile_row(target, shape, route, dtype)
    record_property(f"{target} {shape} {dtype} {route}",
                    f"temp {row['temp_mib']:.1f} MiB" if row["status"] == "compiled"
                    else row["error"])
    return row
  return get


def pytest_terminal_summary(terminalreporter):
  if _ROWS:
    import aot_check
    terminalreporter.write_sep("-", f"AOT compiles ({len(_ROWS)}), per device")
    terminalreporter.write_line(aot_check.table(list(_ROWS.values())))
