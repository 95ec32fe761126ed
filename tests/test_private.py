"""The private APIs of JAX, Flax and Keras behind `gshard_op/_private/`.

One test per private thing, checking that it exists with the signature and the
behaviour gshard_op relies on, so that an upgrade that moves one fails here, by
name, rather than somewhere in a lowering or a `fit`.
"""

from __future__ import annotations

import inspect
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gshard_op._private import jax_config, nnx_jit  # noqa: E402


def parameters(fn) -> list[str]:
  return list(inspect.signature(fn).parameters)


# --- jax._src.config -----------------------------------------------------------------------

def test_jax_config_constructors_take_what_we_pass():
  from jax._src import config
  assert {"name", "enum_values", "default", "help", "include_in_jit_key",
          "include_in_trace_context"} <= set(parameters(config.enum_state)), \
      "jax._src.config.enum_state moved or changed"
  assert {"name", "default", "help", "parser", "include_in_jit_key",
          "include_in_trace_context"} <= set(parameters(config.State.__init__)), \
      "jax._src.config.State moved or changed"
  assert callable(jax.config.add_option), "jax.config.add_option is gone"


@pytest.fixture(scope="module")
def options():
  """One option of each kind, made once per process (JAX refuses a name twice)."""
  return (jax_config.traced_enum("gshard_op_test_private_mode", ("a", "b"), "a", help="a test"),
          jax_config.traced_float("gshard_op_test_private_size", None, "a test",
                                  parser=lambda v: None if v is None else float(v)))


def test_jax_config_options_retrace_jit_when_they_change(options):
  """What lowering.py needs: `.value`, a context manager, `jax.config.update`
  for the float, and a change of either retraces a jitted function."""
  mode, size = options
  traces = []

  @jax.jit
  def f(x):
    traces.append((mode.value, size.value))
    return x + 1

  f(jnp.ones(2))
  assert traces == [("a", None)]
  with mode("b"):
    f(jnp.ones(2))
  with size(2.0):
    f(jnp.ones(2))
  f(jnp.ones(2))  # back to the first: cached
  assert traces == [("a", None), ("b", None), ("a", 2.0)]
  jax.config.update("gshard_op_test_private_size", 3.0)
  try:
    assert size.value == 3.0
    f(jnp.ones(2))
    assert traces[-1] == ("a", 3.0)
  finally:
    jax.config.update("gshard_op_test_private_size", None)


# The private names each module wraps, and the module that may use them.
WRAPPED = {
    "jax_config.py": ("from jax._src import config", "jax._src.config"),
    "keras_trainer.py": ("._make_function", "._symbolic_build", "._get_state_sharding_spec"),
    "nnx_jit.py": (".jitted_fn",),
    "jax_backend.py": ("xla_bridge",),
    "jax_lowered.py": ('"_platforms"', '"_device_list"', "CompileOnlyPyClient"),
    "jax_lowering_context.py": ("sharding_impls", "ShardingContext)", ".lowering_parameters",
                                ".axis_context", '"device_assignment"',
                                "prim_requires_devices_during_lowering", "jax._src.dispatch",
                                "from jax._src import dispatch"),
    "jax_sharding.py": ("GSPMDSharding",),
}

# The folders of product code the guard scans (all but gshard_op/_private/).
SCANNED = ("gshard_op", "passes", "tools")


def test_only_the_private_modules_touch_what_they_wrap():
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  scanned = 0
  for folder in SCANNED:
    for dirpath, _, filenames in os.walk(os.path.join(repo, folder)):
      if os.path.basename(dirpath) == "_private":
        continue
      for filename in filenames:
        if not filename.endswith(".py"):
          continue
        with open(os.path.join(dirpath, filename)) as f:
          source = f.read()
        scanned += 1
        where = os.path.relpath(f.name, repo)
        for module, names in WRAPPED.items():
          for name in names:
            assert name not in source, (f"{where} uses {name}: go "
                                        f"through gshard_op/_private/{module}")
        assert "jax._src" not in source, (f"{where} uses jax._src: wrap it in a module of "
                                          "gshard_op/_private/ (and list it in WRAPPED)")
  assert scanned > 20, f"the guard read only {scanned} files under {SCANNED}"


