"""The functional API on torch tensors: `shared_embedding_softmax`.

It checks the tensors (in eager mode; under torch.compile the op's body does),
settles the call's options into the string the custom ops take (a constant of
the graph under torch.compile), flattens the tokens and calls the forward op
(`_ops.py`), whose flat results become Praxis's fields in the batch's shape.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import torch
from torch import Tensor

from gshard_op import functional as jax_functional
from gshard_op.options import SoftmaxOptions, call_options, for_layer_call
from gshard_op.torch import _jax_step as step
from gshard_op.torch._ops import RESULTS, softmax_op

# The options' defaults here: Praxis's, but for torch's mean (see
# `shared_embedding_softmax`).
TORCH_DEFAULTS = SoftmaxOptions(use_tgt_labels_size_as_loss_denominator=False)


# The options of one call, as the ops take them (`step.encode`). Dynamo cannot
# trace `SoftmaxOptions`' checks (NumPy's float32 rounding in `__post_init__`)
# nor JSON, so under torch.compile these two pure functions of constant
# arguments run once, when Dynamo traces the call, and their result is a
# constant of the graph (it guards on the arguments).

@torch.compiler.assume_constant_result
def _call_options(options: SoftmaxOptions | None, **keywords) -> str:
  return step.encode(call_options(options, TORCH_DEFAULTS, **keywords))


@torch.compiler.assume_constant_result
def layer_call_options(options: SoftmaxOptions, training: bool) -> str:
  """The `encode`d options of a layer's call (label smoothing in training only)."""
  return step.encode(for_layer_call(options, training=training))


def check_inputs(inputs: Tensor, embedding: Tensor, label_smoothing: float = 0.0) -> None:
  """`gshard_op.functional.check_inputs` on the tensors' shapes and dtypes, and
  `SoftmaxOptions`' check of a label smoothing, in eager mode. Dynamo cannot
  trace JAX's and NumPy's dtype code (nor pass symbolic shapes to a function
  it would run once); under torch.compile the op's body, which calls
  `gshard_op.functional`, checks the shapes when it runs."""
  if torch.compiler.is_compiling():
    return
  jax_functional.check_inputs(_jax_spec(inputs), _jax_spec(embedding))
  SoftmaxOptions(label_smoothing_prob=label_smoothing)  # finite, in [0, 1]


def _check_labels(batch, num_classes: int, class_ids: Tensor | None,
                  class_probabilities: Tensor | None) -> None:
  """`gshard_op.functional.check_labels` on the labels' shapes and dtypes.
  Under torch.compile, where Dynamo cannot trace JAX's dtype functions, the
  dtype rules in torch's own terms (shapes and dtypes are static there): the
  ids are cast to int32 before the op, so a float id must be refused here."""
  if torch.compiler.is_compiling():
    if (class_ids is None) == (class_probabilities is None):
      raise ValueError("exactly one of class_ids and class_probabilities must be given")
    if class_ids is not None and (class_ids.is_floating_point() or class_ids.is_complex()
                                  or class_ids.dtype == torch.bool):
      raise TypeError(f"class_ids must be integers, got {class_ids.dtype}")
    if class_probabilities is not None and not class_probabilities.is_floating_point():
      raise TypeError(f"class_probabilities must be floating point, got "
                      f"{class_probabilities.dtype}")
    return
  jax_functional.check_labels(tuple(batch), num_classes,
                              *(None if t is None else _jax_spec(t)
                                for t in (class_ids, class_probabilities)))


def _jax_spec(t: Tensor) -> jax.ShapeDtypeStruct:
  """`t`'s shape and dtype as JAX names them (no data crosses)."""
  try:
    dtype = jnp.dtype(str(t.dtype).removeprefix("torch."))
  except TypeError:
    raise TypeError(f"dtype {t.dtype} has no JAX equivalent") from None
  return jax.ShapeDtypeStruct(tuple(t.shape), dtype)


def _flat_labels(class_ids: Tensor | None, class_probabilities: Tensor | None, n: int,
                 num_classes: int) -> tuple[Tensor | None, Tensor | None]:
  """`(ids[N] int32, None)` or `(None, probs[N, V])`, the probabilities detached."""
  if class_ids is not None:
    return class_ids.reshape(n).to(torch.int32), None
  return None, class_probabilities.detach().reshape(n, num_classes)


def _flat_weights(class_weights, x: Tensor, batch) -> Tensor:
  """`class_weights` broadcast to `[..., 1]`, then flattened to `[N]` float32
  (None: all ones); no gradient flows to them."""
  n = x.shape[0]
  if class_weights is None:
    return x.new_ones((n,), dtype=torch.float32)
  class_weights = torch.as_tensor(class_weights, device=x.device)
  weights = torch.broadcast_to(class_weights.detach(), tuple(batch) + (1,))
  return weights.reshape(n).to(torch.float32)


def _fields(results, batch, num_classes: int, return_logits: bool,
            with_entropy: bool) -> dict[str, Tensor | None]:
  """The op's flat results as Praxis's fields, in `batch`'s shape (then
  `per_example_entropy` when asked for)."""
  r = dict(zip(RESULTS, results))
  dense = tuple(batch) + (num_classes,)
  entropy = {"per_example_entropy": r["per_example_entropy"].reshape(batch)} if with_entropy else {}
  return dict(
      logits=r["logits"].reshape(dense) if return_logits else None,
      log_probs=r["log_probs"].reshape(dense) if return_logits else None,
      per_example_argmax=r["per_example_argmax"].reshape(batch),
      per_example_xent=r["per_example_xent"].reshape(batch),
      per_example_weight=r["per_example_weight"].reshape(tuple(batch) + (1,)),
      total_xent=r["total_xent"], total_weight=r["total_weight"], avg_xent=r["avg_xent"],
      avg_xent_weight=r["avg_xent_weight"], z_loss=r["z_loss"], **entropy)


