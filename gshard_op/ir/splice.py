"""Splicing JAX-lowered programs into a module: what a pass needs of the IR.

The math lives in JAX (`gshard_op/chunked.py`, `fused.py`, `sharded.py`); a
pass gets a program's StableHLO from JAX (`lowered`) for the operand types of
the composite it replaces, and `splice` moves that program's ops to an
insertion point of the module being rewritten, its arguments replaced by the
given operands. Functions the program calls are inlined in turn, so nothing
but the program's own ops arrives, and its collectives get channel ids unused
in the module. `tagging_new_loops` then records the pass's plan on the
`stablehlo.while` loops it made.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxlib.mlir import ir
from jaxlib.mlir.dialects import stablehlo as hlo

from gshard_op.ir.types import element_of, shape_of

_DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16, "f64": jnp.float64,
           "i32": jnp.int32, "i64": jnp.int64, "ui32": jnp.uint32, "i1": jnp.bool_}


def spec_of(v: ir.Value) -> jax.ShapeDtypeStruct:
  """The JAX type of an IR value."""
  element = str(element_of(v))
  if element not in _DTYPES:
    raise ValueError(f"no JAX dtype for {element}")
  return jax.ShapeDtypeStruct(shape_of(v), _DTYPES[element])


@functools.lru_cache(maxsize=256)
def lowered(fn: Callable, static: tuple, specs: tuple[jax.ShapeDtypeStruct, ...]) -> str:
  """The StableHLO text of `jax.jit(partial(fn, *static))` for operands of
  types `specs` (`static` hashable: the lowering is cached on it); 64-bit
  types stay 64-bit whatever `jax_enable_x64` says elsewhere."""
  wide = any(jnp.dtype(s.dtype).itemsize == 8 for s in specs)
  with jax.enable_x64(True) if wide else contextlib.nullcontext():
    return jax.jit(functools.partial(fn, *static)).lower(*specs).as_text()


def _functions(module: ir.Module) -> dict[str, ir.Operation]:
  return {ir.StringAttr(op.attributes["sym_name"]).value: op.operation
          for op in module.body.operations if op.operation.name == "func.func"}


def _nested(op: ir.Operation, names: tuple[str, ...]) -> list[ir.Operation]:
  """`op` and the operations under it named one of `names`, in pre-order."""
  found = []

  def visit(o):
    if o.name in names:
      found.append(o.operation if isinstance(o, ir.OpView) else o)
    return ir.WalkResult.ADVANCE

  op.walk(visit)
  return found


def _inline_body(func: ir.Operation, operands: Sequence[ir.Value], ip: ir.InsertionPoint,
                 functions: dict[str, ir.Operation], next_channel) -> list[ir.Value]:
  """Moves a copy of `func`'s body to `ip`, arguments replaced by `operands`;
  returns what it returned. Calls inside are inlined the same way, and
  all-reduces get fresh channels."""
  body = func.clone(ir.InsertionPoint(func)).regions[0].blocks[0]  # in the source module
  for arg, operand in zip(body.arguments, operands):
    arg.replace_all_uses_with(operand)
  *ops, ret = [op.operation for op in body.operations]
  for op in ops:
    op.detach_from_parent()
    ip.insert(op)
    for inner in _nested(op, ("stablehlo.all_reduce", "func.call")):
      if inner.name == "stablehlo.all_reduce":
        if next_channel is None:
          raise ValueError("a spliced program with collectives needs next_channel")
        kind = hlo.ChannelHandle(inner.attributes["channel_handle"]).channel_type
        inner.attributes["channel_handle"] = hlo.ChannelHandle.get(next_channel(), kind)
      elif inner.name == "func.call":
        callee = functions[ir.FlatSymbolRefAttr(inner.attributes["callee"]).value]
        replace(inner, _inline_body(callee, list(inner.operands), ir.InsertionPoint(inner),
                                    functions, next_channel))
  return list(ret.operands)


def splice(text: str, operands: Sequence[ir.Value], ip: ir.InsertionPoint,
           next_channel: Callable[[], int] | None = None) -> list[ir.Value]:
  """The results of program `text`'s `@main` applied to `operands`, its ops
  inserted at `ip`; its all-reduces numbered from `next_channel` (needed when
  the program has any)."""
  source = ir.Module.parse(text, context=operands[0].context)
  functions = _functions(source)
  return _inline_body(functions["main"], operands, ip, functions, next_channel)


def replace(op: ir.Operation, new_results: Sequence[ir.Value]) -> None:
  """Replaces every use of `op`'s results by `new_results`, then erases `op`."""
  for old, new in zip(op.results, new_results):
    old.replace_all_uses_with(new)
  op.erase()


@contextlib.contextmanager
def tagging_new_loops(block: ir.Block, text: str):
  """Marks each `stablehlo.while` emitted into `block` inside the `with` with
  `gshard.plan = text`, so the choice a pass (or the lowering) made is visible
  in the IR."""
  before = {o.operation for o in block.operations}
  yield
  for o in block.operations:
    if o.operation not in before and o.operation.name == "stablehlo.while":
      o.operation.attributes["gshard.plan"] = ir.StringAttr.get(text)