def test_jax_backend_started_is_answered_without_starting_it():
  """In a fresh process: False before the first array, True after, and asking
  starts nothing (the allocator variables must be set before the start)."""
  import subprocess
  import sys
  from jax._src import xla_bridge
  assert parameters(xla_bridge.backends_are_initialized) == [], \
      "jax._src.xla_bridge.backends_are_initialized moved or changed"
  code = ("from gshard_op._private import jax_backend as b\n"
          "print(b.backends_started(), b.backends_started())\n"
          "import jax.numpy as jnp; jnp.ones(1)\n"
          "print(b.backends_started())\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["False", "False", "True"], proc.stdout


# --- jax.stages.Lowered's target ----------------------------------------------------------

def test_lowered_says_its_platforms_and_devices():
  """`jax_lowered` reads the platforms a program was lowered for (also when
  named by `lowering_platforms`) and its devices; host devices are not
  compile-only."""
  from gshard_op._private import jax_lowered
  lowered = jax.jit(lambda x: x + 1).lower(jnp.ones(2))
  assert jax_lowered.platforms(lowered) == ("cpu",), "Lowered._lowering._platforms moved"
  assert jax_lowered.devices(lowered) == (jax.devices()[0],), \
      "Lowered._lowering._device_list moved"
  for_tpu = jax.jit(lambda x: x + 1).trace(jnp.ones(2)).lower(lowering_platforms=("tpu",))
  assert jax_lowered.platforms(for_tpu) == ("tpu",)
  assert not jax_lowered.is_compile_only(jax.devices()[0])


# --- a lowering rule's context ------------------------------------------------------------

def test_lowering_context_internals_exist():
  from jax._src import dispatch, sharding_impls
  assert hasattr(sharding_impls, "ShardingContext"), \
      "jax._src.sharding_impls.ShardingContext moved"
  fields = {f.name for f in __import__("dataclasses").fields(sharding_impls.ShardingContext)}
  assert {"num_devices", "device_assignment"} <= fields, \
      f"jax._src.sharding_impls.ShardingContext's fields changed: {fields}"
  assert callable(getattr(dispatch.prim_requires_devices_during_lowering, "add", None)), \
      "jax._src.dispatch.prim_requires_devices_during_lowering moved or changed"


def test_lowering_context_says_export_partitioning_and_devices():
  """What partitioning.py reads in its lowering rule: whether the lowering is
  for `jax.export`, how many devices the SPMD partitioner splits the program
  across (None in a `shard_map` body), and the devices, which reach the rule
  for a primitive registered by `require_devices_during_lowering`."""
  from jax.extend.core import Primitive
  from jax.interpreters import mlir

  from gshard_op._private import jax_lowering_context as context

  seen = []
  prim = Primitive("gshard_op_test_private_context")
  prim.def_impl(lambda x: x)
  prim.def_abstract_eval(lambda x: x)

  def rule(ctx, x):
    seen.append((context.for_export(ctx), context.spmd_device_count(ctx),
                 context.device_assignment(ctx)))
    return [x]

  mlir.register_lowering(prim, rule)
  context.require_devices_during_lowering(prim)
  x = jnp.ones(2)
  jax.jit(prim.bind).lower(x)
  assert seen[-1] == (False, 1, (jax.devices()[0],)), seen
  jax.export.export(jax.jit(prim.bind))(x)
  assert seen[-1][0] is True, seen
  mesh = jax.make_mesh((1,), ("d",))
  jax.jit(jax.shard_map(prim.bind, mesh=mesh, in_specs=jax.P(), out_specs=jax.P())).lower(x)
  assert seen[-1][1] is None, f"a shard_map body counted as SPMD-partitioned: {seen}"


# --- a sharding from an HloSharding -------------------------------------------------------

def test_sharding_from_hlo_sharding_places_arrays():
  """What gshard-run does with an executable's parameter and output shardings
  (XLA `HloSharding`s): places inputs by them and assembles results by them.
  (tests/test_run.py runs it on several devices.)"""
  from jax._src import sharding_impls
  from jaxlib import xla_client as xc

  from gshard_op._private import jax_sharding
  assert "GSPMDSharding" in dir(sharding_impls), "jax._src.sharding_impls.GSPMDSharding moved"
  devices = jax.devices()[:1]
  sharding = jax_sharding.from_hlo_sharding(devices, xc.HloSharding.replicate())
  assert isinstance(sharding, jax.sharding.Sharding)
  placed = jax.device_put(np.arange(4.0, dtype=np.float32), sharding)
  assert placed.sharding.device_set == set(devices)
  pieces = placed.addressable_data(0)
  whole = jax.make_array_from_single_device_arrays((4,), sharding, [pieces])
  np.testing.assert_array_equal(whole, np.arange(4.0))


# --- nnx.jit's jitted_fn -------------------------------------------------------------------

def test_nnx_jit_keeps_a_jax_jit_as_jitted_fn():
  from flax import nnx
  wrapped = nnx.jit(lambda m, x: m(x))
  inner = nnx_jit.inner_jit(wrapped)
  for method in nnx_jit.USED_METHODS:
    assert callable(getattr(inner, method, None)), f"nnx.jit's jitted_fn has no {method}"


def test_nnx_jit_calls_only_the_replaced_jitted_fn():
  """Every entry of nnx.jit's wrapper (call, lower, trace, eval_shape) goes
  through the replacement, and graph nodes are updated in place as usual."""
  from flax import nnx

  class Counter(nnx.Module):
    def __init__(self):
      self.count = nnx.BatchStat(jnp.zeros(()))

    def __call__(self, x):
      self.count[...] += 1
      return x * 2

  used = []

  class Spy:
    def __init__(self, inner):
      self.inner = inner

    def __getattr__(self, name):
      used.append(name)
      return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
      used.append("__call__")
      return self.inner(*args, **kwargs)

  wrapped = nnx_jit.replace_inner_jit(nnx.jit(lambda m, x: m(x)), Spy)
  model, x = Counter(), jnp.ones(3)
  np.testing.assert_array_equal(wrapped(model, x), 2 * np.ones(3))
  assert int(model.count[...]) == 1  # the in-place update came back
  wrapped.lower(model, x)
  wrapped.trace(model, x)
  wrapped.eval_shape(model, x)
  assert set(nnx_jit.USED_METHODS) <= set(used), used
  assert set(used) <= set(nnx_jit.USED_METHODS), f"nnx.jit now also uses {set(used)}"


# --- Keras's JAX trainer ------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras():
  keras = pytest.importorskip("gshard_op.keras").keras  # no keras.json left behind
  if keras.config.backend() != "jax":
    pytest.skip("Keras runs on another backend here")
  return keras


def test_keras_trainer_internals_exist(keras):
  from keras.src.backend.jax.trainer import JAXTrainer
  assert parameters(JAXTrainer._make_function)[:2] == ["self", "step_function"], \
      "JAXTrainer._make_function moved or changed"
  assert "data_batch" in parameters(JAXTrainer._symbolic_build), \
      "Trainer._symbolic_build moved or changed"
  assert parameters(JAXTrainer._get_state_sharding_spec) == ["self"], \
      "JAXTrainer._get_state_sharding_spec moved or changed"
  assert issubclass(keras.Model, JAXTrainer)


def test_keras_trainer_builds_and_captures_fit_steps(keras):
  """`symbolic_build` builds a model from a batch; `make_train_function` goes
  through `_make_function`, so `capturing_steps` sees the jitted step `fit`
  runs; `state_sharding_spec` gives four lists of shardings."""
  from gshard_op._private import keras_trainer
  model = keras.Sequential([keras.layers.Dense(3)])
  model.compile(optimizer="sgd", loss="mse")
  data = keras.utils.pack_x_y_sample_weight(np.ones((4, 2), np.float32),
                                            np.ones((4, 3), np.float32))
  keras_trainer.symbolic_build(model, data)
  assert model.built and len(model.trainable_variables) == 2
  model.optimizer.build(model.trainable_variables)
  before = model.train_function
  with keras_trainer.capturing_steps(model) as steps:
    model.make_train_function(force=True)
  assert len(steps) == 1 and hasattr(steps[0], "lower"), steps
  assert model.train_function is before
  assert "_make_function" not in vars(model)
  function = keras_trainer.make_function(model, steps[0])
  assert callable(function)
  shardings = keras_trainer.state_sharding_spec(model)
  assert len(shardings) == 4 and len(shardings[0]) == 2
