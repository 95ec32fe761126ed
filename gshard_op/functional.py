"""`shared_embedding_softmax`: the functional form of the layer.

Validates the Praxis-shaped arguments, flattens the leading dimensions into
tokens, runs the per-token composite (or, with `implementation="reference"`, the
dense reference under JAX's own autodiff) and assembles the `SoftmaxOutput`.
Only `[N]`-sized reductions happen out here. `logits` and `log_probs` are
`LazyField`s, dense expressions built only when read (`_dense_fields`): a
caller who never reads them never traces a `[N, V]` matmul, under `jax.jit`,
on an Explicit mesh, or eagerly.

The layers' own math lives here too, once for the NNX and Keras layers
(`emb_lookup`, `get_logits`), and the argument checks every front end shares
(`check_inputs`, `check_labels`: shapes and dtypes only, so torch runs them on
its tensors' shapes and dtypes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gshard_op import contract, reference
from gshard_op.options import SoftmaxOptions, call_options
from gshard_op.outputs import LazyField, SoftmaxOutput
from gshard_op.primitive import per_token_softmax

IMPLEMENTATIONS = ("composite", "reference")


def check_labels(batch: tuple, num_classes: int, class_ids, class_probabilities) -> None:
  """Checks the labels of `batch`-shaped tokens by shape and dtype only:
  exactly one of ids (integer, `batch + (1,)` or `batch`) and probabilities
  (floating point, `batch + (num_classes,)`). Anything with `.shape` and a
  NumPy `.dtype` will do (arrays, `jax.ShapeDtypeStruct`s of torch tensors),
  so every front end checks labels with the same code and the same words."""
  batch = tuple(batch)
  if (class_ids is None) == (class_probabilities is None):
    raise ValueError("exactly one of class_ids and class_probabilities must be given, got "
                     + ("both" if class_ids is not None else "neither"))
  if class_ids is not None:
    if not jnp.issubdtype(class_ids.dtype, jnp.integer):
      raise TypeError(f"class_ids must be integers, got {class_ids.dtype}")
    if tuple(class_ids.shape) not in (batch, batch + (1,)):
      raise ValueError(f"class_ids must have shape {list(batch + (1,))} (or {list(batch)}) "
                       f"for {list(batch)} tokens, got {list(class_ids.shape)}")
    return
  if not jnp.issubdtype(class_probabilities.dtype, jnp.floating):
    raise TypeError(f"class_probabilities must be floating point, got {class_probabilities.dtype}")
  if tuple(class_probabilities.shape) != batch + (num_classes,):
    raise ValueError(f"class_probabilities must have shape {list(batch + (num_classes,))} "
                     f"for {list(batch)} tokens and num_classes={num_classes}, "
                     f"got {list(class_probabilities.shape)}")


def _holds_jax_values(tree) -> bool:
  """Whether `tree` (an array, a scalar, or nested lists of them) holds a JAX
  array or a tracer: then only jnp can make an array of it (NumPy cannot
  convert a tracer, e.g. a list of traced scalars under `jax.jit`)."""
  return any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(tree))


def _flat_labels(inputs, num_classes, class_ids, class_probabilities):
  """Checks the labels against `inputs[..., M]`; returns ids `[N]` or probs `[N, V]`."""
  if class_ids is not None:
    # Not jnp.asarray when NumPy can: with x64 off it would wrap int64 ids to int32.
    np_or_jnp = jnp if _holds_jax_values(class_ids) else np
    class_ids = np_or_jnp.asarray(class_ids)
  if class_probabilities is not None:
    class_probabilities = jnp.asarray(class_probabilities)
  check_labels(inputs.shape[:-1], num_classes, class_ids, class_probabilities)
  if class_ids is not None:
    return _int32_ids(np_or_jnp, class_ids.reshape(-1), num_classes)
  return class_probabilities.reshape(-1, num_classes)


def _int32_ids(np_or_jnp, ids, num_classes: int):
  """Ids of any integer dtype as int32, those outside `[0, V)` as -1 (still
  out of range: an all-zero target) rather than wrapped into range."""
  info = np.iinfo(ids.dtype)
  if info.min >= np.iinfo(np.int32).min and info.max <= np.iinfo(np.int32).max:
    return ids.astype(np.int32)
  inside = (ids >= 0) & (ids < num_classes)
  in_range = np_or_jnp.where(inside, ids, 0).astype(np.int32)  # exact: V < 2**31
  return np_or_jnp.where(inside, in_range, np.int32(-1))


def _flat_weights(inputs, class_weights):
  """`class_weights` broadcast to `[..., 1]`, then flattened to `[N]` float32."""
  class_weights = jnp.asarray(class_weights)
  target = inputs.shape[:-1] + (1,)
  try:
    shape = np.broadcast_shapes(class_weights.shape, target)
  except ValueError:
    shape = None
  if shape != target:
    raise ValueError(f"class_weights of shape {list(class_weights.shape)} does not broadcast "
                     f"to {list(target)} for inputs{list(inputs.shape)}")
  return jnp.broadcast_to(class_weights, target).reshape(-1).astype(jnp.float32)


def check_shared_embedding(name: str, value, kind: type, kind_name: str, num_classes: int,
                           in_features: int) -> None:
  """Checks a layer's `name=` argument, an existing embedding to share: a
  `kind` (the framework's variable type, `kind_name` in the message) of shape
  `[num_classes, in_features]`. The NNX, Keras and torch layers share it."""
  if not isinstance(value, kind):
    raise TypeError(f"{name} must be {kind_name} (to share it), got {type(value).__name__}")
  if tuple(value.shape) != (num_classes, in_features):
    raise ValueError(f"{name} must be [num_classes={num_classes}, "
                     f"in_features={in_features}], got {list(value.shape)}")


def check_inputs(inputs, embedding):
  """Checks `inputs[..., M]` against `embedding[V, M]`."""
  if embedding.ndim != 2 or 0 in embedding.shape:
    raise ValueError(f"embedding must be [num_classes, in_features] with both > 0, "
                     f"got {list(embedding.shape)}")
  if embedding.shape[0] > contract.MAX_SIZE:
    raise ValueError(f"num_classes = {embedding.shape[0]} exceeds 2**31 - 1: class ids "
                     "and per_example_argmax are int32")
  if inputs.ndim < 1 or inputs.shape[-1] != embedding.shape[1]:
    raise ValueError(f"inputs must be [..., in_features={embedding.shape[1]}], "
                     f"got {list(inputs.shape)}")
  if math.prod(inputs.shape[:-1]) > contract.MAX_SIZE:
    raise ValueError(f"inputs hold {math.prod(inputs.shape[:-1])} tokens, more than "
                     "2**31 - 1 (token positions are int32)")
  for name, a in (("inputs", inputs), ("embedding", embedding)):
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise TypeError(f"{name} must be floating point, got {a.dtype}")


def emb_lookup(embedding, ids):
  """The rows `embedding[ids]`: `[...]` ids give `[..., M]`, the layers' token
  lookup. An id outside `[0, V)` gives a row of zeros, as Praxis's one-hot
  matmul does (no wrap-around)."""
  ids = jnp.asarray(ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(f"ids must be integers, got {ids.dtype}")
  valid = (ids >= 0) & (ids < embedding.shape[0])
  rows = jnp.take(embedding, jnp.where(valid, ids, 0), axis=0)
  return jnp.where(valid[..., None], rows, jnp.zeros((), rows.dtype))


def get_logits(inputs, embedding, options: SoftmaxOptions):
  """`inputs[..., M]` to `[..., V]` logits in the inputs' dtype: scaled (by
  `M**-0.5` or `options.logit_scale`), capped and clipped as `options` say
  (the layers' `get_logits`)."""
  check_inputs(inputs, embedding)
  num_classes, in_features = embedding.shape
  logits = reference.logits(inputs.reshape(-1, in_features), embedding, options)
  return logits.astype(inputs.dtype).reshape(inputs.shape[:-1] + (num_classes,))


def _dense_fields(x, embedding, lse, options: SoftmaxOptions, shape, dtype):
  """`(logits, log_probs)` as `LazyField`s of `shape` and `dtype`: the dense
  `reference.logits` (differentiable by JAX itself) and `logits - lse`, built
  on first read, the float32 logits once for both."""
  memo = []

  def float32_logits():
    if not memo:
      memo.append(reference.logits(x, embedding, options))
    return memo[0]

  return (LazyField(lambda: float32_logits().astype(dtype).reshape(shape), shape, dtype),
          LazyField(lambda: (float32_logits() - lse[:, None]).astype(dtype).reshape(shape),
                    shape, dtype))


def shared_embedding_softmax(inputs, embedding, class_weights, class_ids=None,
                             class_probabilities=None, *, soft_cap_logits=0.0,
                             logits_abs_max=0.0, z_loss_weight=0.0,
                             label_smoothing_prob=0.0,
                             use_tgt_labels_size_as_loss_denominator=True,
                             precision=None, temperature=1.0, with_entropy=False,
                             logit_scale=None, options: SoftmaxOptions | None = None,
                             implementation="composite") -> SoftmaxOutput:
  """Logits, softmax cross-entropy and z-loss of a shared embedding (Praxis semantics).

  Args:
    inputs: `[..., M]` activations.
    embedding: `[V, M]`, the weight shared with the input embedding lookup.
    class_weights: broadcastable to `[..., 1]`.
    class_ids: integer `[..., 1]` (or `[...]`) labels. Ids outside `[0, V)` get
      an all-zero target, as Praxis's one-hot gives: their cross-entropy is 0
      (plus the label-smoothing term) and so is their gradient apart from
      smoothing. Mask such tokens (padding) with `class_weights` as usual.
    class_probabilities: float `[..., V]` soft labels; exactly one of the two.
    label_smoothing_prob: applied as given; the layer passes 0 when it runs
      deterministically (evaluation).
    precision: of the op's matmuls, as `jax.lax.Precision` names it; None
      follows `jax.default_matmul_precision`, as a dense `jnp.dot` does.
    temperature: `T > 0`; the logits become `z / T` after the cap and the
      clip, for every field (the argmax is unchanged).
    with_entropy: also return `per_example_entropy` `[...]`, the entropy of
      the softmax over the final logits, `logsumexp(z) - sum(softmax(z) * z)`,
      differentiable and computed in the same sweep as the loss; without it
      the field is absent and nothing is computed for it.
    logit_scale: None scales the inputs by `M**-0.5` in their dtype (Praxis);
      a float `s > 0` multiplies the float32 logits instead (never rounded to
      the inputs' dtype): 1.0 is the plain tied head of Gemma, Llama, Qwen.
    options: all the options above as one `SoftmaxOptions`, instead of the
      keywords (`soft_cap_logits` ... `logit_scale`); giving both is an error.
    implementation: "composite" (the primitive, rewritten by `gshard_op.jit`'s
      passes) or "reference" (the dense math, differentiated by JAX itself).

  Returns:
    A `SoftmaxOutput`. `logits` and `log_probs` are `[..., V]` and
    `per_example_*` are `[...]` in the inputs' dtype (`per_example_argmax` is
    int32); totals, `avg_xent` and `z_loss` are float32 scalars whatever the
    inputs' dtype (Praxis returns `avg_xent` in the activations' dtype). The
    denominator is the number of tokens
    (`use_tgt_labels_size_as_loss_denominator`) or the total weight.
    `logits` and `log_probs` are built when first read (or when the output
    is flattened as a pytree, e.g. returned from `jax.jit`): reading one
    costs the dense `[N, V]` logits, reading neither costs nothing.
  """
  inputs, embedding = jnp.asarray(inputs), jnp.asarray(embedding)
  check_inputs(inputs, embedding)
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
  options = call_options(
      options, soft_cap_logits=soft_cap_logits, logits_abs_max=logits_abs_max,
      z_loss_weight=z_loss_weight, label_smoothing_prob=label_smoothing_prob,
      use_tgt_labels_size_as_loss_denominator=use_tgt_labels_size_as_loss_denominator,
      precision=precision, temperature=temperature, with_entropy=with_entropy,
      logit_scale=logit_scale).with_default_precision()
  num_classes, in_features = embedding.shape
  batch = inputs.shape[:-1]
  labels = _flat_labels(inputs, num_classes, class_ids, class_probabilities)
  weights = _flat_weights(inputs, class_weights)
  x = inputs.reshape(-1, in_features)

  if implementation == "composite":
    xent, argmax, lse, lse_squared, *entropy = per_token_softmax(x, embedding, labels, options)
  else:
    xent, argmax, lse, lse_squared, *entropy = reference.per_token_forward(
        x, embedding, labels, options)
  argmax = jax.lax.stop_gradient(argmax)

  total_xent = jnp.sum(xent * weights)
  total_weight = jnp.sum(weights)
  if options.use_tgt_labels_size_as_loss_denominator:
    denominator = jnp.asarray(math.prod(batch), jnp.float32)
  else:
    denominator = total_weight
  if options.z_loss_weight > 0:
    z_loss = options.z_loss_weight * jnp.sum(lse_squared * weights) / denominator
  else:
    z_loss = jnp.zeros((), jnp.float32)

  dtype = inputs.dtype
  logits, log_probs = _dense_fields(x, embedding, lse, options, batch + (num_classes,), dtype)
  optional = {}
  if options.with_entropy:
    optional["per_example_entropy"] = entropy[0].astype(dtype).reshape(batch)
  return SoftmaxOutput(
      logits=logits,
      log_probs=log_probs,
      per_example_argmax=argmax.reshape(batch),
      per_example_xent=xent.astype(dtype).reshape(batch),
      per_example_weight=weights.reshape(batch + (1,)),
      total_xent=total_xent,
      total_weight=total_weight,
      avg_xent=total_xent / denominator,
      avg_xent_weight=denominator,
      z_loss=z_loss,
      **optional,
  )
