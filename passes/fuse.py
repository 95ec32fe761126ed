"""`gshard-fuse-fwd-bwd`: a training step's forward and gradient in one sweep.

When a module holds the forward composite and the gradient composite of the
same op (what `jax.value_and_grad` lowers to) and the gradient's cotangents do
not depend on the forward's results (true of the mean loss, `total_xent`,
z-loss, per-token weights...), both become one loop over token blocks:

    for each block of T tokens:                  # stablehlo.while
      z = x_blk @ E.T                            # [T, V]: the block's softmax is final
      xent, argmax, lse, lse**2 = stats of z
      dz = cotangent of z from lse               # same buffer, no recomputation
      d_x[blk] = dz @ E ;  d_E += dz.T @ x_blk   # three matmuls in all, not four

The ops computing the cotangents are moved above the forward so the loop can
use them. The `[T, V]` buffer is bounded by the budget; when not even a small
block fits, the pass leaves the composites to `gshard-chunk-softmax`.
`d_E` accumulates in float32 unless `accumulate-bf16` is set; for a bf16
(or f16) embedding that float32 `[V, M]` accumulator is counted against the
budget too, and a pair whose accumulator does not fit is left to the chunked
rewrite, which needs none (four matmuls instead of three, and no `[V, M]`
float32 buffer: 2.3 GB at Gemma's vocabulary).
"""

from __future__ import annotations

import dataclasses
import logging

import jax.numpy as jnp
from jaxlib.mlir import ir

from gshard_op import budget, contract, fused
from gshard_op.fused import MIN_TOKEN_CHUNK, plan_token_chunk
from gshard_op.ir.splice import replace
from gshard_op.ir.types import element_of
from gshard_op.passes import composites
from gshard_op.passes.rewrite import CompositeRewrite, replace_with_program

log = logging.getLogger("gshard.passes")

__all__ = ["FuseForwardBackwardPass", "MIN_TOKEN_CHUNK", "plan_token_chunk"]


def _producer(v: ir.Value) -> ir.Operation | None:
  owner = v.owner
  if isinstance(owner, ir.Block):
    return None
  return owner.operation if isinstance(owner, ir.OpView) else owner


def cotangent_slice(forward: ir.Operation, values: list[ir.Value]) -> list[ir.Operation] | None:
  """The ops after `forward` (same block) that compute `values`, in block
  order; None when any of them depends on `forward`'s results."""
  block = forward.block
  found: set[ir.Operation] = set()
  todo = list(values)
  while todo:
    op = _producer(todo.pop())
    if op is None or op.block != block or op.is_before_in_block(forward) or op in found:
      continue  # available before the forward, or seen
    if op == forward:
      return None
    found.add(op)
    todo.extend(op.operands)
    for region in op.regions:  # values a region captures from this block
      for inner in region.blocks:
        for inner_op in inner.operations:
          todo.extend(inner_op.operands)
  return [o.operation for o in block.operations if o.operation in found]


def find_pairs(module: ir.Operation):
  """`(forward site, gradient site)` pairs of the same op in the same block."""
  pairs = []
  for op in composites.find(module, (contract.GRAD,)):
    grad = composites.match(op)
    lse = grad.args.logsumexp
    fwd_op = _producer(lse)
    if fwd_op is None or composites.composite_name(fwd_op) != contract.FORWARD:
      continue
    fwd = composites.match(fwd_op)
    if (fwd_op.block != op.block or lse != fwd.results.logsumexp
        or grad.args.per_example_entropy != fwd.results.per_example_entropy  # None twice
        or any(f != g for f, g in zip(fwd.args, grad.args))  # x, embedding, labels
        or fwd.options != grad.options):
      continue
    pairs.append((fwd, grad))
  return pairs


