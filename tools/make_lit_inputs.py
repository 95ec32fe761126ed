#!/usr/bin/env python3
"""Prints the StableHLO of small real programs using the gshard composites.

The inputs of the lit tests in `tests/lit/` are this output in its `--trim`
form (no module wrapper, no jax result names, `@main` named after the case):
lowering real jax programs keeps them honest, since the composite, its
attributes and its decomposition are exactly what `gshard_op/primitive.py`
emits. Regenerate them after a change of the contract.

  python tools/make_lit_inputs.py                   # every case, as lowered
  python tools/make_lit_inputs.py --trim forward_ids  # one case, as the tests hold it
  python tools/make_lit_inputs.py --list
  python tools/make_lit_inputs.py value_and_grad_ids > step.mlir   # a gshard-opt input

Shapes are small on purpose: N=8 tokens, M=16 features, V=50 classes (odd, so
a vocab chunk of 16 leaves a partial last chunk). Locations are stripped.

`value_and_grad_gemma` is the exception: a training step at Gemma's shape
(8192 tokens x 2304 features x 256000 classes, bfloat16), to check what the
passes do at a real model's size; as IR it is as small as the others.

The `sharded_*` cases lower on a ("data"=2, "model"=4) mesh of host CPU devices
(the script asks XLA for 8 of them before JAX starts) with V=64 classes, so
that each "model" shard holds 16 of them; the inputs are sharded over "data".
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The sharded cases need 8 devices; the flag must be set before JAX starts.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      f for f in (os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=8") if f)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import gshard_op  # noqa: E402
from gshard_op import SoftmaxOptions  # noqa: E402
from gshard_op.functional import shared_embedding_softmax  # noqa: E402
from gshard_op.primitive import per_token_softmax  # noqa: E402

N, M, V = 8, 16, 50

X = jax.ShapeDtypeStruct((N, M), jnp.float32)
EMBEDDING = jax.ShapeDtypeStruct((V, M), jnp.float32)
WEIGHTS = jax.ShapeDtypeStruct((N, 1), jnp.float32)
IDS = jax.ShapeDtypeStruct((N, 1), jnp.int32)
FLAT_IDS = jax.ShapeDtypeStruct((N,), jnp.int32)
PROBS = jax.ShapeDtypeStruct((N, V), jnp.float32)


def _layer(labels: str, x, embedding, weights, y, **options):
  kw = {"class_ids": y} if labels == "ids" else {"class_probabilities": y}
  return shared_embedding_softmax(x, embedding, weights, **kw, **options)


def _layer_loss(labels: str, **options):
  """`avg_xent + z_loss` of the functional layer, from `(x, embedding, w, labels)`."""
  def loss(x, embedding, weights, y):
    out = _layer(labels, x, embedding, weights, y, **options)
    return out.avg_xent + out.z_loss
  return loss


def _forward(labels: str, **options):
  """Forward only: the loss and the per-token argmax (no `[N, V]` output)."""
  def f(x, embedding, weights, y):
    out = _layer(labels, x, embedding, weights, y, **options)
    return out.avg_xent + out.z_loss, out.per_example_argmax
  return f


def _value_and_grad(labels: str, **options):
  return jax.value_and_grad(_layer_loss(labels, **options), argnums=(0, 1))


def _value_and_grad_of(labels: str, loss_of_output, **options):
  """`value_and_grad` of `loss_of_output(layer output)` w.r.t. x and embedding."""
  def loss(x, embedding, weights, y):
    return loss_of_output(_layer(labels, x, embedding, weights, y, **options))
  return jax.value_and_grad(loss, argnums=(0, 1))


def _per_token(options: SoftmaxOptions):
  """The primitive alone: all four per-token results."""
  return lambda x, embedding, ids: per_token_softmax(x, embedding, ids, options)


SHARDED_V = 64  # 16 classes on each of the 4 "model" shards

# Gemma 2 2B's output layer (DESIGN.md section 5's first anchor shape).
GEMMA_N, GEMMA_M, GEMMA_V = 8192, 2304, 256000
GEMMA = (jax.ShapeDtypeStruct((GEMMA_N, GEMMA_M), jnp.bfloat16),
         jax.ShapeDtypeStruct((GEMMA_V, GEMMA_M), jnp.bfloat16),
         jax.ShapeDtypeStruct((GEMMA_N, 1), jnp.float32),
         jax.ShapeDtypeStruct((GEMMA_N, 1), jnp.int32))


def _sharded(embedding_spec, labels: str = "ids"):
  """Abstract arguments `(x, embedding, weights, labels)` on the (2, 4) mesh:
  tokens on "data", the embedding as `embedding_spec` says. Built when the case
  is lowered (the mesh needs JAX's devices)."""
  def args():
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2,
                         devices=jax.devices("cpu")[:8])
    def spec(shape, dtype, *names):
      return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P(*names)))
    y = (spec((N, 1), jnp.int32, "data", None) if labels == "ids"
         else spec((N, SHARDED_V), jnp.float32, "data", None))
    return (spec((N, M), jnp.float32, "data", None),
            spec((SHARDED_V, M), jnp.float32, *embedding_spec),
            spec((N, 1), jnp.float32, "data", None), y)
  return args


