#!/usr/bin/env python3
"""Temp memory of Keras's own compiled train step: the gshard layer vs a dense tied softmax.

The same small causal LM (embedding lookup, a causal mix of each token with the
previous one through two Dense layers, residual, tied output softmax) trained
with `model.fit` on the JAX backend, four ways:

  dense      a ReversibleEmbedding-like tied embedding (`reverse=True` gives the
             `[B, T, V]` logits) + `SparseCategoricalCrossentropy(from_logits=True)`
  reference  `gshard_op.keras.GShardSharedEmbeddingSoftmax(implementation="reference")`
  layer      the layer as is (its primitives, under Keras's plain `jax.jit`)
  fused      the layer in a model with `GShardJitTrainer` (`gshard_op.jit` + passes)

For each, the step `fit` compiles (`gshard_op.keras.compiled_train_step`) is
compiled, not run: XLA's `memory_analysis().temp_size_in_bytes` (deterministic
on the CPU) and the largest tensor in the compiled HLO.

  python tools/keras_memory.py                 # N=1024 tokens (8 x 128), M=64, V=32768
  python tools/keras_memory.py --quick         # a smaller shape, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gshard_op.keras import keras  # noqa: E402  (on JAX; leaves no keras.json behind)
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from gshard_op.keras import (GShardJitTrainer, GShardSharedEmbeddingSoftmax,  # noqa: E402
                             compiled_train_step)

MIB = 2**20
SHAPE_RE = re.compile(r"\b(?:pred|[a-z]+\d+)\[([\d,]*)\]")


class TiedEmbedding(keras.layers.Layer):
  """keras-hub's `ReversibleEmbedding` in a few lines: rows for ids, and with
  `reverse=True` the logits `x @ embeddings.T` (Praxis's `M**-0.5` scale)."""

  def __init__(self, num_classes, in_features, **kwargs):
    super().__init__(**kwargs)
    self.in_features = in_features
    self.embeddings = self.add_weight(
        name="embeddings", shape=(num_classes, in_features),
        initializer=keras.initializers.RandomNormal(stddev=1.0))

  def call(self, inputs, reverse=False):
    if reverse:
      scaled = inputs * self.in_features**-0.5
      return ops.matmul(scaled, ops.transpose(ops.cast(self.embeddings, scaled.dtype)))
    return ops.take(ops.cast(self.embeddings, self.compute_dtype), inputs, axis=0)


class Body(keras.layers.Layer):
  """Each token mixed with the previous one: `x + Dense(Dense([x, x_prev], tanh))`."""

  def __init__(self, dim, **kwargs):
    super().__init__(**kwargs)
    self.mix = keras.layers.Dense(dim, activation="tanh")
    self.out = keras.layers.Dense(dim)

  def call(self, x):
    prev = ops.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    return x + self.out(self.mix(ops.concatenate([x, prev], axis=-1)))


class DenseLM(keras.Model):
  """`fit(x={"ids": ...}, y=targets)`; returns the `[B, T, V]` logits."""

  def __init__(self, vocab, dim, **kwargs):
    super().__init__(**kwargs)
    self.embedding = TiedEmbedding(vocab, dim)
    self.body = Body(dim)

  def call(self, batch):
    return self.embedding(self.body(self.embedding(batch["ids"])), reverse=True)


class GShardLM(keras.Model):
  """`fit(x={"ids", "targets"})`: the layer adds its own loss; returns `per_example_argmax`."""

  def __init__(self, vocab, dim, implementation="composite", **kwargs):
    super().__init__(**kwargs)
    self.softmax = GShardSharedEmbeddingSoftmax(dim, vocab, implementation=implementation)
    self.body = Body(dim)

  def call(self, batch, training=None):
    h = self.body(self.softmax.emb_lookup(batch["ids"]))
    out = self.softmax(h, class_ids=batch["targets"], training=training)
    return out["per_example_argmax"]


class FusedGShardLM(GShardJitTrainer, GShardLM):
  """`GShardLM` whose train step compiles with `gshard_op.jit`."""


def build(kind: str, batch: int, seq: int, dim: int, vocab: int):
  """The model of `kind`, compiled, and one `(x, y)` batch for it."""
  rng = np.random.default_rng(0)
  ids = rng.integers(0, vocab, (batch, seq), dtype=np.int32)
  targets = rng.integers(0, vocab, (batch, seq), dtype=np.int32)
  optimizer = keras.optimizers.Adam(1e-3)
  if kind == "dense":
    model = DenseLM(vocab, dim)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, ({"ids": ids}, targets)
  model = {"reference": lambda: GShardLM(vocab, dim, "reference"),
           "layer": lambda: GShardLM(vocab, dim),
           "fused": lambda: FusedGShardLM(vocab, dim)}[kind]()
  model.compile(optimizer=optimizer)
  return model, ({"ids": ids, "targets": targets}, None)


def largest_tensor(hlo_text: str) -> tuple[int, str]:
  """The element count and the shape text of the largest array in HLO text."""
  best = (0, "")
  for match in SHAPE_RE.finditer(hlo_text):
    dims = [int(d) for d in match.group(1).split(",") if d]
    best = max(best, (int(np.prod(dims)) if dims else 1, match.group(0)))
  return best


def measure(kind: str, batch: int, seq: int, dim: int, vocab: int) -> dict:
  model, (x, y) = build(kind, batch, seq, dim, vocab)
  compiled = compiled_train_step(model, x, y)
  elements, shape = largest_tensor(compiled.as_text())
  return {"kind": kind, "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
          "largest_tensor": shape, "has_tokens_by_vocab": elements >= batch * seq * vocab}


KINDS = ("dense", "reference", "layer", "fused")


def _kinds(text: str) -> list[str]:
  """`--kinds`: a comma-separated subset of `KINDS` (argparse reports the rest)."""
  kinds = [k.strip() for k in text.split(",") if k.strip()]
  unknown = [k for k in kinds if k not in KINDS]
  if unknown or not kinds:
    raise argparse.ArgumentTypeError(f"unknown kind(s) {unknown or [text]}; choose from "
                                     f"{', '.join(KINDS)}")
  return kinds


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--batch", type=int, default=8, help="sequences per step")
  ap.add_argument("--seq", type=int, default=128, help="tokens per sequence")
  ap.add_argument("--dim", type=int, default=64, help="model width M")
  ap.add_argument("--vocab", type=int, default=32768, help="vocabulary size V")
  ap.add_argument("--kinds", type=_kinds, default="dense,reference,layer,fused",
                  help=f"comma-separated models to measure, of: {', '.join(KINDS)}")
  ap.add_argument("--quick", action="store_true", help="batch 2, seq 64, vocab 8192")
  ap.add_argument("--json", help="also write the rows to this file")
  args = ap.parse_args(argv)
  if args.quick:
    args.batch, args.seq, args.vocab = 2, 64, 8192
  shape = (args.batch, args.seq, args.dim, args.vocab)
  print(f"Keras {keras.__version__} ({keras.config.backend()}), train step of fit: "
        f"N={args.batch * args.seq} tokens ({args.batch} x {args.seq}), M={args.dim}, "
        f"V={args.vocab}")
  rows = [measure(kind, *shape) for kind in args.kinds]
  dense = next((r["temp_bytes"] for r in rows if r["kind"] == "dense"), None)
  print(f"{'model':<10} {'temp MiB':>10} {'dense/this':>11}  largest tensor  [tokens, V]?")
  for r in rows:
    ratio = f"{dense / r['temp_bytes']:.1f}" if dense and r["temp_bytes"] else "-"
    print(f"{r['kind']:<10} {r['temp_bytes'] / MIB:>10.2f} {ratio:>11}  "
          f"{r['largest_tensor']:<15} {'yes' if r['has_tokens_by_vocab'] else 'no'}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"shape": dict(zip(("batch", "seq", "dim", "vocab"), shape)), "rows": rows},
                f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
