"""The kernels' calls: `forward` and `grad` (what `gshard-pallas` lowers and
splices), and `shared_embedding_softmax`, the differentiable entry a JAX user
calls directly.

Per-token vectors enter and leave the kernels as `[N, 1]` columns (Mosaic TPU
tiles rank-2 arrays); the label mass and the cotangent `g_lse + 2 lse
g_lse_squared` are computed around them, with `online_softmax.Spec`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from gshard_op import reference
from gshard_op.kernels import bodies, memory
from gshard_op.kernels.config import BlockSizes, KernelConfig
from gshard_op.online_softmax import F32
from gshard_op.options import SoftmaxOptions


def _column(a):
  """`[N]` -> `[N, 1]`."""
  return a.reshape(a.shape[0], 1)


def _labels_operand(labels):
  return _column(labels) if labels.ndim == 1 else labels


def forward(x, embedding, labels, cfg: KernelConfig):
  """`(per_example_xent, per_example_argmax, logsumexp, logsumexp_squared[,
  per_example_entropy])`, all `[N]`: `reference.per_token_forward`'s."""
  n, v = x.shape[0], embedding.shape[0]
  cfg.block_sizes.check(n, v, x.shape[1])
  spec = cfg.spec(v)
  col = jax.ShapeDtypeStruct((n, 1), F32)
  out_shape = (col, jax.ShapeDtypeStruct((n, 1), jnp.int32), col, col)
  out_shape += (col,) * cfg.options.with_entropy
  operands = (x, embedding, _labels_operand(labels), _column(spec.label_mass(labels)))
  outs = memory.call(cfg, functools.partial(bodies.forward_kernel, cfg, n, v),
                     (pl.cdiv(n, cfg.block_sizes.tokens),), out_shape, operands)
  return tuple(o.reshape(n) for o in outs)


def grad(x, embedding, labels, lse, g_xent, g_lse, g_lse_squared, *entropy, cfg: KernelConfig):
  """`(d_x, d_embedding)` in the operands' dtypes: `reference.per_token_grad`'s.
  `lse` is the forward's; `entropy` is `(per_example_entropy, its cotangent)`
  with `with_entropy`."""
  n, v, m = x.shape[0], embedding.shape[0], x.shape[1]
  cfg.block_sizes.check(n, v, m)
  spec = cfg.spec(v)
  column_blocks = pl.cdiv(m, cfg.features(m)[1])
  per_token = [lse, spec.target_mass(spec.label_mass(labels)), g_xent,
               reference.probability_cotangent(lse, g_lse, g_lse_squared)]
  if entropy:  # the kernels take the expected logit E[z] = lse - H
    h, g_h = entropy
    per_token += [lse - h, g_h]
  operands = (x, embedding, _labels_operand(labels), *(_column(u) for u in per_token))
  d_x = memory.call(cfg, functools.partial(bodies.d_x_kernel, cfg, n, v),
                    (pl.cdiv(n, cfg.block_sizes.tokens), column_blocks),
                    jax.ShapeDtypeStruct(x.shape, x.dtype), operands)
  d_e = memory.call(cfg, functools.partial(bodies.d_emb_kernel, cfg, n, v),
                    (pl.cdiv(v, cfg.block_sizes.vocab), column_blocks),
                    jax.ShapeDtypeStruct(embedding.shape, embedding.dtype), operands)
  return d_x, d_e


def _labels_are_ids(x, embedding, labels) -> bool:
  """Whether `labels` are ids `[N]` (else probabilities `[N, V]`); TypeError
  for operands the op does not take."""
  ids = bool(jnp.issubdtype(labels.dtype, jnp.integer))
  ok = x.ndim == 2 and embedding.ndim == 2 and embedding.shape[1] == x.shape[1]
  if ok:
    ok = (labels.shape == (x.shape[0],) if ids else
          labels.shape == (x.shape[0], embedding.shape[0])
          and jnp.issubdtype(labels.dtype, jnp.floating))
  if not ok:
    raise TypeError(f"expected x[N, M], embedding[V, M] and labels as int ids[N] or float "
                    f"probabilities[N, V], got x{list(x.shape)}, embedding"
                    f"{list(embedding.shape)} and labels{list(labels.shape)} of {labels.dtype}")
  return ids


def shared_embedding_softmax(x, embedding, labels, *, options: SoftmaxOptions = SoftmaxOptions(),
                             block_sizes: BlockSizes | None = None, backend: str = "interpret",
                             num_warps: int = 4, vmem_limit_bytes: int = 0):
  """The op's per-token results computed by the Pallas kernels.

  `x[N, M]`, `embedding[V, M]`, `labels` int ids `[N]` or float probabilities
  `[N, V]`. Returns `(per_example_xent, per_example_argmax, logsumexp,
  logsumexp_squared)`, then `per_example_entropy` with `options.with_entropy`,
  all `[N]`, as `gshard_op.reference.per_token_forward`. Differentiable in `x`
  and `embedding` (a `jax.custom_vjp` whose backward is the gradient kernels,
  taking the cotangents of the xent, logsumexp, its square and the entropy);
  labels carry no gradient.

  `block_sizes` None takes `BlockSizes.get_default(backend, N, V, M)`.
  `backend`: "interpret" (any platform, Pallas's interpreter), "triton" (a
  GPU; blocks powers of two of at least 16) or "mosaic_tpu" (a TPU; blocks in
  (8, 128) tiles unless whole). `num_warps` is Triton's, `vmem_limit_bytes`
  Mosaic's scoped VMEM (0: its default). Which blocks fit a chip's memories
  is `gshard-pallas`'s decision (`passes/pallas.py`).
  """
  labels_are_ids = _labels_are_ids(x, embedding, labels)
  (n, m), v = x.shape, embedding.shape[0]
  if block_sizes is None:
    block_sizes = BlockSizes.get_default(backend, n, v, m)
  options = options.with_default_precision()
  cfg = KernelConfig(options, options.scale_for(m), labels_are_ids, block_sizes, backend=backend,
                     num_warps=num_warps, vmem_limit_bytes=vmem_limit_bytes)
  return _softmax(cfg, x, embedding, labels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _softmax(cfg: KernelConfig, x, embedding, labels):
  return forward(x, embedding, labels, cfg)


def _softmax_fwd(cfg: KernelConfig, x, embedding, labels):
  outs = forward(x, embedding, labels, cfg)
  entropy = outs[4:]  # (per_example_entropy,) with the entropy, else ()
  return outs, (x, embedding, labels, outs[2], *entropy)


def _softmax_bwd(cfg: KernelConfig, saved, cotangents):
  x, embedding, labels, lse, *entropy = saved
  g_xent, _, g_lse, g_lse_squared, *g_entropy = cotangents  # the argmax has none
  d_x, d_embedding = grad(x, embedding, labels, lse, g_xent, g_lse, g_lse_squared,
                          *entropy, *g_entropy, cfg=cfg)
  return d_x, d_embedding, None


_softmax.defvjp(_softmax_fwd, _softmax_bwd)