CASES = {
    # name (also the function's name with --trim): (function, abstract arguments)
    "forward_ids": (_per_token(SoftmaxOptions()), (X, EMBEDDING, FLAT_IDS)),
    "forward_ids_argmax": (_forward("ids"), (X, EMBEDDING, WEIGHTS, IDS)),
    "forward_probs": (_forward("probs"), (X, EMBEDDING, WEIGHTS, PROBS)),
    "soft_cap": (_forward("ids", soft_cap_logits=5.0), (X, EMBEDDING, WEIGHTS, IDS)),
    "abs_clip": (_forward("ids", logits_abs_max=3.0), (X, EMBEDDING, WEIGHTS, IDS)),
    "label_smoothing": (_forward("ids", label_smoothing_prob=0.1), (X, EMBEDDING, WEIGHTS, IDS)),
    "z_loss": (_forward("ids", z_loss_weight=1e-4), (X, EMBEDDING, WEIGHTS, IDS)),
    "all_options": (_forward("ids", soft_cap_logits=5.0, logits_abs_max=3.0,
                             label_smoothing_prob=0.1, z_loss_weight=1e-4,
                             use_tgt_labels_size_as_loss_denominator=False),
                    (X, EMBEDDING, WEIGHTS, IDS)),
    "value_and_grad_ids": (_value_and_grad("ids"), (X, EMBEDDING, WEIGHTS, IDS)),
    "value_and_grad_probs": (_value_and_grad("probs"), (X, EMBEDDING, WEIGHTS, PROBS)),
    "value_and_grad_all_options": (_value_and_grad("ids", soft_cap_logits=5.0,
                                                   logits_abs_max=3.0,
                                                   label_smoothing_prob=0.1,
                                                   z_loss_weight=1e-4),
                                   (X, EMBEDDING, WEIGHTS, IDS)),
    # The cotangent of per_example_xent (2 * xent) depends on the forward's results.
    "value_and_grad_xent_squared": (_value_and_grad_of(
        "ids", lambda out: jnp.sum(out.per_example_xent ** 2)), (X, EMBEDDING, WEIGHTS, IDS)),
    "value_and_grad_gemma": (_value_and_grad("ids", soft_cap_logits=30.0), GEMMA),
    # A GRPO-style loss: per-token log-probabilities and the entropy (version 4's
    # fifth forward result and the gradient's two entropy operands).
    "value_and_grad_entropy": (_value_and_grad_of(
        "ids", lambda out: jnp.sum(out.per_example_xent) - 1e-3 * jnp.sum(out.per_example_entropy),
        with_entropy=True, temperature=0.8), (X, EMBEDDING, WEIGHTS, IDS)),
    # A plain tied head's scale on the float32 logits (contract version 5's
    # `scales_logits = true`), 0.5 rather than 1.0 so that the IR shows it.
    "value_and_grad_logit_scale": (_value_and_grad("ids", logit_scale=0.5),
                                   (X, EMBEDDING, WEIGHTS, IDS)),
    # Matmuls at HIGHEST (the composite's `precision` attribute, contract version 2).
    "value_and_grad_highest": (_value_and_grad("ids", precision="highest"),
                               (X, EMBEDDING, WEIGHTS, IDS)),
    # On the (2, 4) mesh: the arguments are built by a function when lowered.
    "sharded_forward_ids": (_forward("ids", label_smoothing_prob=0.1, z_loss_weight=1e-4),
                            _sharded(("model", None))),
    "sharded_value_and_grad_ids": (_value_and_grad("ids"), _sharded(("model", None))),
    "sharded_model_dim": (_forward("ids"), _sharded(("model", "data"))),
    "sharded_model_dim_only": (_forward("ids"), _sharded((None, "model"))),
}

_LOC = re.compile(r"\s*loc\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)")
_LOC_ALIAS = re.compile(r"^#loc\d*\s*=.*$\n?", re.M)


def strip_locations(text: str) -> str:
  """Drops `loc(...)` suffixes and `#loc` alias definitions."""
  return _LOC.sub("", _LOC_ALIAS.sub("", text))


def lower(name: str) -> str:
  fn, args = CASES[name]
  if callable(args):
    args = args()
  with gshard_op.lowering("composite"):  # the composites, as gshard_op.jit traces them
    return strip_locations(jax.jit(fn).lower(*args).as_text())


def trim(name: str, text: str) -> str:
  """The form the lit tests use: no `module` wrapper and no jax result names,
  `@main` renamed after the case."""
  lines = text.rstrip().splitlines()
  if not (lines[0].startswith("module ") and lines[-1] == "}"):
    raise ValueError(f"{name}: unexpected module text")
  body = textwrap.dedent("\n".join(lines[1:-1]))
  body = re.sub(r' \{jax\.result_info = "[^"]*"\}', "", body)
  return body.replace("@main(", f"@{name}(") + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("cases", nargs="*", help="case names (default: all)")
  parser.add_argument("--list", action="store_true", help="list the case names")
  parser.add_argument("--trim", action="store_true",
                      help="print each case as the lit tests hold it (no module wrapper, "
                           "no result names, @main renamed after the case)")
  args = parser.parse_args(argv)
  if args.list:
    print("\n".join(CASES))
    return 0
  unknown = [c for c in args.cases if c not in CASES]
  if unknown:
    parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
  for i, name in enumerate(args.cases or CASES):
    if i:
      print("// -----\n")
    text = lower(name)
    if args.trim:
      print(trim(name, text), end="")
    else:
      print(f"// {name}")
      print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
