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
  (`jax._src.xla_bridge`), used by `gshard_op/torch.py`.
"""
