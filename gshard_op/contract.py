"""Names, versions and attribute keys of the two composites: the contract.

The primitives (`gshard_op/primitive.py`) emit it and every pass (`passes/`)
checks it before rewriting; `docs/contract.md` is its prose. Bump `VERSION` on
any change of operands, results, attributes or semantics.

Operands and results are positional in the IR; the named tuples below give
them their contract names (`ForwardOperands(*op.operands).labels`), so code
reading a composite never indexes it by number.
"""

import collections

FORWARD = "gshard.shared_embedding_softmax"
GRAD = "gshard.shared_embedding_softmax_grad"
# Version 2 added the `precision` attribute, version 3 `temperature`, version 4
# `with_entropy` (and, when it is true, the entropy result and operands),
# version 5 `scales_logits` (whether `logit_scale` multiplies the float32 logits
# rather than the inputs); older composites are read with the value their math
# had (`ADDED`).
VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)

# Float attributes (f64), then the bool and string ones.
FLOAT_ATTRIBUTES = ("soft_cap_logits", "logits_abs_max", "z_loss_weight",
                    "label_smoothing_prob", "logit_scale", "temperature")
BOOL_ATTRIBUTES = ("use_tgt_labels_size_as_loss_denominator", "with_entropy", "scales_logits")
STRING_ATTRIBUTES = ("precision",)
# Attributes a later version added: (that version, the value before it).
ADDED = {"precision": (2, "DEFAULT"), "temperature": (3, 1.0), "with_entropy": (4, False),
         "scales_logits": (5, False)}


def attributes(version: int = VERSION) -> tuple[str, ...]:
  """The attributes a composite of `version` carries, floats, bools, then
  strings: all but those a later version added (`ADDED`)."""
  return tuple(name for name in FLOAT_ATTRIBUTES + BOOL_ATTRIBUTES + STRING_ATTRIBUTES
               if version >= ADDED.get(name, (0, None))[0])

FORWARD_OPERANDS = ("x", "embedding", "labels")
FORWARD_RESULTS = ("per_example_xent", "per_example_argmax", "logsumexp",
                   "logsumexp_squared")
GRAD_OPERANDS = ("x", "embedding", "labels", "logsumexp", "g_per_example_xent",
                 "g_logsumexp", "g_logsumexp_squared")
GRAD_RESULTS = ("d_x", "d_embedding")
# With `with_entropy`: one more forward result, and the gradient takes it and
# its cotangent (the entropy's cotangent needs the expected logit `lse - H`).
ENTROPY_RESULTS = ("per_example_entropy",)
ENTROPY_GRAD_OPERANDS = ("per_example_entropy", "g_per_example_entropy")


def forward_results(with_entropy: bool) -> tuple[str, ...]:
  return FORWARD_RESULTS + (ENTROPY_RESULTS if with_entropy else ())


def grad_operands(with_entropy: bool) -> tuple[str, ...]:
  return GRAD_OPERANDS + (ENTROPY_GRAD_OPERANDS if with_entropy else ())


# The entropy's fields read None when the composite has none.
ForwardOperands = collections.namedtuple("ForwardOperands", FORWARD_OPERANDS)
ForwardResults = collections.namedtuple("ForwardResults", forward_results(True),
                                        defaults=(None,))
GradOperands = collections.namedtuple("GradOperands", grad_operands(True),
                                      defaults=(None, None))
GradResults = collections.namedtuple("GradResults", GRAD_RESULTS)

# Class ids, argmax and loop positions are int32: V and N must stay below this.
MAX_SIZE = 2**31 - 1
