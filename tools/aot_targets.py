"""The chips this project compiles for ahead of time, and what it compiles.

One list for `tools/aot_check.py` (which compiles it all from a host without
the chips), `tests/aot/` (a slice of it in `make test`) and
`tools/device_check.py` (which times the same shapes and routes on a lent
device):

  TARGETS   name -> Target: platform ("tpu" | "cuda"), the topology of one chip
            and of the 2 x 4 mesh, and for NVIDIA the GpuTargetConfigProto
            file under tools/targets/ (each cites NVIDIA's published figures)
  SHAPES    name -> (N, M, V): DESIGN.md section 5's two anchor shapes and small ones
  ROUTES    name -> Route: how the step is compiled (dense reference, plain
            `jax.jit`, `gshard_op.jit`'s default, the Pallas kernels named by
            hand), on one chip or on the mesh
  compile_only_devices(target, mesh=False)  the target's compile-only devices

Compile-only devices come from `jax.experimental.topologies.get_topology_desc`
(DESIGN.md section 9): TPU ones need libtpu (`jax[tpu]`), NVIDIA ones the CUDA
plugin, nvcc and nvJitLink (`jax-cuda12-plugin`, `jax-cuda12-pjrt`,
`nvidia-cuda-nvcc-cu12`, `nvidia-nvjitlink-cu12`), all pinned to the jax in
use; `make aot-check` installs them in `.venv-aot`. Run with
`JAX_PLATFORMS=cpu`: the host stays the CPU (the CUDA plugin then skips its
driver check), and the chips exist only as compile targets.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

TARGET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets")

# The vocab-sharded mesh of every "mesh" route: tokens over one axis, the
# vocabulary over the other (DESIGN.md section 8's 2 x 4 layout).
MESH_SHAPE = (2, 4)
MESH_AXES = ("data", "vocab")


@dataclasses.dataclass(frozen=True)
class Target:
  """A chip to compile for.

  topology: `get_topology_desc`'s topology for the single-chip routes (their
    first device is used): a TPU slice name ("v5e:2x2"), or NVIDIA's
    "hosts x processes x devices" ("1x1x1").
  mesh_topology: the topology of 8 chips for the mesh routes, or None (those
    routes are then not run for this target).
  config: the GpuTargetConfigProto text file under tools/targets/ (cuda only).
  """

  name: str
  platform: str
  topology: str
  mesh_topology: str | None = None
  config: str | None = None
  note: str = ""
  # `jax.Device.device_kind` of the real chip, as a regular expression:
  # tools/device_check.py names the target a lent device times.
  device_kind: str = ""

  @property
  def devices(self) -> int:
    """Devices one compile of a mesh route uses (1 for every other route)."""
    return MESH_SHAPE[0] * MESH_SHAPE[1] if self.mesh_topology else 1

  def config_text(self) -> str | None:
    if self.config is None:
      return None
    with open(os.path.join(TARGET_DIR, self.config)) as f:
      return f.read()


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("tpu-v4", "tpu", "v4:2x2x1", note="32 MiB scoped VMEM by default",
           device_kind=r"^TPU v4"),
    Target("tpu-v5e", "tpu", "v5e:2x2", mesh_topology="v5e:2x4",
           note="16 MiB scoped VMEM by default, 128 MiB physical",
           device_kind=r"^TPU v5( lite|e)"),
    Target("tpu-v5p", "tpu", "v5p:2x2x1", note="16 MiB scoped VMEM by default",
           device_kind=r"^TPU v5p?$"),
    Target("tpu-v6e", "tpu", "v6e:2x2", note="32 MiB scoped VMEM by default",
           device_kind=r"^TPU v6( lite|e)"),
    Target("tpu-v7x", "tpu", "tpu7x:2x2x1", device_kind=r"^TPU ?7x"),
    Target("a100", "cuda", "1x1x1", config="a100_sxm_80gb.txtpb",
           note="163 KiB shared memory per block", device_kind=r"\bA100\b"),
    Target("h100", "cuda", "1x1x1", mesh_topology="1x2x4", config="h100_sxm.txtpb",
           note="227 KiB shared memory per block", device_kind=r"\bH100\b"),
    Target("l4", "cuda", "1x1x1", config="l4.txtpb", note="99 KiB shared memory per block",
           device_kind=r"\bL4\b"),
    Target("b200", "cuda", "1x1x1", config="b200.txtpb", note="compute capability 10.0",
           device_kind=r"\bB200\b"),
)}


def target_of_device_kind(device_kind: str) -> str | None:
  """The matrix target a real device is (its `device_kind`), or None."""
  import re
  return next((t.name for t in TARGETS.values()
               if t.device_kind and re.search(t.device_kind, device_kind)), None)

# N x M x V. The anchors are DESIGN.md section 5's (Gemma 2's and Llama 3's
# vocabularies with 8192 tokens); "small" compiles in seconds, "medium" is
# the issue-27 float32 row (4096 x 2048 x 32000).
ANCHOR_SHAPES = {"gemma": (8192, 2304, 256000), "llama3": (8192, 4096, 128256)}
SMALL_SHAPES = {"small": (256, 512, 8192), "medium": (4096, 2048, 32000)}
SHAPES: dict[str, tuple[int, int, int]] = {**ANCHOR_SHAPES, **SMALL_SHAPES}
ANCHOR_DTYPE = "bfloat16"


@dataclasses.dataclass(frozen=True)
class Route:
  """How the step (`jax.value_and_grad` of `avg_xent` wrt inputs and
  embedding) is compiled.

  kind: "reference" (`jax.jit` of `implementation="reference"`: dense XLA),
    "jit" (`jax.jit` of the op: the primitive's own lowering), or
    "gshard_op.jit" (the passes; `pipeline` None is its default).
  pipeline: a pipeline with "{platform}" to fill with the target's platform.
  mesh: on MESH_SHAPE chips, inputs sharded as MESH_AXES say.
  """

  name: str
  kind: str
  pipeline: str | None = None
  mesh: bool = False

  def pipeline_for(self, platform: str, options: str = "") -> str | None:
    """The pipeline for `platform`, with `options` after the platform (e.g.
    the kernels' block sizes)."""
    if self.pipeline is None:
      return None
    return self.pipeline.format(platform=f"{platform} {options}" if options else platform)


# The kernels named by hand: what they decline goes to the chunked loops, so
# a decline shows as no kernels rather than as the dense composite body.
PALLAS_PIPELINE = "gshard-pallas{{platform={platform}}},gshard-chunk-softmax,canonicalize,cse"

ROUTES: dict[str, Route] = {r.name: r for r in (
    Route("reference", "reference"),
    Route("jit", "jit"),
    Route("gshard_op.jit", "gshard_op.jit"),
    Route("pallas", "gshard_op.jit", PALLAS_PIPELINE),
    Route("mesh reference", "reference", mesh=True),
    Route("mesh jit", "jit", mesh=True),
    Route("mesh gshard_op.jit", "gshard_op.jit", mesh=True),
)}


class ToolchainMissing(RuntimeError):
  """The compiler plugin a target needs is not installed."""


# The distributions a platform's compile-only devices need, with the module
# each installs (probed without importing it).
REQUIREMENTS = {
    "tpu": {"libtpu": "libtpu"},
    "cuda": {"jax-cuda12-plugin": "jax_cuda12_plugin", "jax-cuda12-pjrt": "jax_plugins",
             "nvidia-cuda-nvcc-cu12": "nvidia.cuda_nvcc",
             "nvidia-nvjitlink-cu12": "nvidia.nvjitlink"},
}


def missing_toolchain(platform: str) -> list[str]:
  """The distributions (pip names) `platform`'s compiles need that are absent."""
  absent = []
  for dist, module in REQUIREMENTS[platform].items():
    try:
      found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package (nvidia) is absent
      found = False
    if not found:
      absent.append(dist)
  return absent


def toolchain_hint(platform: str) -> str:
  import jax
  pins = " ".join(f"{d}=={jax.__version__}" if d.startswith("jax-") else d
                  for d in REQUIREMENTS[platform])
  if platform == "tpu":
    pins = f"'jax[tpu]=={jax.__version__}'"
  return f"`make aot-check` (a .venv-aot with them), or pip install {pins}"


def check_toolchain(platform: str) -> None:
  absent = missing_toolchain(platform)
  if absent:
    raise ToolchainMissing(
        f"compiling for {platform} without the chip needs {', '.join(absent)}: "
        f"{toolchain_hint(platform)}")


@functools.cache
def compile_only_devices(target: Target | str, mesh: bool = False) -> tuple:
  """The target's compile-only devices: one chip, or with `mesh` the
  MESH_SHAPE chips of its mesh topology. Raises ToolchainMissing when the
  compiler plugin is not installed, ValueError for a target without a mesh."""
  import jax
  from jax.experimental import topologies

  if isinstance(target, str):
    target = TARGETS[target]
  check_toolchain(target.platform)
  topology = target.mesh_topology if mesh else target.topology
  if topology is None:
    raise ValueError(f"target {target.name} has no mesh topology")
  if target.platform == "cuda" and jax.config.jax_platforms not in ("cpu",):
    # Without it the CUDA plugin looks for a driver; with it the host is the CPU.
    raise RuntimeError("compile-only NVIDIA devices need JAX_PLATFORMS=cpu "
                       f"(got {jax.config.jax_platforms!r})")
  if target.platform == "tpu":
    # Compile-only TPU devices touch no chip, so several processes may load
    # libtpu at once (other checks, other users of the host): without this a
    # second one fails with "Internal error when accessing libtpu
    # multi-process lockfile". And no TPU metadata server is asked for on a
    # host that has none. libtpu reads both when it loads, just below; never
    # set on import, so that a process on a real TPU (device_check) keeps the
    # lock that guards the chips.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  kwargs = {}
  if target.platform == "cuda":
    kwargs = {"target_config": target.config_text(), "topology": topology}
    name = target.name
  else:
    name = topology
  desc = topologies.get_topology_desc(name, target.platform, **kwargs)
  devices = tuple(desc.devices)
  want = MESH_SHAPE[0] * MESH_SHAPE[1] if mesh else 1
  if len(devices) < want:
    raise ValueError(f"{target.name}: topology {topology} has {len(devices)} devices, "
                     f"need {want}")
  return devices[:want]


def parse_names(text: str | None, known: dict, what: str) -> list[str]:
  """Comma-separated names of `known` ("all" or None: every one)."""
  if text is None or text == "all":
    return list(known)
  names = [x.strip() for x in text.split(",") if x.strip()]
  unknown = [x for x in names if x not in known]
  if unknown:
    raise ValueError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
  return names
