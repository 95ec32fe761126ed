"""lit configuration of the gshard-opt IR tests (`make lit`).

`gshard-opt`, `gshard-run` and `FileCheck` in RUN lines resolve to the console
scripts and the Python `filecheck` installed next to the Python running lit
(the project's `.venv`), falling back to the checkout's `tools/gshard-opt`,
`tools/gshard-run` and `python -m filecheck`. `not` is lit's builtin; pass
plugins used by the tests live in `tests/plugins/` (`%S/../plugins/`).
"""

import os
import shutil
import sys

import lit.formats

config.name = "gshard-opt"  # noqa: F821 (lit provides `config`)
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir"]
config.excludes = ["Inputs", "Output"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.test_source_root, "Output")

repo_root = os.path.dirname(os.path.dirname(config.test_source_root))
bin_dir = os.path.dirname(sys.executable)


def _tool(name: str, fallback: list[str]) -> str:
  """The executable `name` next to this Python, else on PATH, else `fallback`."""
  candidate = os.path.join(bin_dir, name)
  if os.access(candidate, os.X_OK):
    return f'"{candidate}"'
  found = shutil.which(name)
  if found:
    return f'"{found}"'
  return " ".join(f'"{part}"' for part in fallback)


gshard_opt = _tool("gshard-opt", [sys.executable, os.path.join(repo_root, "tools", "gshard-opt")])
gshard_run = _tool("gshard-run", [sys.executable, os.path.join(repo_root, "tools", "gshard-run")])
filecheck = _tool("filecheck", [sys.executable, "-m", "filecheck"])

# Whole words only: `tools/gshard-opt` or `--check-prefix=FileCheck-ish` stay as they are.
config.substitutions.append((r"(?<![\w./-])gshard-opt(?![\w.-])", gshard_opt))
config.substitutions.append((r"(?<![\w./-])gshard-run(?![\w.-])", gshard_run))
config.substitutions.append((r"(?<![\w./-])FileCheck(?![\w.-])", filecheck))

# The tools import jax: keep them quiet and deterministic on any machine.
config.environment["JAX_PLATFORMS"] = "cpu"
config.environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
config.environment["PYTHONPATH"] = os.pathsep.join(
    p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)
for var in ("HOME", "TMPDIR", "XDG_CACHE_HOME"):
  if var in os.environ:
    config.environment[var] = os.environ[var]
