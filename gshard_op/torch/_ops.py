"""The two `torch.library.custom_op`s and their autograd registration.

Each op has a `register_fake`, so that `torch.compile(fullgraph=True)` traces
them without graph breaks:

* `gshard::shared_embedding_softmax`: every output field; when autograd needs
  gradients it also returns, unseen by the caller, the gradients of
  `avg_xent + z_loss` w.r.t. the inputs and the embedding, computed in the same
  compiled step (the fused three-matmul sweep), as Liger's kernels do.
* `gshard::shared_embedding_softmax_backward`, the op's autograd formula. When
  the cotangents are those of `avg_xent + z_loss` up to one scalar factor
  (`total_xent` counts as `avg_xent` times the denominator), it scales the saved
  gradients; otherwise (per-token outputs carry gradients, or `z_loss` and
  `avg_xent` are weighted differently) it runs the general gradient: `jax.vjp`
  of the same function with every cotangent. The choice is made on the values,
  inside the op, where torch.compile does not trace.

Their bodies hand the tensors to JAX (`_dlpack.py`), run the step of the call's
options (`_jax_step.py`; looked up there at each call) and hand the results back.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gshard_op.torch import _jax_step as step
from gshard_op.torch._dlpack import to_jax, to_torch

# The differentiable outputs, in the op's order (logits/log_probs and the
# entropy only on request).
_DIFF = ("per_example_xent", "total_xent", "avg_xent", "z_loss", "logits", "log_probs",
         "per_example_entropy")
# The op's results: the fields, then the saved gradients (empty when not asked for).
RESULTS = ("per_example_xent", "per_example_argmax", "per_example_weight", "total_xent",
           "total_weight", "avg_xent", "avg_xent_weight", "z_loss", "logits", "log_probs",
           "per_example_entropy", "d_inputs", "d_embedding")
_FIELD_RESULTS = RESULTS[:-2]


# --- the forward op -------------------------------------------------------------------

@torch.library.custom_op("gshard::shared_embedding_softmax", mutates_args=())
def softmax_op(x: Tensor, embedding: Tensor, ids: Tensor | None, probs: Tensor | None,
               weights: Tensor, options: str, ignore_index: int, return_logits: bool,
               with_grads: bool) -> tuple[
                   Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                   Tensor, Tensor, Tensor, Tensor, Tensor]:
  """On `x[N, M]`, `embedding[V, M]`, `ids[N]` int32 or `probs[N, V]`, `weights[N]`
  float32, `options` a `SoftmaxOptions` as JSON (`step.encode`): the results
  `RESULTS`, unrequested ones empty."""
  config = step.decode(options, ignore_index, return_logits)
  args = [to_jax(t) for t in (x, embedding, ids, probs, weights)]
  fn = step.fused_fn(config) if with_grads else step.forward_fn(config)
  fields, grads = fn(*args)
  arrays = [fields.get(name) for name in _FIELD_RESULTS]
  arrays += list(grads) if with_grads else [None, None]
  tensors = iter(to_torch([a for a in arrays if a is not None], (x, embedding, ids, probs, weights)))
  # Results not asked for are empty tensors of the inputs' dtype, made by torch:
  # an eager JAX op would compile once per dtype.
  return tuple(next(tensors) if a is not None else x.new_empty((0,)) for a in arrays)


@softmax_op.register_fake
def _softmax_fake(x, embedding, ids, probs, weights, options, ignore_index, return_logits,
                  with_grads):
  n, v = x.shape[0], embedding.shape[0]
  f32 = torch.float32
  scalar = lambda dtype: x.new_empty((), dtype=dtype)
  dense = (n, v) if return_logits else (0,)
  entropy = (n,) if step.decode(options, ignore_index, return_logits).options.with_entropy else (0,)
  return (x.new_empty((n,)), x.new_empty((n,), dtype=torch.int32), x.new_empty((n,), dtype=f32),
          scalar(f32), scalar(f32), scalar(f32), scalar(f32), scalar(f32),
          x.new_empty(dense), x.new_empty(dense), x.new_empty(entropy),
          x.new_empty(x.shape if with_grads else (0,)),
          embedding.new_empty(embedding.shape if with_grads else (0,)))


# --- its gradient, itself an op ----------------------------------------------------------

@torch.library.custom_op("gshard::shared_embedding_softmax_backward", mutates_args=())
def _backward_op(x: Tensor, embedding: Tensor, ids: Tensor | None, probs: Tensor | None,
                 weights: Tensor, denominator: Tensor, saved_d_x: Tensor | None,
                 saved_d_embedding: Tensor | None, g_per_example_xent: Tensor | None,
                 g_total_xent: Tensor | None, g_avg_xent: Tensor | None,
                 g_z_loss: Tensor | None, g_logits: Tensor | None,
                 g_log_probs: Tensor | None, g_per_example_entropy: Tensor | None,
                 options: str, ignore_index: int,
                 return_logits: bool) -> tuple[Tensor, Tensor]:
  """`(d_x, d_embedding)` for the given cotangents (None: zero)."""
  config = step.decode(options, ignore_index, return_logits)
  per_token = [g for g in (g_per_example_xent, g_logits, g_log_probs, g_per_example_entropy)
               if g is not None]
  # The saved gradients are those of avg_xent + z_loss; total_xent is
  # avg_xent times the denominator.
  scale = torch.zeros((), dtype=torch.float32, device=x.device)
  if g_avg_xent is not None:
    scale = scale + g_avg_xent.float()
  if g_total_xent is not None:
    scale = scale + g_total_xent.float() * denominator
  g_z = torch.zeros_like(scale) if g_z_loss is None else g_z_loss.float()
  if (saved_d_x is not None and saved_d_x.numel()
      and not any(bool(g.any()) for g in per_token)
      and (config.options.z_loss_weight == 0.0 or bool(g_z == scale))):
    return ((saved_d_x.float() * scale).to(x.dtype),
            (saved_d_embedding.float() * scale).to(embedding.dtype))

  cotangents = dict(per_example_xent=g_per_example_xent, total_xent=g_total_xent,
                    avg_xent=g_avg_xent, z_loss=g_z_loss, logits=g_logits,
                    log_probs=g_log_probs, per_example_entropy=g_per_example_entropy)
  cotangents = {k: to_jax(v) for k, v in cotangents.items() if v is not None}
  args = [to_jax(t) for t in (x, embedding, ids, probs, weights)]
  d_x, d_e = step.vjp_fn(config)(*args, cotangents)
  return tuple(to_torch([d_x, d_e], (x, embedding, ids, probs, weights)))


@_backward_op.register_fake
def _backward_fake(x, embedding, *args):
  del args
  return x.new_empty(x.shape), embedding.new_empty(embedding.shape)


def _no_second_derivative(ctx, *grads):
  """`backward(create_graph=True)` records the gradient op; differentiating it
  again lands here. Refused, as torch's own chunked `F.linear_cross_entropy`
  refuses it: the fused gradient is computed in the forward, and a Hessian
  through a loss over tens of thousands of classes is rare enough that the
  dense torch loss is the right tool for it."""
  del ctx, grads
  raise RuntimeError(
      "gshard::shared_embedding_softmax has no second derivative in PyTorch: its "
      "gradient op gshard::shared_embedding_softmax_backward, recorded by "
      "backward(create_graph=True), cannot be differentiated again. For "
      "double backward (Hessian-vector products, gradient penalties through the loss), "
      "write the dense loss, F.cross_entropy(F.linear(x * in_features**-0.5, embedding), "
      "labels), or F.linear_cross_entropy with options=None; or use "
      "gshard_op.shared_embedding_softmax in JAX, which has second derivatives.")


_backward_op.register_autograd(_no_second_derivative,
                               setup_context=lambda ctx, inputs, output: None)


# Positions of the options in the forward op's arguments.
_N_TENSOR_ARGS = 5


def _setup_context(ctx, inputs, output):
  x, embedding, ids, probs, weights = inputs[:_N_TENSOR_ARGS]
  ctx.options = inputs[_N_TENSOR_ARGS:-1]  # all but with_grads
  fields = dict(zip(RESULTS, output))
  ctx.save_for_backward(x, embedding, ids, probs, weights, fields["avg_xent_weight"],
                        fields["d_inputs"], fields["d_embedding"])
  ctx.mark_non_differentiable(fields["per_example_argmax"], fields["per_example_weight"],
                              fields["total_weight"], fields["avg_xent_weight"],
                              fields["d_inputs"], fields["d_embedding"])
  ctx.set_materialize_grads(False)  # an unused output's cotangent stays None


def _backward(ctx, *grads):
  x, embedding, ids, probs, weights, denominator, d_x, d_e = ctx.saved_tensors
  g = dict(zip(RESULTS, grads))
  d_x, d_e = _backward_op(
      x, embedding, ids, probs, weights, denominator, d_x, d_e,
      *(g[name] for name in _DIFF), *ctx.options)
  return (d_x if ctx.needs_input_grad[0] else None,
          d_e if ctx.needs_input_grad[1] else None) + (None,) * (len(ctx.needs_input_grad) - 2)


softmax_op.register_autograd(_backward, setup_context=_setup_context)
