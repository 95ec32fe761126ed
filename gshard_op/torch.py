"""`gshard_op.torch`: the shared embedding softmax for PyTorch.

    import gshard_op.torch as gt
    layer = gt.GShardSharedEmbeddingSoftmax(512, 32768, z_loss_weight=1e-4)
    out = layer(layer.emb_lookup(ids), None, class_ids=labels)   # ignore_index=-100
    (out["avg_xent"] + out["z_loss"]).backward()

The compute is JAX's: the op's body hands the torch tensors to JAX with DLPack
(zero-copy for contiguous tensors whose data is aligned as XLA wants it, as
torch's own allocations are; JAX copies a misaligned view; on CUDA, on the
same device), runs `gshard_op.jit` (jax.jit plus the
gshard passes, so the `[tokens, classes]` logits never exist) and hands the
results back the same way. Compiled executables are cached per option set
(here) and per shape and dtype (`gshard_op.jit`).

Two `torch.library.custom_op`s, each with a `register_fake`, so that
`torch.compile(fullgraph=True)` traces them without graph breaks:

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
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import torch
from torch import Tensor, nn

import gshard_op
from gshard_op.functional import shared_embedding_softmax as _jax_softmax
from gshard_op.options import SoftmaxOptions, layer_options
from gshard_op.outputs import FIELDS

__all__ = ["GShardSharedEmbeddingSoftmax", "shared_embedding_softmax"]

# The differentiable outputs, in the op's order (logits/log_probs only on request).
_DIFF = ("per_example_xent", "total_xent", "avg_xent", "z_loss", "logits", "log_probs")
# The op's results: the fields, then the saved gradients (empty when not asked for).
_RESULTS = ("per_example_xent", "per_example_argmax", "per_example_weight", "total_xent",
            "total_weight", "avg_xent", "avg_xent_weight", "z_loss", "logits", "log_probs",
            "d_inputs", "d_embedding")


# --- JAX side: one jitted function per option set ------------------------------------

@dataclasses.dataclass(frozen=True)
class _Config:
  """The static arguments of one op call: options and what to return."""
  options: SoftmaxOptions
  ignore_index: int
  return_logits: bool


def _jax_fields(x, embedding, ids, probs, weights, config: _Config):
  """`(differentiable, other)` field dicts of the functional op on `[N]` tokens.

  Tokens whose id is `ignore_index` get weight 0 and a `per_example_xent` of 0
  (as `F.cross_entropy` gives them); other ids outside `[0, V)` keep Praxis's
  all-zero target.
  """
  keep = None
  if ids is not None:
    keep = ids != config.ignore_index
    weights = jnp.where(keep, weights, 0.0)
    ids = jnp.where(keep, ids, -1)
  out = _jax_softmax(x, embedding, weights[:, None], ids, probs,
                     **dataclasses.asdict(config.options))
  xent = out.per_example_xent
  if keep is not None:
    xent = jnp.where(keep, xent, jnp.zeros((), xent.dtype))
  diff = dict(per_example_xent=xent, total_xent=out.total_xent, avg_xent=out.avg_xent,
              z_loss=out.z_loss)
  if config.return_logits:
    diff.update(logits=out.logits, log_probs=out.log_probs)
  other = dict(per_example_argmax=out.per_example_argmax,
               per_example_weight=out.per_example_weight[:, 0],
               total_weight=out.total_weight, avg_xent_weight=out.avg_xent_weight)
  return diff, other


@functools.lru_cache(maxsize=None)
def _forward_fn(config: _Config):
  """`(x, e, ids, probs, w) -> (fields, None)`, compiled through the passes."""
  def forward(x, embedding, ids, probs, weights):
    diff, other = _jax_fields(x, embedding, ids, probs, weights, config)
    return {**diff, **other}, None
  return gshard_op.jit(forward)


@functools.lru_cache(maxsize=None)
def _fused_fn(config: _Config):
  """`(x, e, ids, probs, w) -> (fields, (d_x, d_e))` of `avg_xent + z_loss`: one
  module holding the forward and gradient composites, which the fuse pass turns
  into one sweep (three matmuls)."""
  def loss(x, embedding, ids, probs, weights):
    diff, other = _jax_fields(x, embedding, ids, probs, weights, config)
    return diff["avg_xent"].astype(jnp.float32) + diff["z_loss"], {**diff, **other}

  def fused(x, embedding, ids, probs, weights):
    (_, fields), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        x, embedding, ids, probs, weights)
    return fields, grads
  return gshard_op.jit(fused)


@functools.lru_cache(maxsize=None)
def _vjp_fn(config: _Config):
  """`(x, e, ids, probs, w, cotangents) -> (d_x, d_e)` for any cotangents of the
  differentiable fields (a missing one, None, counts as zero)."""
  def vjp(x, embedding, ids, probs, weights, cotangents):
    def diff(x, embedding):
      return _jax_fields(x, embedding, ids, probs, weights, config)[0]
    primal, pullback = jax.vjp(diff, x, embedding)
    full = {k: jnp.zeros_like(v) if cotangents.get(k) is None else cotangents[k].astype(v.dtype)
            for k, v in primal.items()}
    return pullback(full)
  return gshard_op.jit(vjp)


# --- crossing between torch and JAX ----------------------------------------------------

def _to_jax(t: Tensor | None):
  """A JAX view of `t` (DLPack; a copy only where the strides are not compact)."""
  if t is None:
    return None
  return jax.dlpack.from_dlpack(t.detach().contiguous())


def _to_torch(arrays, inputs) -> list[Tensor]:
  """Torch views of JAX arrays (DLPack). An op's outputs may alias neither its
  inputs nor each other; where JAX forwarded a buffer, the tensor is copied."""
  arrays = jax.block_until_ready(arrays)  # done reading the inputs, too
  seen = {t.data_ptr() for t in inputs if t is not None and t.numel()}
  out = []
  for a in arrays:
    t = torch.from_dlpack(a)
    if t.numel() and t.data_ptr() in seen:
      t = t.clone()
    seen.add(t.data_ptr())
    out.append(t)
  return out


def _config(soft_cap_logits, logits_abs_max, z_loss_weight, label_smoothing_prob,
            use_tgt_labels_size_as_loss_denominator, ignore_index, return_logits) -> _Config:
  return _Config(SoftmaxOptions(
      soft_cap_logits=soft_cap_logits, logits_abs_max=logits_abs_max,
      z_loss_weight=z_loss_weight, label_smoothing_prob=label_smoothing_prob,
      use_tgt_labels_size_as_loss_denominator=use_tgt_labels_size_as_loss_denominator),
      ignore_index=ignore_index, return_logits=return_logits)


# --- the forward op -------------------------------------------------------------------

@torch.library.custom_op("gshard::shared_embedding_softmax", mutates_args=())
def _softmax_op(x: Tensor, embedding: Tensor, ids: Tensor | None, probs: Tensor | None,
                weights: Tensor, soft_cap_logits: float, logits_abs_max: float,
                z_loss_weight: float, label_smoothing_prob: float,
                use_tgt_labels_size_as_loss_denominator: bool, ignore_index: int,
                return_logits: bool, with_grads: bool) -> tuple[
                    Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                    Tensor, Tensor, Tensor, Tensor]:
  """On `x[N, M]`, `embedding[V, M]`, `ids[N]` int32 or `probs[N, V]`, `weights[N]`
  float32: the results `_RESULTS`, unrequested ones empty."""
  config = _config(soft_cap_logits, logits_abs_max, z_loss_weight, label_smoothing_prob,
                   use_tgt_labels_size_as_loss_denominator, ignore_index, return_logits)
  args = [_to_jax(t) for t in (x, embedding, ids, probs, weights)]
  fn = _fused_fn(config) if with_grads else _forward_fn(config)
  fields, grads = fn(*args)
  empty = jnp.zeros((0,), fields["per_example_xent"].dtype)
  arrays = [fields.get(name, empty) for name in _RESULTS[:10]]
  arrays += list(grads) if with_grads else [empty, empty]
  return tuple(_to_torch(arrays, (x, embedding, ids, probs, weights)))


@_softmax_op.register_fake
def _softmax_fake(x, embedding, ids, probs, weights, soft_cap_logits, logits_abs_max,
                  z_loss_weight, label_smoothing_prob, use_tgt_labels_size_as_loss_denominator,
                  ignore_index, return_logits, with_grads):
  n, v = x.shape[0], embedding.shape[0]
  f32, dt = torch.float32, x.dtype
  scalar = lambda dtype: x.new_empty((), dtype=dtype)
  dense = (n, v) if return_logits else (0,)
  return (x.new_empty((n,)), x.new_empty((n,), dtype=torch.int32), x.new_empty((n,), dtype=f32),
          scalar(f32), scalar(f32), scalar(dt), scalar(f32), scalar(f32),
          x.new_empty(dense), x.new_empty(dense),
          x.new_empty(x.shape if with_grads else (0,)),
          embedding.new_empty(embedding.shape if with_grads else (0,)))


# --- its gradient, itself an op ----------------------------------------------------------

@torch.library.custom_op("gshard::shared_embedding_softmax_backward", mutates_args=())
def _backward_op(x: Tensor, embedding: Tensor, ids: Tensor | None, probs: Tensor | None,
                 weights: Tensor, denominator: Tensor, saved_d_x: Tensor | None,
                 saved_d_embedding: Tensor | None, g_per_example_xent: Tensor | None,
                 g_total_xent: Tensor | None, g_avg_xent: Tensor | None,
                 g_z_loss: Tensor | None, g_logits: Tensor | None,
                 g_log_probs: Tensor | None, soft_cap_logits: float, logits_abs_max: float,
                 z_loss_weight: float, label_smoothing_prob: float,
                 use_tgt_labels_size_as_loss_denominator: bool, ignore_index: int,
                 return_logits: bool) -> tuple[Tensor, Tensor]:
  """`(d_x, d_embedding)` for the given cotangents (None: zero)."""
  per_token = [g for g in (g_per_example_xent, g_logits, g_log_probs) if g is not None]
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
      and (z_loss_weight == 0.0 or bool(g_z == scale))):
    return ((saved_d_x.float() * scale).to(x.dtype),
            (saved_d_embedding.float() * scale).to(embedding.dtype))

  config = _config(soft_cap_logits, logits_abs_max, z_loss_weight, label_smoothing_prob,
                   use_tgt_labels_size_as_loss_denominator, ignore_index, return_logits)
  cotangents = dict(per_example_xent=g_per_example_xent, total_xent=g_total_xent,
                    avg_xent=g_avg_xent, z_loss=g_z_loss, logits=g_logits,
                    log_probs=g_log_probs)
  cotangents = {k: _to_jax(v) for k, v in cotangents.items() if v is not None}
  args = [_to_jax(t) for t in (x, embedding, ids, probs, weights)]
  d_x, d_e = _vjp_fn(config)(*args, cotangents)
  return tuple(_to_torch([d_x, d_e], (x, embedding, ids, probs, weights)))


@_backward_op.register_fake
def _backward_fake(x, embedding, *args):
  del args
  return x.new_empty(x.shape), embedding.new_empty(embedding.shape)


# Positions of the options in the forward op's arguments.
_N_TENSOR_ARGS = 5


def _setup_context(ctx, inputs, output):
  x, embedding, ids, probs, weights = inputs[:_N_TENSOR_ARGS]
  ctx.options = inputs[_N_TENSOR_ARGS:-1]  # all but with_grads
  fields = dict(zip(_RESULTS, output))
  ctx.save_for_backward(x, embedding, ids, probs, weights, fields["avg_xent_weight"],
                        fields["d_inputs"], fields["d_embedding"])
  ctx.mark_non_differentiable(fields["per_example_argmax"], fields["per_example_weight"],
                              fields["total_weight"], fields["avg_xent_weight"],
                              fields["d_inputs"], fields["d_embedding"])
  ctx.set_materialize_grads(False)  # an unused output's cotangent stays None


def _backward(ctx, *grads):
  x, embedding, ids, probs, weights, denominator, d_x, d_e = ctx.saved_tensors
  g = dict(zip(_RESULTS, grads))
  d_x, d_e = _backward_op(
      x, embedding, ids, probs, weights, denominator, d_x, d_e,
      *(g[name] for name in _DIFF), *ctx.options)
  return (d_x if ctx.needs_input_grad[0] else None,
          d_e if ctx.needs_input_grad[1] else None) + (None,) * (len(ctx.needs_input_grad) - 2)


_softmax_op.register_autograd(_backward, setup_context=_setup_context)


# --- the public API ---------------------------------------------------------------------

def shared_embedding_softmax(inputs: Tensor, embedding: Tensor, class_weights: Tensor | None,
                             class_ids: Tensor | None = None,
                             class_probabilities: Tensor | None = None, *,
                             soft_cap_logits: float = 0.0, logits_abs_max: float = 0.0,
                             z_loss_weight: float = 0.0, label_smoothing_prob: float = 0.0,
                             use_tgt_labels_size_as_loss_denominator: bool = True,
                             ignore_index: int = -100,
                             return_logits: bool = False) -> dict[str, Tensor | None]:
  """Praxis's shared embedding softmax on torch tensors; see
  `gshard_op.shared_embedding_softmax` for the math.

  Args:
    inputs: `[..., M]` activations; `embedding`: `[V, M]`; both floating point
      (promoted to a common dtype).
    class_weights: broadcastable to `[..., 1]`; None: all ones.
    class_ids: integer `[..., 1]` or `[...]` labels. Tokens labelled
      `ignore_index` get weight 0 and `per_example_xent` 0, as in
      `F.cross_entropy`; with `use_tgt_labels_size_as_loss_denominator=False`
      (and unit weights) `avg_xent` is then `F.cross_entropy`'s mean. Other ids
      outside `[0, V)` get an all-zero target (Praxis).
    class_probabilities: float `[..., V]` soft labels; exactly one of the two.
    return_logits: also compute `logits` and `log_probs` (`[..., V]`, dense);
      when False, those fields are None and the logits are never formed.

  Returns:
    A dict with Praxis's fields (`gshard_op.outputs.FIELDS`). `avg_xent`,
    `total_xent`, `per_example_xent`, `z_loss` (and the logits, when returned)
    are differentiable w.r.t. `inputs` and `embedding`.
  """
  if embedding.dim() != 2:
    raise ValueError(f"embedding must be [num_classes, in_features], got {list(embedding.shape)}")
  num_classes, in_features = embedding.shape
  if inputs.dim() < 1 or inputs.shape[-1] != in_features:
    raise ValueError(f"inputs must be [..., in_features={in_features}], got {list(inputs.shape)}")
  if not (inputs.is_floating_point() and embedding.is_floating_point()):
    raise TypeError(f"inputs and embedding must be floating point, got {inputs.dtype} "
                    f"and {embedding.dtype}")
  if (class_ids is None) == (class_probabilities is None):
    raise ValueError("exactly one of class_ids and class_probabilities must be given")
  dtype = torch.promote_types(inputs.dtype, embedding.dtype)
  batch = inputs.shape[:-1]
  n = math.prod(batch)
  x = inputs.to(dtype).reshape(n, in_features)
  embedding = embedding.to(dtype)

  ids = probs = None
  if class_ids is not None:
    if class_ids.is_floating_point() or class_ids.is_complex():
      raise TypeError(f"class_ids must be integers, got {class_ids.dtype}")
    if tuple(class_ids.shape) not in (tuple(batch), tuple(batch) + (1,)):
      raise ValueError(f"class_ids must have shape {list(batch) + [1]} (or {list(batch)}), "
                       f"got {list(class_ids.shape)}")
    ids = class_ids.reshape(n).to(torch.int32)
  else:
    if tuple(class_probabilities.shape) != tuple(batch) + (num_classes,):
      raise ValueError(f"class_probabilities must have shape {list(batch) + [num_classes]}, "
                       f"got {list(class_probabilities.shape)}")
    if not class_probabilities.is_floating_point():
      raise TypeError(f"class_probabilities must be floating point, got {class_probabilities.dtype}")
    probs = class_probabilities.detach().reshape(n, num_classes)
  if class_weights is None:
    weights = x.new_ones((n,), dtype=torch.float32)
  else:
    class_weights = torch.as_tensor(class_weights, device=x.device)
    weights = torch.broadcast_to(class_weights.detach(), tuple(batch) + (1,))
    weights = weights.reshape(n).to(torch.float32)

  with_grads = torch.is_grad_enabled() and (x.requires_grad or embedding.requires_grad)
  results = _softmax_op(x, embedding, ids, probs, weights, float(soft_cap_logits),
                        float(logits_abs_max), float(z_loss_weight), float(label_smoothing_prob),
                        bool(use_tgt_labels_size_as_loss_denominator), int(ignore_index),
                        bool(return_logits), with_grads)
  r = dict(zip(_RESULTS, results))
  dense = tuple(batch) + (num_classes,)
  out = dict(
      logits=r["logits"].reshape(dense) if return_logits else None,
      log_probs=r["log_probs"].reshape(dense) if return_logits else None,
      per_example_argmax=r["per_example_argmax"].reshape(batch),
      per_example_xent=r["per_example_xent"].reshape(batch),
      per_example_weight=r["per_example_weight"].reshape(tuple(batch) + (1,)),
      total_xent=r["total_xent"], total_weight=r["total_weight"], avg_xent=r["avg_xent"],
      avg_xent_weight=r["avg_xent_weight"], z_loss=r["z_loss"])
  assert tuple(out) == FIELDS
  return out


class GShardSharedEmbeddingSoftmax(nn.Module):
  """One `[num_classes, in_features]` embedding for the token lookup and the
  output softmax (Praxis's `GShardSharedEmbeddingSoftmax`), for PyTorch.

  `embedding` is an `nn.Parameter`, initialised N(0, 1). Label smoothing
  applies in training mode only (`.eval()` turns it off).

  Example::

    layer = GShardSharedEmbeddingSoftmax(512, 32000, z_loss_weight=1e-4)
    x = layer.emb_lookup(ids)                        # [B, T, 512]
    out = layer(x, None, class_ids=labels)           # ignore_index=-100
    (out["avg_xent"] + out["z_loss"]).backward()
  """

  def __init__(self, in_features: int, num_classes: int, *, soft_cap_logits: float = 0.0,
               logits_abs_max: float = 0.0, z_loss_weight: float = 0.0,
               label_smoothing_prob: float = 0.0,
               use_tgt_labels_size_as_loss_denominator: bool = True,
               ignore_index: int = -100, return_logits: bool = False,
               device=None, dtype=None):
    super().__init__()
    # Checks the sizes and options now rather than at the first call.
    self.options = layer_options(
        in_features, num_classes,
        soft_cap_logits=soft_cap_logits, logits_abs_max=logits_abs_max,
        z_loss_weight=z_loss_weight, label_smoothing_prob=label_smoothing_prob,
        use_tgt_labels_size_as_loss_denominator=use_tgt_labels_size_as_loss_denominator)
    self.in_features = in_features
    self.num_classes = num_classes
    self.ignore_index = ignore_index
    self.return_logits = return_logits
    self.embedding = nn.Parameter(
        torch.empty((num_classes, in_features), device=device, dtype=dtype))
    self.reset_parameters()

  def reset_parameters(self) -> None:
    nn.init.normal_(self.embedding, mean=0.0, std=1.0)

  def emb_lookup(self, ids: Tensor) -> Tensor:
    """The rows `embedding[ids]`: `[...]` ids give `[..., in_features]`; an id
    outside `[0, num_classes)` gives a row of zeros, as Praxis's one-hot matmul."""
    valid = (ids >= 0) & (ids < self.num_classes)
    rows = nn.functional.embedding(torch.where(valid, ids, 0), self.embedding)
    return rows * valid.unsqueeze(-1).to(rows.dtype)

  def forward(self, inputs: Tensor, class_weights: Tensor | None = None,
              class_ids: Tensor | None = None,
              class_probabilities: Tensor | None = None) -> dict[str, Tensor | None]:
    """See `shared_embedding_softmax`; label smoothing only when `self.training`."""
    o = self.options
    return shared_embedding_softmax(
        inputs, self.embedding, class_weights, class_ids, class_probabilities,
        soft_cap_logits=o.soft_cap_logits, logits_abs_max=o.logits_abs_max,
        z_loss_weight=o.z_loss_weight,
        label_smoothing_prob=o.label_smoothing_prob if self.training else 0.0,
        use_tgt_labels_size_as_loss_denominator=o.use_tgt_labels_size_as_loss_denominator,
        ignore_index=self.ignore_index, return_logits=self.return_logits)

  def extra_repr(self) -> str:
    return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"{self.options}, ignore_index={self.ignore_index}")