@dataclasses.dataclass
class FuseForwardBackwardPass(CompositeRewrite):
  """Options: `token-chunk` (0: from the budget), `memory-budget-mib` (the
  `[T, V]` buffers; 0: the platform's default, `gshard_op/budget.py`), `accumulate-bf16` (d_embedding accumulator in bf16),
  `update-rows` (rows of d_embedding updated in place per step)."""

  name = "gshard-fuse-fwd-bwd"
  summary = "Fuse a forward and gradient composite pair into one loop over token blocks (3 matmuls)"

  token_chunk: int = 0
  memory_budget_mib: float = 0.0
  accumulate_bf16: bool = False
  update_rows: int = 4096

  def __post_init__(self):
    if self.token_chunk < 0 or self.update_rows <= 0:
      raise ValueError("token-chunk must be >= 0 and update-rows > 0, got "
                       f"{self.token_chunk} and {self.update_rows}")
    budget.check_option(self.memory_budget_mib)

  def sites(self, module: ir.Operation):
    """The `(forward, gradient)` pairs to fuse (`find_pairs`)."""
    return find_pairs(module)

  def accumulator_over_budget(self, fwd: composites.SoftmaxComposite) -> str | None:
    """Why the float32 `d_embedding` accumulator is not worth its memory here
    (None: it is): for an embedding narrower than float32 it is a `[V, M]`
    buffer beside the result (2.3 GB at Gemma's 256000 x 2304), which the
    chunked gradient does without (each vocab chunk's rows are final there and
    are written in the embedding's dtype). So it must fit the budget like the
    `[T, V]` blocks do; a float32 embedding's accumulator is the result's own
    size and precision, and `accumulate-bf16` asks for bf16 sums instead."""
    width = ir.FloatType(element_of(fwd.args.embedding)).width
    if self.accumulate_bf16 or width >= 32:
      return None
    mib = budget.resolve(self.memory_budget_mib)
    need = fwd.num_classes * fwd.in_features * 4 / 2**20
    if need <= mib:
      return None
    return (f"its float32 [{fwd.num_classes}, {fwd.in_features}] d_embedding accumulator "
            f"({need:.4g} MiB) exceeds memory-budget-mib={mib:g}; the chunked gradient writes "
            f"{element_of(fwd.args.embedding)} rows instead (a larger budget, or "
            "accumulate-bf16=true, fuses)")

  def rewrite(self, pair, module: ir.Operation) -> bool:
    fwd, grad = pair
    tokens = plan_token_chunk(fwd.num_tokens, fwd.num_classes, token_chunk=self.token_chunk,
                              memory_budget_mib=budget.resolve(self.memory_budget_mib))
    if tokens is None:
      why = ("an empty batch" if fwd.num_tokens == 0 else
             f"memory-budget-mib={self.memory_budget_mib} is too small for "
             f"[{MIN_TOKEN_CHUNK}, {fwd.num_classes}] token blocks")
      self.decline(fwd.op, why, action="fused", left_to="gshard-chunk-softmax")
      return False
    why = self.accumulator_over_budget(fwd)
    if why:
      self.decline(fwd.op, why, action="fused", left_to="gshard-chunk-softmax")
      return False
    cotangents = [grad.args.g_per_example_xent, grad.args.g_logsumexp,
                  grad.args.g_logsumexp_squared]
    if fwd.options.with_entropy:
      cotangents.append(grad.args.g_per_example_entropy)
    movable = cotangent_slice(fwd.op, cotangents)
    if movable is None:
      self.decline(fwd.op, "the gradient's cotangents depend on the forward's results",
                   action="fused", left_to="gshard-chunk-softmax")
      return False
    for op in movable:
      op.move_before(fwd.op)
    accumulator = "bf16" if self.accumulate_bf16 else "f32"
    plan = f"{self.name}: token_chunk={tokens} accumulator={accumulator}"
    log.info("%s", plan)
    # One loop gives both composites' results: the sweep's leading results
    # replace the forward's (the gradient then reads the new logsumexp), its
    # last two the gradient's.
    dtype = jnp.dtype(jnp.bfloat16 if self.accumulate_bf16 else jnp.float32)
    results = replace_with_program(
        fwd.op, fused.sweep, (fwd.spec, tokens, dtype, min(self.update_rows, fwd.num_classes)),
        [*fwd.args, *cotangents], plan=plan)
    replace(grad.op, results[-2:])
    return True
