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

from jaxlib.mlir import ir

from gshard_op import budget, contract
from gshard_op.ir import builders as b
from gshard_op.ir.loops import (chunk_start, owned, per_token_outputs, replace,
                                tagging_new_loops, token_block, trip_count, write_owned_rows)
from gshard_op.ir.softmax import (OnlineStats, Softmax, chunk_logits, logits_cotangent,
                                  probability_cotangent, target_logits)
from gshard_op.passes import composites
from gshard_op.passes.rewrite import CompositeRewrite

log = logging.getLogger("gshard.passes")

# Live float32 [T, V] buffers of the fused body (logits, softmax/cotangent).
LIVE_BLOCK_BUFFERS = 2
MIN_TOKEN_CHUNK = 8


def plan_token_chunk(num_tokens: int, num_classes: int, *, token_chunk: int = 0,
                     memory_budget_mib: float) -> int | None:
  """Tokens per block: as given, else the largest power of two whose `[T, V]`
  buffers fit the (finite) budget; None when fewer than `MIN_TOKEN_CHUNK` would
  fit, or when there are no tokens (the chunked rewrite handles N = 0)."""
  if num_tokens == 0:
    return None
  if token_chunk > 0:
    return min(token_chunk, num_tokens)
  fit = int(memory_budget_mib * 2**20 // (4 * LIVE_BLOCK_BUFFERS * num_classes))
  if fit < min(MIN_TOKEN_CHUNK, num_tokens):
    return None
  return min(num_tokens, 1 << (fit.bit_length() - 1))


def emit_fused(sm: Softmax, tokens: int, x: ir.Value, embedding: ir.Value, labels: ir.Value,
               g_xent: ir.Value, g_lse: ir.Value, g_lse_squared: ir.Value,
               g_entropy: ir.Value | None = None, *, accumulator: ir.Type,
               update_rows: int) -> tuple[list[ir.Value], list[ir.Value]]:
  """`(forward results, [d_x, d_embedding])` from one loop over token blocks;
  `g_entropy` (with `with_entropy`) is the entropy's cotangent, whose share of
  the logits' cotangent uses the block's own entropy."""
  n, m = b.shape_of(x)
  v = b.shape_of(embedding)[0]
  xs = sm.scaled_inputs(x)
  label_mass = sm.label_mass(labels)
  q_mass = sm.target_mass(label_mass)
  zero = b.scalar(0, b.i32())
  with_entropy = sm.options.with_entropy
  outputs = per_token_outputs(n, with_entropy)
  loop = b.Loop(trip_count(n, tokens), **outputs,
                d_x=b.full((n, m), b.element_of(x), 0.0),
                d_emb=b.full((v, m), accumulator, 0.0))
  with loop.body() as (j, acc):
    start, first_owned = chunk_start(j, tokens, n)
    x_blk, labels_blk = token_block(xs, labels, start, tokens)
    g_xent_blk, g_lse_blk, g_sq_blk, q_blk, mass_blk = (
        b.dynamic_slice(a, [start], [tokens])
        for a in (g_xent, g_lse, g_lse_squared, q_mass, label_mass))
    g_h_blk = b.dynamic_slice(g_entropy, [start], [tokens]) if with_entropy else None
    own = None
    if first_owned is not None:  # tokens an earlier block had add no gradient again
      own = owned(start, first_owned, (tokens,), 0)
      g_xent_blk, g_lse_blk, g_sq_blk = (b.select(own, g, 0.0)
                                         for g in (g_xent_blk, g_lse_blk, g_sq_blk))
      if with_entropy:
        g_h_blk = b.select(own, g_h_blk, 0.0)
    chunk = chunk_logits(sm, x_blk, embedding, labels_blk, zero, None, v, scaled_x=True)
    stats = OnlineStats.initial(tokens, with_entropy).update(sm, chunk)
    if sm.labels_are_ids:
      stats.t = target_logits(sm, x_blk, embedding, labels_blk, scaled_x=True)
    results = stats.finalize(sm, mass_blk)
    lse = results[contract.FORWARD_RESULTS.index("logsumexp")]
    g_p = probability_cotangent(lse, g_lse_blk, g_sq_blk)
    entropy = None
    if with_entropy:
      entropy = (results[contract.forward_results(True).index("per_example_entropy")], g_h_blk)
    dz = logits_cotangent(sm, chunk, lse, q_blk, g_xent_blk, g_p, entropy)
    d_x_blk = sm.times_input_scale(b.dot(b.convert(dz, b.element_of(embedding)), embedding,
                                         (1, 0), b.f32(), sm.options.precision))
    d_x_blk = b.convert(d_x_blk, b.element_of(x))
    d_x = write_owned_rows(acc.d_x, d_x_blk, start, own)
    d_emb = accumulate_rows(acc.d_emb, b.convert(dz, b.element_of(x)), x_blk, update_rows,
                            sm.options.precision)
    loop.yield_(**{name: b.dynamic_update_slice(getattr(acc, name), r, [start])
                   for name, r in zip(outputs, results)},
                d_x=d_x, d_emb=d_emb)
  forward = [getattr(loop.results, name) for name in outputs]
  return forward, [loop.results.d_x, b.convert(loop.results.d_emb, b.element_of(embedding))]


def accumulate_rows(d_emb: ir.Value, dz: ir.Value, x_blk: ir.Value, rows: int,
                    precision: str | None = None) -> ir.Value:
  """`d_emb += dz.T @ x_blk`, `rows` rows at a time, each added in place (the
  matmul at `precision`).

  One `[V, M]` add would make XLA keep a second `[V, M]` buffer (it does not
  update a while-loop carry in place through a dot + add fusion);
  `dynamic_update_slice` of a slice it does, so the carry can be the result.
  """
  v, m = b.shape_of(d_emb)
  tokens = b.shape_of(dz)[0]
  zero = b.scalar(0, b.i32())
  inner = b.Loop(trip_count(v, rows), d_emb=d_emb)
  with inner.body() as (k, acc):
    start, first_owned = chunk_start(k, rows, v)
    dz_rows = b.dynamic_slice(dz, [zero, start], [tokens, rows])
    if first_owned is not None:  # rows an earlier step already added
      dz_rows = b.select(owned(start, first_owned, (tokens, rows), 1), dz_rows, 0.0)
    update = b.dot(dz_rows, x_blk, (0, 0), b.f32(), precision)
    old = b.dynamic_slice(acc.d_emb, [start, zero], [rows, m])
    inner.yield_(d_emb=b.dynamic_update_slice(
        acc.d_emb, b.add(old, b.convert(update, b.element_of(d_emb))), [start, zero]))
  return inner.results.d_emb


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
    width = ir.FloatType(b.element_of(fwd.args.embedding)).width
    if self.accumulate_bf16 or width >= 32:
      return None
    mib = budget.resolve(self.memory_budget_mib)
    need = fwd.num_classes * fwd.in_features * 4 / 2**20
    if need <= mib:
      return None
    return (f"its float32 [{fwd.num_classes}, {fwd.in_features}] d_embedding accumulator "
            f"({need:.4g} MiB) exceeds memory-budget-mib={mib:g}; the chunked gradient writes "
            f"{b.element_of(fwd.args.embedding)} rows instead (a larger budget, or "
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
    accumulator = b.bf16() if self.accumulate_bf16 else b.f32()
    plan = f"{self.name}: token_chunk={tokens} accumulator={accumulator}"
    log.info("%s", plan)
    # One loop gives both composites' results: the gradient's are swapped in
    # first, then the forward's (whose logsumexp the gradient read).
    with tagging_new_loops(fwd.op.block, plan), fwd.op.location, ir.InsertionPoint(fwd.op):
      forward, gradient = emit_fused(Softmax.of(fwd), tokens, *fwd.args, *cotangents,
                                     accumulator=accumulator,
                                     update_rows=min(self.update_rows, fwd.num_classes))
    replace(grad.op, gradient)
    replace(fwd.op, forward)
    return True