def shared_embedding_softmax(inputs: Tensor, embedding: Tensor, class_weights: Tensor | None,
                             class_ids: Tensor | None = None,
                             class_probabilities: Tensor | None = None, *,
                             soft_cap_logits: float = 0.0, logits_abs_max: float = 0.0,
                             z_loss_weight: float = 0.0, label_smoothing_prob: float = 0.0,
                             use_tgt_labels_size_as_loss_denominator: bool = False,
                             precision: str | None = None, temperature: float = 1.0,
                             with_entropy: bool = False, logit_scale: float | None = None,
                             options: SoftmaxOptions | None = None,
                             ignore_index: int = -100,
                             return_logits: bool = False) -> dict[str, Tensor | None]:
  """Praxis's shared embedding softmax on torch tensors, with torch's mean; see
  `gshard_op.shared_embedding_softmax` for the math.

  Args:
    inputs: `[..., M]` activations; `embedding`: `[V, M]`; both floating point
      (promoted to a common dtype).
    class_weights: broadcastable to `[..., 1]`; None: all ones.
    class_ids: integer `[..., 1]` or `[...]` labels. Tokens labelled
      `ignore_index` get weight 0 and `per_example_xent` 0, as in
      `F.cross_entropy`. Other ids outside `[0, V)` get an all-zero target
      (Praxis).
    class_probabilities: float `[..., V]` soft labels; exactly one of the two.
    use_tgt_labels_size_as_loss_denominator: the denominator of `avg_xent` and
      `z_loss`. False (the default here, unlike Praxis and the JAX front ends):
      the total weight of the tokens that are not ignored, so that with unit
      weights `avg_xent` is `F.cross_entropy`'s mean (and with per-token weights
      its weighted mean); a batch whose labels are all ignored gives NaN, with
      zero gradients, as `F.cross_entropy` does, since torch users guard
      against that NaN (or rely on the zero gradient) already. True: the number
      of tokens, ignored ones included (Praxis), which gives 0 there instead.
    precision: of the op's matmuls, as `jax.lax.Precision` names it
      ("default", "high", "highest", ...); None follows JAX's
      `jax_default_matmul_precision` where the function is called (under
      torch.compile, where it is traced).
    temperature: the logits become `z / T` after the cap and the clip.
    with_entropy: also return `per_example_entropy` (differentiable), the
      softmax's entropy per token, computed in the same sweep as the loss.
    logit_scale: None scales the inputs by `M**-0.5` (Praxis); a float `s > 0`
      multiplies the float32 logits instead: 1.0 is a plain tied head (Gemma,
      Llama, Qwen), and no bf16 rounding of `s` happens.
    options: all the options above as one `gshard_op.SoftmaxOptions`, instead
      of the keywords (`soft_cap_logits` ... `logit_scale`); not both. Its own
      defaults are Praxis's: `SoftmaxOptions()` counts all tokens.
    return_logits: also compute `logits` and `log_probs` (`[..., V]`, dense);
      when False, those fields are None and the logits are never formed.

  Returns:
    A dict with Praxis's fields (`gshard_op.outputs.FIELDS`); the scalar losses
    (`avg_xent`, `total_xent`, `z_loss`) are float32 whatever the inputs'
    dtype. `avg_xent`, `total_xent`, `per_example_xent`, `z_loss` (and the
    logits, when returned) are differentiable w.r.t. `inputs` and `embedding`, once: a second
    derivative raises an error that says what to use instead.
  """
  options = _call_options(
      options, soft_cap_logits=soft_cap_logits, logits_abs_max=logits_abs_max,
      z_loss_weight=z_loss_weight, label_smoothing_prob=label_smoothing_prob,
      use_tgt_labels_size_as_loss_denominator=use_tgt_labels_size_as_loss_denominator,
      precision=precision, temperature=temperature, with_entropy=with_entropy,
      logit_scale=logit_scale)
  return softmax(inputs, embedding, class_weights, class_ids, class_probabilities, options,
                 ignore_index, return_logits)


@torch.compiler.assume_constant_result
def _with_entropy(options: str) -> bool:
  """Whether the `encode`d options ask for the entropy (a constant of the
  graph under torch.compile, as `_call_options` is)."""
  return bool(json.loads(options)["with_entropy"])


def softmax(inputs: Tensor, embedding: Tensor, class_weights: Tensor | None,
            class_ids: Tensor | None, class_probabilities: Tensor | None,
            options: str, ignore_index: int, return_logits: bool) -> dict[str, Tensor | None]:
  """`shared_embedding_softmax` once its options are settled (`step.encode`d)."""
  check_inputs(inputs, embedding)
  num_classes, in_features = embedding.shape
  batch = inputs.shape[:-1]
  _check_labels(batch, num_classes, class_ids, class_probabilities)

  dtype = torch.promote_types(inputs.dtype, embedding.dtype)
  x = inputs.to(dtype).reshape(math.prod(batch), in_features)
  embedding = embedding.to(dtype)
  ids, probs = _flat_labels(class_ids, class_probabilities, x.shape[0], num_classes)
  weights = _flat_weights(class_weights, x, batch)
  with_grads = torch.is_grad_enabled() and (x.requires_grad or embedding.requires_grad)
  results = softmax_op(x, embedding, ids, probs, weights,
                       options, int(ignore_index), bool(return_logits), with_grads)
  return _fields(results, batch, num_classes, return_logits, _with_entropy(options))
