"""Finding the gshard composites in a module and checking them against the contract.

A pass never rewrites a composite it does not understand: `match` returns a
`SoftmaxComposite` for a well-formed op and raises `RewriteError` (with the op)
for one with the right name but an unknown version, a missing attribute or one
of the wrong type (named, with the type expected), options `SoftmaxOptions`
rejects, a `logit_scale` other than `in_features**-0.5` where it scales the
inputs (the decomposition's: `scales_logits` false, as before version 5),
sizes beyond i32, or operand/result types that break `gshard_op/contract.py`.
Its operands and results are then read by name (`site.args.labels`).
"""

from __future__ import annotations

import dataclasses
import math

from jaxlib.mlir import ir

from gshard_op import contract
from gshard_op.online_softmax import Spec
from gshard_op.options import SoftmaxOptions
from gshard_op.ir import types as irt
from gshard_op.passes.errors import RewriteError
from gshard_op.passes.module_pass import composite_name, walk

NAMES = (contract.FORWARD, contract.GRAD)


@dataclasses.dataclass
class SoftmaxComposite:
  """A checked `gshard.shared_embedding_softmax[_grad]` composite."""

  op: ir.Operation
  is_grad: bool
  options: SoftmaxOptions
  logit_scale: float
  num_tokens: int
  num_classes: int
  labels_are_ids: bool

  @property
  def operands(self) -> list[ir.Value]:
    """The operands in contract order; prefer `args`, which names them."""
    return list(self.op.operands)

  @property
  def in_features(self) -> int:
    """`M`, from `x`'s type."""
    return irt.shape_of(self.args.x)[1]

  @property
  def args(self) -> contract.ForwardOperands | contract.GradOperands:
    """The operands by their contract names (`site.args.labels`), in order."""
    named = contract.GradOperands if self.is_grad else contract.ForwardOperands
    return named(*self.op.operands)

  @property
  def results(self) -> contract.ForwardResults | contract.GradResults:
    """The results by their contract names (`site.results.logsumexp`), in order."""
    named = contract.GradResults if self.is_grad else contract.ForwardResults
    return named(*self.op.results)

  @property
  def spec(self) -> Spec:
    """What the math needs to know of the op (`gshard_op/online_softmax.py`)."""
    return Spec(self.options, self.logit_scale, self.num_classes, self.labels_are_ids)

  @property
  def decomposition(self) -> str:
    return ir.FlatSymbolRefAttr(self.op.attributes["decomposition"]).value


def find(module: ir.Operation, names=NAMES) -> list[ir.Operation]:
  """The composites named `names` anywhere in `module`, in pre-order."""
  return walk(module, lambda op: composite_name(op) in names)


def _attribute(op, attrs, key, kind, what: str):
  """`kind(attrs[key])` (an MLIR attribute class); RewriteError naming the key
  and the expected type when it is missing or of another type."""
  if key not in attrs:
    raise RewriteError(op, f"{composite_name(op)}: composite_attributes lacks '{key}' ({what})")
  try:
    return kind(attrs[key]).value
  except ValueError:
    raise RewriteError(op, f"{composite_name(op)}: composite attribute '{key}' must be "
                           f"{what}, got {attrs[key]}") from None


# The MLIR attribute class of each composite attribute, and its type in words.
_KINDS = {**dict.fromkeys(contract.FLOAT_ATTRIBUTES, (ir.FloatAttr, "an f64 float")),
          **dict.fromkeys(contract.BOOL_ATTRIBUTES, (ir.BoolAttr, "a bool")),
          **dict.fromkeys(contract.STRING_ATTRIBUTES, (ir.StringAttr, "a string"))}


def _op_attribute(op, key, kind, what: str):
  """`kind(op.attributes[key])`, with a RewriteError as `_attribute` gives."""
  if key not in op.attributes:
    raise RewriteError(op, f"{composite_name(op)}: lacks the '{key}' attribute ({what})")
  try:
    return kind(op.attributes[key])
  except ValueError:
    raise RewriteError(op, f"{composite_name(op)}: attribute '{key}' must be {what}, "
                           f"got {op.attributes[key]}") from None


