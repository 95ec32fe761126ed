"""How Keras's JAX trainer builds and compiles `fit`'s steps.

Why private: `gshard_op.keras.GShardJitTrainer` compiles `fit`'s train and
test steps with `gshard_op.jit` instead of `jax.jit`, and
`gshard_op.keras.lowered_train_step` shows the step `fit` runs without running
it. Keras has public hooks for neither: its trainer wraps a jitted step into
the function `fit` calls with `Trainer._make_function`, builds the model from a
batch with `Trainer._symbolic_build`, and gives the state's shardings under a
distribution with `Trainer._get_state_sharding_spec`.
"""

from __future__ import annotations

import contextlib


def make_function(model, step):
  """The function `fit` calls, around the (jitted) `step` (`steps_per_execution`
  and iterators included)."""
  return model._make_function(step)


def symbolic_build(model, data) -> None:
  """Builds `model` (and its compiled metrics) from one batch, as `fit` does
  before its first step."""
  model._symbolic_build(data_batch=data)


def state_sharding_spec(model) -> tuple:
  """The shardings of `(trainable, non_trainable, optimizer, metrics)`
  variables under the current `keras.distribution`."""
  return model._get_state_sharding_spec()


@contextlib.contextmanager
def capturing_steps(model):
  """Within, `make_train_function` / `make_test_function` record in the
  yielded list the step they wrap (a jitted function, or the plain step when
  the model runs eagerly); `model.train_function` is left as it was."""
  steps = []
  make = model._make_function

  def capture(step, *args, **kwargs):
    steps.append(step)
    return make(step, *args, **kwargs)

  previous = model.train_function
  model._make_function = capture
  try:
    yield steps
  finally:
    del model._make_function
    model.train_function = previous
