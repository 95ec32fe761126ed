"""The private APIs of JAX, Keras and Flax that gshard_op relies on, one module each.

Each module says why the public API does not suffice, wraps the private names
in a few small functions, and is the only place that touches them, so that an
upgrade that moves one breaks here. `tests/test_private.py` checks every one
of them (that it exists, with the signature and behaviour used here) and
fails by name when one moves:

* `jax_config`: configuration options of our own that `jax.jit` keys on
  (`jax._src.config`), used by `gshard_op/lowering.py`.
* `keras_trainer`: how Keras's JAX trainer builds `fit`'s step
  (`Trainer._make_function`, `_symbolic_build`, `_get_state_sharding_spec`),
  used by `gshard_op/keras.py`.
* `nnx_jit`: the `jax.jit` inside `nnx.jit`'s wrapper (`jitted_fn`), used by
  `gshard_op/pipelined_jit.py`.
* `jax_backend`: whether JAX's backends started, without starting them
  (`jax._src.xla_bridge`), used by `gshard_op/torch/_allocator.py` and `passes/run.py`.
* `jax_lowered`: the platforms and devices a `jax.stages.Lowered` is for
  (`Lowered._lowering`), used by `gshard_op/pipelined_jit.py` and
  `gshard_op/partitioning.py`.
* `jax_lowering_context`: what a lowering rule's context says about the
  program (export, the SPMD axis context and its devices) and JAX's registry
  of primitives that need the devices to lower (`jax._src.sharding_impls`,
  `jax._src.dispatch`), used by `gshard_op/partitioning.py`.
* `jax_sharding`: a sharding made from an XLA `HloSharding`
  (`jax._src.sharding_impls.GSPMDSharding`), used by `passes/run.py`.
"""