def match(op: ir.Operation) -> SoftmaxComposite:
  """Checks `op` against the contract; see the module docstring."""
  name = composite_name(op)
  if name not in NAMES:
    raise RewriteError(op, f"not a gshard composite: {op.name} {name or ''}")
  version = _op_attribute(op, "version", ir.IntegerAttr, "an i32 integer").value
  if version not in contract.READABLE_VERSIONS:
    raise RewriteError(op, f"{name} has version {version}; this build of the passes "
                           f"understands versions {', '.join(map(str, contract.READABLE_VERSIONS))}")
  _op_attribute(op, "decomposition", ir.FlatSymbolRefAttr, "a symbol reference")
  attrs = _op_attribute(op, "composite_attributes", ir.DictAttr, "a dictionary")
  # The attributes this version carries, each of its type; those a later
  # version added take, in `from_attributes`, the value the older math had.
  values = {key: _attribute(op, attrs, key, *_KINDS[key]) for key in contract.attributes(version)}
  try:
    options = SoftmaxOptions.from_attributes(values, version)
  except (TypeError, ValueError) as e:
    raise RewriteError(op, f"bad composite_attributes: {e}") from None

  is_grad = name == contract.GRAD
  entropy = options.with_entropy
  expected_operands = (contract.grad_operands(entropy) if is_grad
                       else contract.FORWARD_OPERANDS)
  expected_results = (contract.GRAD_RESULTS if is_grad
                      else contract.forward_results(entropy))
  operands, results = list(op.operands), list(op.results)
  if len(operands) != len(expected_operands) or len(results) != len(expected_results):
    raise RewriteError(op, f"{name} takes {len(expected_operands)} operands "
                           f"({', '.join(expected_operands)}) and gives {len(expected_results)} "
                           f"results, got {len(operands)} and {len(results)}")
  args = (contract.GradOperands if is_grad else contract.ForwardOperands)(*operands)
  x, embedding, labels = args.x, args.embedding, args.labels
  _require(op, len(irt.shape_of(x)) == 2 and irt.is_float(irt.element_of(x)), "x must be a float [N, M] tensor")
  n, m = irt.shape_of(x)
  _require(op, irt.shape_of(embedding)[1:] == (m,) and len(irt.shape_of(embedding)) == 2
           and irt.is_float(irt.element_of(embedding)), f"embedding must be a float [V, {m}] tensor")
  v = irt.shape_of(embedding)[0]
  _require(op, v <= contract.MAX_SIZE and n <= contract.MAX_SIZE,
           f"N={n} tokens and V={v} classes must be at most 2**31 - 1 (class ids, "
           "argmax and loop positions are i32)")
  labels_are_ids = not irt.is_float(irt.element_of(labels))
  if labels_are_ids:
    _require(op, irt.shape_of(labels) == (n,) and irt.element_of(labels) == irt.i32(),
             f"labels must be i32[{n}] ids or float [{n}, {v}] probabilities")
  else:
    _require(op, irt.shape_of(labels) == (n, v),
             f"labels must be i32[{n}] ids or float [{n}, {v}] probabilities")
  vec_f32 = irt.tensor((n,), irt.f32())
  if is_grad:
    for what in expected_operands[3:]:
      _require(op, getattr(args, what).type == vec_f32, f"{what} must be {vec_f32}")
    _require(op, results[0].type == x.type and results[1].type == embedding.type,
             "results must be d_x like x and d_embedding like embedding")
  else:
    want = [vec_f32, irt.tensor((n,), irt.i32()), vec_f32, vec_f32] + [vec_f32] * entropy
    _require(op, [r.type for r in results] == want,
             f"results must be {', '.join(str(t) for t in want)}")
  # Scaling the inputs, the decomposition uses M**-0.5 whatever the attribute
  # says: a rewrite using another scale would give a second answer.
  scale = options.scale_for(m)
  _require(op, math.isclose(values["logit_scale"], scale, rel_tol=1e-6),
           f"logit_scale = {values['logit_scale']!r} disagrees with in_features**-0.5 = "
           f"{scale!r} (M = {m}), which the decomposition uses (scales_logits = false)")
  return SoftmaxComposite(op=op, is_grad=is_grad, options=options, logit_scale=scale,
                          num_tokens=n, num_classes=v, labels_are_ids=labels_are_ids)


def _require(op, condition: bool, message: str) -> None:
  if not condition:
    raise RewriteError(op, f"{composite_name(op)}: {message}")


def _symbol_refs(op: ir.Operation) -> set[str]:
  """The flat symbol references in the attributes of `op` and the ops it holds."""
  refs: set[str] = set()

  def collect(o):
    for name in o.attributes:
      attr = o.attributes[name]
      if isinstance(attr, ir.FlatSymbolRefAttr):
        refs.add(attr.value)
    return ir.WalkResult.ADVANCE

  op.walk(collect)
  return refs


def erase_dead_functions(module: ir.Operation) -> None:
  """Erases the private `func.func`s that no public function reaches (the
  decompositions a rewrite left behind, and what only they called)."""
  body = module.regions[0].blocks[0]
  funcs = {ir.StringAttr(f.attributes["sym_name"]).value: f.operation
           for f in body.operations if f.operation.name == "func.func"}
  live, todo = set(), [name for name, f in funcs.items()
                       if "sym_visibility" not in f.attributes
                       or ir.StringAttr(f.attributes["sym_visibility"]).value == "public"]
  for op in body.operations:  # references from non-function top-level ops
    if op.operation.name != "func.func":
      todo.extend(_symbol_refs(op.operation))
  while todo:
    name = todo.pop()
    if name in live or name not in funcs:
      continue
    live.add(name)
    todo.extend(_symbol_refs(funcs[name]))
  for name, f in funcs.items():
    if name not in live:
      f.erase()
