"""`gshard_op.torch`: the shared embedding softmax for PyTorch.

    import gshard_op.torch as gt
    layer = gt.GShardSharedEmbeddingSoftmax(512, 32768, z_loss_weight=1e-4)
    out = layer(layer.emb_lookup(ids), None, class_ids=labels)   # ignore_index=-100
    (out["avg_xent"] + out["z_loss"]).backward()

    loss = gt.cross_entropy(x, layer.embedding, labels, label_smoothing=0.1)

Torch semantics at the edges: `avg_xent` (and `z_loss`) divide by the weight
of the tokens that are not ignored, as `F.cross_entropy`'s mean does, so a
batch whose labels are all `ignore_index` gives NaN with zero gradients, as
torch does (`use_tgt_labels_size_as_loss_denominator=True` restores Praxis's
count of all tokens). `cross_entropy` takes `F.cross_entropy`'s arguments
(`weight`, `reduction`, `ignore_index`, `label_smoothing`) and equals it on
the scaled logits. Second derivatives are refused with an error that says what
to use instead, as torch's own chunked `F.linear_cross_entropy` refuses them.

The compute is JAX's: the op's body hands the torch tensors to JAX with DLPack
(zero-copy for contiguous tensors whose data is aligned as XLA wants it, as
torch's own allocations are; JAX copies a misaligned view; on CUDA, on the
same device, ordered after the work queued on torch's current stream), runs
`gshard_op.jit` (jax.jit plus the gshard passes, so the `[tokens, classes]`
logits never exist) and hands the results back the same way. Compiled
executables are cached per option set (here) and per shape and dtype
(`gshard_op.jit`).

One GPU, two runtimes: JAX reserves 75% of a GPU's memory when its backend
starts, which would starve torch in the same process. Imported before JAX's
backend starts, this module sets `XLA_PYTHON_CLIENT_PREALLOCATE=false` (JAX
then allocates on demand), unless the user set one of JAX's allocator
variables; `JAX_ALLOCATOR` says what happened.

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

import contextlib
import dataclasses
import functools
import json
import math
import os
import warnings

import jax
import jax.numpy as jnp
import torch
from torch import Tensor, nn

import gshard_op
from gshard_op._private import jax_backend
from gshard_op.functional import check_inputs, check_labels, check_shared_embedding
from gshard_op.functional import shared_embedding_softmax as _jax_softmax
from gshard_op.options import (SoftmaxOptions, call_options, for_layer_call, layer_options,
                               option_arguments)
from gshard_op.outputs import FIELDS  # noqa: F401  (gt.FIELDS: the order of the returned dict)

__all__ = ["JAX_ALLOCATOR", "GShardSharedEmbeddingSoftmax", "cross_entropy",
           "shared_embedding_softmax"]

# The differentiable outputs, in the op's order (logits/log_probs and the
# entropy only on request).
_DIFF = ("per_example_xent", "total_xent", "avg_xent", "z_loss", "logits", "log_probs",
         "per_example_entropy")
# The op's results: the fields, then the saved gradients (empty when not asked for).
_RESULTS = ("per_example_xent", "per_example_argmax", "per_example_weight", "total_xent",
            "total_weight", "avg_xent", "avg_xent_weight", "z_loss", "logits", "log_probs",
            "per_example_entropy", "d_inputs", "d_embedding")
_FIELD_RESULTS = _RESULTS[:-2]


# --- one GPU, two runtimes -------------------------------------------------------------
# Importing jax (above) does not start its backend; the first array or
# compilation does, and reads the allocator variables then.

_JAX_ALLOCATOR_VARIABLES = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_ALLOCATOR",
                            "XLA_PYTHON_CLIENT_MEM_FRACTION")


def _share_the_gpu_with_torch() -> str:
  """Lets torch and JAX share one GPU: JAX allocates on demand instead of
  reserving 75% of the GPU's memory when its backend starts. The user's own
  allocator settings win; once the backend has started nothing can change it,
  and a GPU backend started that way gets a warning. Returns what it did."""
  chosen = [f"{name}={os.environ[name]}" for name in _JAX_ALLOCATOR_VARIABLES
            if name in os.environ]
  if chosen:
    return "left to the user's " + ", ".join(chosen)
  if jax_backend.backends_started():
    if any(d.platform != "cpu" for d in jax.devices()):
      warnings.warn(
          "gshard_op.torch was imported after JAX's GPU backend started: JAX keeps its "
          "default allocator, which reserves 75% of the GPU's memory, leaving little to "
          "torch. Import gshard_op.torch first, or set XLA_PYTHON_CLIENT_PREALLOCATE=false "
          "before JAX starts.", RuntimeWarning, stacklevel=2)
    return ("unchanged: JAX's backend had already started (to share a GPU, set "
            "XLA_PYTHON_CLIENT_PREALLOCATE=false before JAX starts)")
  os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  return "set XLA_PYTHON_CLIENT_PREALLOCATE=false"


# What importing this module did to JAX's GPU allocator, in words.
JAX_ALLOCATOR = _share_the_gpu_with_torch()


# --- JAX side: one jitted function per option set ------------------------------------

@dataclasses.dataclass(frozen=True)
class _Config:
  """The static arguments of one op call: options and what to return."""
  options: SoftmaxOptions
  ignore_index: int
  return_logits: bool


def _mean(total, denominator):
  """`total / denominator`, a mean over no tokens (denominator 0) NaN as in
  `F.cross_entropy`, with a zero gradient (torch's too) rather than 0 * inf."""
  some = denominator != 0
  return jnp.where(some, total / jnp.where(some, denominator, 1.0), jnp.nan)


def _jax_fields(x, embedding, ids, probs, weights, config: _Config):
  """`(differentiable, other)` field dicts of the functional op on `[N]` tokens.

  Tokens whose id is `ignore_index` get weight 0 and a `per_example_xent` of 0
  (as `F.cross_entropy` gives them); other ids outside `[0, V)` keep Praxis's
  all-zero target. The means (`avg_xent`, `z_loss`) are taken here, over the
  total weight (torch) or the token count (Praxis), through `_mean`: the
  functional op is always asked for Praxis's count, which is never 0 but for
  an empty batch, and its means are rescaled.
  """
  keep = None
  if ids is not None:
    keep = ids != config.ignore_index
    weights = jnp.where(keep, weights, 0.0)
    ids = jnp.where(keep, ids, -1)
  options = dataclasses.replace(config.options, use_tgt_labels_size_as_loss_denominator=True)
  out = _jax_softmax(x, embedding, weights[:, None], ids, probs, options=options)
  xent = out.per_example_xent
  if keep is not None:
    xent = jnp.where(keep, xent, jnp.zeros((), xent.dtype))
  count = out.avg_xent_weight  # float32 N
  if config.options.use_tgt_labels_size_as_loss_denominator:
    denominator = count
  else:
    denominator = out.total_weight
  diff = dict(per_example_xent=xent, total_xent=out.total_xent,
              avg_xent=_mean(out.total_xent, denominator),
              z_loss=(_mean(out.z_loss * count, denominator)
                      if config.options.z_loss_weight > 0 else out.z_loss))
  if config.return_logits:
    diff.update(logits=out.logits, log_probs=out.log_probs)
  if config.options.with_entropy:
    diff.update(per_example_entropy=out.per_example_entropy)
  other = dict(per_example_argmax=out.per_example_argmax,
               per_example_weight=out.per_example_weight[:, 0],
               total_weight=out.total_weight, avg_xent_weight=denominator)
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

# DLPack on CUDA is ordered by streams, and both directions follow torch's
# current stream through the protocol's `stream=` argument:
# * torch -> JAX: `jax.dlpack.from_dlpack(t)` calls `t.__dlpack__(stream=s)` with
#   the stream JAX reads on; torch makes `s` wait for an event recorded on its
#   current stream, so JAX sees every write queued there before the call.
# * JAX -> torch: `torch.from_dlpack(a)` calls `a.__dlpack__(stream=...)` with
#   torch's current stream on `a`'s device; JAX makes that stream wait until `a`
#   is ready, so torch's later kernels read the finished results.
# The host waits for the JAX step before the op returns (`_to_torch`): torch's
# caching allocator tracks only torch's streams, and would hand the inputs'
# memory to the next torch kernel while JAX's stream could still be reading it.

def _on_device_of(t: Tensor):
  """torch exports a CUDA tensor only while its device is the current one."""
  return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _to_jax(t: Tensor | None):
  """A JAX view of `t` (DLPack; a copy only where the strides are not compact)."""
  if t is None:
    return None
  t = t.detach().contiguous()
  with _on_device_of(t):
    try:
      return jax.dlpack.from_dlpack(t)
    except RuntimeError as e:
      if t.is_cuda and all(d.platform != "gpu" for d in jax.devices()):
        raise RuntimeError(f"gshard_op.torch: a tensor on {t.device} needs JAX's CUDA "
                           "backend, which this JAX does not have (pip install "
                           "'jax[cuda12]'), or move the tensors to the CPU") from e
      raise


def _to_torch(arrays, inputs) -> list[Tensor]:
  """Torch views of JAX arrays (DLPack), once JAX is done with them and with
  the inputs. An op's outputs may alias neither its inputs nor each other;
  where JAX forwarded a buffer, the tensor is copied."""
  arrays = jax.block_until_ready(arrays)
  seen = {t.data_ptr() for t in inputs if t is not None and t.numel()}
  out = []
  for a in arrays:
    t = torch.from_dlpack(a)
    if t.numel() and t.data_ptr() in seen:
      t = t.clone()
    seen.add(t.data_ptr())
    out.append(t)
  return out


# The ops' schemas take primitive types only, so a call's options cross into
# them as one string: the composites' attributes (`SoftmaxOptions.to_attributes`,
# so an option added there crosses with no change here) as JSON, the precision
# fixed where the call is made, and come back out through `_config`.

def _encode(options: SoftmaxOptions) -> str:
  return json.dumps(options.to_attributes(), sort_keys=True)


def _config(options: str, ignore_index: int, return_logits: bool) -> _Config:
  return _Config(SoftmaxOptions.from_attributes(json.loads(options)),
                 ignore_index=ignore_index, return_logits=return_logits)


# --- the forward op -------------------------------------------------------------------

@torch.library.custom_op("gshard::shared_embedding_softmax", mutates_args=())
def _softmax_op(x: Tensor, embedding: Tensor, ids: Tensor | None, probs: Tensor | None,
                weights: Tensor, options: str, ignore_index: int, return_logits: bool,
                with_grads: bool) -> tuple[
                    Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                    Tensor, Tensor, Tensor, Tensor, Tensor]:
  """On `x[N, M]`, `embedding[V, M]`, `ids[N]` int32 or `probs[N, V]`, `weights[N]`
  float32, `options` a `SoftmaxOptions` as JSON (`_encode`): the results
  `_RESULTS`, unrequested ones empty."""
  config = _config(options, ignore_index, return_logits)
  args = [_to_jax(t) for t in (x, embedding, ids, probs, weights)]
  fn = _fused_fn(config) if with_grads else _forward_fn(config)
  fields, grads = fn(*args)
  empty = jnp.zeros((0,), fields["per_example_xent"].dtype)
  arrays = [fields.get(name, empty) for name in _FIELD_RESULTS]
  arrays += list(grads) if with_grads else [empty, empty]
  return tuple(_to_torch(arrays, (x, embedding, ids, probs, weights)))


@_softmax_op.register_fake
def _softmax_fake(x, embedding, ids, probs, weights, options, ignore_index, return_logits,
                  with_grads):
  n, v = x.shape[0], embedding.shape[0]
  f32 = torch.float32
  scalar = lambda dtype: x.new_empty((), dtype=dtype)
  dense = (n, v) if return_logits else (0,)
  entropy = (n,) if _config(options, ignore_index, return_logits).options.with_entropy else (0,)
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
  config = _config(options, ignore_index, return_logits)
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
  cotangents = {k: _to_jax(v) for k, v in cotangents.items() if v is not None}
  args = [_to_jax(t) for t in (x, embedding, ids, probs, weights)]
  d_x, d_e = _vjp_fn(config)(*args, cotangents)
  return tuple(_to_torch([d_x, d_e], (x, embedding, ids, probs, weights)))


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

# The options' defaults here: Praxis's, but for torch's mean (see
# `shared_embedding_softmax`).
TORCH_DEFAULTS = SoftmaxOptions(use_tgt_labels_size_as_loss_denominator=False)


# The options of one call, as the ops take them (`_encode`). Dynamo cannot trace
# `SoftmaxOptions`' checks (NumPy's float32 rounding in `__post_init__`) nor
# JSON, so under torch.compile these two pure functions of constant arguments
# run once, when Dynamo traces the call, and their result is a constant of the
# graph (it guards on the arguments).

@torch.compiler.assume_constant_result
def _call_options(options: SoftmaxOptions | None, **keywords) -> str:
  return _encode(call_options(options, TORCH_DEFAULTS, **keywords))


@torch.compiler.assume_constant_result
def _layer_call_options(options: SoftmaxOptions, training: bool) -> str:
  return _encode(for_layer_call(options, training=training))


def _check_inputs(inputs: Tensor, embedding: Tensor, label_smoothing: float = 0.0) -> None:
  """`gshard_op.functional.check_inputs` on the tensors' shapes and dtypes, and
  `SoftmaxOptions`' check of a label smoothing, in eager mode. Dynamo cannot
  trace JAX's and NumPy's dtype code (nor pass symbolic shapes to a function
  it would run once); under torch.compile the op's body, which calls
  `gshard_op.functional`, checks the shapes when it runs."""
  if torch.compiler.is_compiling():
    return
  check_inputs(_jax_spec(inputs), _jax_spec(embedding))
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
  check_labels(tuple(batch), num_classes, *(None if t is None else _jax_spec(t)
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
  r = dict(zip(_RESULTS, results))
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
  return _softmax(inputs, embedding, class_weights, class_ids, class_probabilities, options,
                  ignore_index, return_logits)


@torch.compiler.assume_constant_result
def _with_entropy(options: str) -> bool:
  """Whether the `_encode`d options ask for the entropy (a constant of the
  graph under torch.compile, as `_call_options` is)."""
  return bool(json.loads(options)["with_entropy"])


def _softmax(inputs: Tensor, embedding: Tensor, class_weights: Tensor | None,
             class_ids: Tensor | None, class_probabilities: Tensor | None,
             options: str, ignore_index: int, return_logits: bool) -> dict[str, Tensor | None]:
  """`shared_embedding_softmax` once its options are settled (`_encode`d)."""
  _check_inputs(inputs, embedding)
  num_classes, in_features = embedding.shape
  batch = inputs.shape[:-1]
  _check_labels(batch, num_classes, class_ids, class_probabilities)

  dtype = torch.promote_types(inputs.dtype, embedding.dtype)
  x = inputs.to(dtype).reshape(math.prod(batch), in_features)
  embedding = embedding.to(dtype)
  ids, probs = _flat_labels(class_ids, class_probabilities, x.shape[0], num_classes)
  weights = _flat_weights(class_weights, x, batch)
  with_grads = torch.is_grad_enabled() and (x.requires_grad or embedding.requires_grad)
  results = _softmax_op(x, embedding, ids, probs, weights,
                        options, int(ignore_index), bool(return_logits), with_grads)
  return _fields(results, batch, num_classes, return_logits, _with_entropy(options))


# --- F.cross_entropy's arguments -----------------------------------------------------------

_REDUCTIONS = ("none", "mean", "sum")


def cross_entropy(inputs: Tensor, embedding: Tensor, target: Tensor, *,
                  weight: Tensor | None = None, reduction: str = "mean",
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  soft_cap_logits: float = 0.0, logits_abs_max: float = 0.0,
                  z_loss_weight: float = 0.0, temperature: float = 1.0,
                  logit_scale: float | None = None,
                  precision: str | None = None) -> Tensor:
  """`F.cross_entropy(z, target, weight=weight, reduction=reduction,
  ignore_index=ignore_index, label_smoothing=label_smoothing)` on the logits `z`
  of `inputs` against `embedding`, computed by the op, so the `[..., V]` logits
  never exist.

  Arguments in the order of `F.linear_cross_entropy(input, linear_weight,
  target, ...)`, the options keyword-only, with torch's names where torch has
  one. With the defaults, `z = F.linear(inputs * M**-0.5, embedding)` (the
  layer's, Praxis's, logit scale): this equals `F.linear_cross_entropy(inputs *
  M**-0.5, embedding, target, ...)`; with `logit_scale=1.0` it is
  `F.linear_cross_entropy(inputs, embedding, target, ...)` itself (the tied
  head of Llama, Qwen, Gemma).

  Args:
    inputs: `[..., M]`; embedding: `[V, M]`.
    target: class indices `[...]` (any integer dtype; `ignore_index` marks tokens
      that count neither in the loss nor in the mean's denominator), or class
      probabilities `[..., V]` (floating point; no gradient flows to them).
      Indices outside `[0, V)` other than `ignore_index` give Praxis's all-zero
      target where torch raises.
    weight: `[V]` rescaling of each class, as torch's: the loss of a token is
      weighted by its target's weight and `mean` divides by the sum of those
      weights; label smoothing weights each class's term by its own weight.
      No gradient flows to it.
    reduction: "mean" (NaN, with zero gradients, when every token is ignored, as
      torch gives), "sum" or "none" (`[...]`, 0 for ignored tokens).
    label_smoothing: in `[0, 1]`, torch's (and Praxis's) uniform smoothing.
    soft_cap_logits: if > 0, `z = cap * tanh(z / cap)` (Gemma 2's
      `final_logit_softcapping`; Liger's `softcap`).
    logits_abs_max: if > 0, `z` is then clipped to `[-abs_max, abs_max]`.
    z_loss_weight: adds `z_loss_weight * logsumexp(z)**2` per token, weighted and
      reduced as the cross-entropy is (Liger's `lse_square_scale`; PaLM's
      z-loss); "mean" and "sum" only.
    temperature: `z / temperature`, after the cap and the clip.
    logit_scale: None: Praxis's `M**-0.5` on the inputs; a float multiplies the
      float32 logits (1.0: plain `inputs @ embedding.T`).
    precision: of the op's matmuls, as `jax.lax.Precision` names it (not an
      argument of torch's: its matmuls follow `torch.backends` settings); None
      follows JAX's `jax_default_matmul_precision`.

  "mean" and "sum" take the fused gradient computed in the forward; "none", and
  class weights together with label smoothing on class indices, take the
  general one (a second sweep over the vocabulary in the backward). Per-token
  outputs (the entropy, the argmax, the z-loss per token) come from
  `shared_embedding_softmax`.
  """
  if reduction not in _REDUCTIONS:
    raise ValueError(f"{reduction!r} is not a valid value for reduction; use one of {_REDUCTIONS}")
  if z_loss_weight and reduction == "none":
    raise ValueError("z_loss_weight needs reduction='mean' or 'sum': the op returns the "
                     "z-loss reduced; shared_embedding_softmax(...)['per_example_xent'] and "
                     "['z_loss'] give the per-token loss and the z-loss separately")
  _check_inputs(inputs, embedding, label_smoothing)
  num_classes = embedding.shape[0]
  if weight is not None and (tuple(weight.shape) != (num_classes,)
                             or not weight.is_floating_point()):
    raise ValueError(f"weight must be a floating point [num_classes={num_classes}] tensor, "
                     f"got {weight.dtype}{list(weight.shape)}")
  dtype = torch.promote_types(inputs.dtype, embedding.dtype)
  # "sum" asks the op for Praxis's denominator (the token count, ignored tokens
  # included, never 0): `z_loss` times it is the z-loss's sum even when every
  # token is ignored, where torch's mean denominator would be 0.
  options = dict(soft_cap_logits=soft_cap_logits, logits_abs_max=logits_abs_max,
                 z_loss_weight=z_loss_weight, temperature=temperature, logit_scale=logit_scale,
                 precision=precision,
                 use_tgt_labels_size_as_loss_denominator=reduction == "sum")
  if target.is_floating_point():
    return _probability_cross_entropy(inputs, embedding, target, weight, reduction,
                                      label_smoothing, dtype, options)
  return _class_index_cross_entropy(inputs, embedding, target, weight, reduction, ignore_index,
                                    label_smoothing, dtype, options)


def _reduced(out, per_token: Tensor, reduction: str) -> Tensor:
  """The op's fields as torch's reductions; "mean" and "sum" are float32
  whatever the inputs' dtype (torch's would have the logits' dtype)."""
  if reduction == "none":
    return per_token
  return out["total_xent"] if reduction == "sum" else out["avg_xent"]


def _plus_z_loss(loss: Tensor, out, reduction: str, z_loss_weight: float) -> Tensor:
  """`loss` plus the op's z-loss, reduced as `loss` is: the op's `z_loss` is
  the mean over the same denominator, `avg_xent_weight` (for "sum", the token
  count: `cross_entropy` asks for it there)."""
  if not z_loss_weight:
    return loss
  z_loss = out["z_loss"] if reduction == "mean" else out["z_loss"] * out["avg_xent_weight"]
  return (loss + z_loss).to(loss.dtype)


def _probability_cross_entropy(inputs, embedding, target, weight, reduction, label_smoothing,
                               dtype, options) -> Tensor:
  """Soft labels: torch smooths them, `(1 - p) * target + p / V`, then weights
  each class, and its mean divides by the number of tokens. The `[..., V]`
  targets are dense already, so both happen to them here."""
  probs = target.detach()
  if label_smoothing:
    probs = probs * (1.0 - label_smoothing) + label_smoothing / embedding.shape[0]
  if weight is not None:
    probs = probs * weight.detach()
  out = shared_embedding_softmax(inputs, embedding, None, class_probabilities=probs,
                                 **{**options, "use_tgt_labels_size_as_loss_denominator": True})
  return _plus_z_loss(_reduced(out, out["per_example_xent"], reduction), out, reduction,
                      options["z_loss_weight"])


def _class_index_cross_entropy(inputs, embedding, target, weight, reduction, ignore_index,
                               label_smoothing, dtype, options) -> Tensor:
  """Class indices. Unweighted, torch's smoothing is Praxis's: the op computes
  it. A class weight `w[y]` is a per-token weight of the op, and torch's mean
  is the op's `avg_xent` over the total weight. Weights with smoothing need
  `sum_c w_c * -log p_c`, which no per-token weight gives: see
  `_weighted_smoothing`."""
  z_loss_weight = options["z_loss_weight"]
  if weight is None:
    out = shared_embedding_softmax(inputs, embedding, None, target,
                                   label_smoothing_prob=label_smoothing,
                                   ignore_index=ignore_index, **options)
    return _plus_z_loss(_reduced(out, out["per_example_xent"], reduction), out,
                        reduction, z_loss_weight)

  num_classes = embedding.shape[0]
  counted = (target != ignore_index) & (target >= 0) & (target < num_classes)
  safe_target = torch.where(counted, target, 0)
  w_y = torch.where(counted, weight.detach().float()[safe_target], 0.0)
  if not label_smoothing:
    out = shared_embedding_softmax(inputs, embedding, w_y[..., None], target,
                                   ignore_index=ignore_index, **options)
    return _plus_z_loss(_reduced(out, out["per_example_xent"] * w_y.to(dtype), reduction),
                        out, reduction, z_loss_weight)

  if options["soft_cap_logits"] or options["logits_abs_max"]:
    raise NotImplementedError(
        "cross_entropy with class weights and label smoothing together takes "
        "sum_c weight[c] * -log p_c through one matrix-vector product, which a soft cap "
        "or a clip (not linear in the logits) does not allow; drop one of the four, or "
        "pass the smoothed, weighted targets as class probabilities [..., V]")
  # The op's z-loss is then weighted by w_y, as the cross-entropy is.
  out = shared_embedding_softmax(inputs, embedding, w_y[..., None], target,
                                 ignore_index=ignore_index, **options)
  nll = out["per_example_xent"].float()
  scale = (SoftmaxOptions(logit_scale=options["logit_scale"]).scale_for(inputs.shape[-1])
           / options["temperature"])
  smooth = _weighted_smoothing(inputs, embedding, safe_target, weight.detach(), nll, scale)
  loss = torch.where(counted, (1.0 - label_smoothing) * w_y * nll
                     + (label_smoothing / num_classes) * smooth, 0.0)
  if reduction == "none":
    return loss.to(dtype)
  total = loss.sum()  # float32, as the op's scalar losses
  return _plus_z_loss(total if reduction == "sum" else total / w_y.sum(), out,
                      reduction, z_loss_weight)


def _weighted_smoothing(inputs, embedding, target, weight, nll, scale: float) -> Tensor:
  """`sum_c w_c * -log p_c` per token without the `[..., V]` logits: with
  `z = s * E x` (the logit scale over the temperature; no cap, no clip),
  `-log p_c = lse - z_c` and `lse = nll + z_y`, so the sum is
  `W * (nll + z_y) - s * x . (E^T w)` with `W = sum_c w_c`: a gathered row per
  token and one matrix-vector product, in float32."""
  x = inputs.float()
  e = embedding.float()
  z_target = scale * (x * e[target]).sum(-1)
  weighted_logits = scale * (x @ (e.T @ weight.float()))
  return weight.float().sum() * (nll + z_target) - weighted_logits


class GShardSharedEmbeddingSoftmax(nn.Module):
  """One `[num_classes, in_features]` embedding for the token lookup and the
  output softmax (Praxis's `GShardSharedEmbeddingSoftmax`), for PyTorch.

  `embedding` is an `nn.Parameter`, initialised N(0, 1), or one the model
  has already (`embedding=`, or `from_embedding(nn.Embedding)`: the
  Parameter itself, shared, as a tied LM head shares it). Label smoothing
  applies in training mode only (`.eval()` turns it off). The options are
  Praxis's, with one default changed for torch users:
  `use_tgt_labels_size_as_loss_denominator=False`, so that `avg_xent` is
  `F.cross_entropy`'s mean over the tokens that are not ignored. `precision`
  is that of the op's matmuls (`jax.lax.Precision`'s names; None follows JAX's
  `jax_default_matmul_precision`).

  Example::

    layer = GShardSharedEmbeddingSoftmax(512, 32000, z_loss_weight=1e-4)
    x = layer.emb_lookup(ids)                        # [B, T, 512]
    out = layer(x, None, class_ids=labels)           # ignore_index=-100
    (out["avg_xent"] + out["z_loss"]).backward()

  On a model's own embedding (no second `[V, M]` weight)::

    head = GShardSharedEmbeddingSoftmax.from_embedding(model.embed_tokens)
    out = head(hidden, None, class_ids=labels)   # logit_scale=1.0: hidden @ E.T
  """

  def __init__(self, in_features: int, num_classes: int, *, soft_cap_logits: float = 0.0,
               logits_abs_max: float = 0.0, z_loss_weight: float = 0.0,
               label_smoothing_prob: float = 0.0,
               use_tgt_labels_size_as_loss_denominator: bool = False,
               precision: str | None = None, temperature: float = 1.0,
               with_entropy: bool = False, logit_scale: float | None = None,
               ignore_index: int = -100,
               return_logits: bool = False, embedding: Tensor | None = None,
               device=None, dtype=None):
    super().__init__()
    # Checks the sizes and options now rather than at the first call.
    self.options = layer_options(in_features, num_classes, **option_arguments(locals()))
    self.in_features = in_features
    self.num_classes = num_classes
    self.ignore_index = ignore_index
    self.return_logits = return_logits
    if embedding is None:
      self.embedding = nn.Parameter(
          torch.empty((num_classes, in_features), device=device, dtype=dtype))
      self.reset_parameters()
      return
    if device is not None or dtype is not None:
      raise ValueError("device= and dtype= make a new embedding; with embedding= the layer "
                       "uses that tensor as it is (move or cast it first)")
    check_shared_embedding("embedding", embedding, Tensor, "a torch.Tensor or nn.Parameter",
                           num_classes, in_features)
    # An nn.Parameter is registered as it is: the same object in both modules,
    # so one optimizer state and one gradient (as nn.Embedding's `_weight`).
    self.embedding = (embedding if isinstance(embedding, nn.Parameter)
                      else nn.Parameter(embedding))

  @classmethod
  def from_embedding(cls, embedding: nn.Embedding | Tensor, *,
                     logit_scale: float | None = 1.0,
                     **kwargs) -> "GShardSharedEmbeddingSoftmax":
    """The layer on an existing `nn.Embedding` (its `weight`) or `[V, M]`
    `nn.Parameter`, shared, not copied: the sizes come from it, and
    `state_dict` lists it under both modules, as a tied LM head does.

    `logit_scale` defaults to 1.0 here: the logits are `F.linear(x,
    embedding.weight)`, those of the tied head the embedding had (pass None
    for Praxis's `M**-0.5`). `kwargs` are the constructor's options. The
    lookup stays the embedding's own (`padding_idx`, `max_norm` are its);
    `emb_lookup` is Praxis's.
    """
    weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
    if not isinstance(weight, Tensor) or weight.dim() != 2:
      raise TypeError("from_embedding takes an nn.Embedding or a [num_classes, in_features] "
                      f"nn.Parameter, got {type(embedding).__name__}")
    num_classes, in_features = weight.shape
    return cls(in_features, num_classes, embedding=weight, logit_scale=logit_scale, **kwargs)

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
    return _softmax(inputs, self.embedding, class_weights, class_ids, class_probabilities,
                    _layer_call_options(self.options, self.training), self.ignore_index,
                    self.return_logits)

  def extra_repr(self) -> str:
    return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"{self.options}, ignore_index={self.ignore_index}")
