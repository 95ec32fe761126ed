#!/usr/bin/env python3
"""Demo: train a small language model whose input embedding and output softmax
share one `gshard_op.GShardSharedEmbeddingSoftmax`, on the CPU, trained the way
Flax users train: `nnx.Optimizer` with optax, a step compiled by
`gshard_op.nnx_jit` (nnx.jit plus the passes: the forward and gradient of the
softmax become one fused sweep, three matmuls, before XLA compiles).

The corpus is offline and real: Python's own standard-library sources, split
into words, numbers, newlines and punctuation; the vocabulary is the most
frequent `--vocab - 1` tokens plus `<unk>`. Targets that are `<unk>` are masked
out of the loss with `class_weights`.

Model (cheap on purpose: the `[tokens, V]` softmax dominates its cost):
  ids -> layer.emb_lookup -> 2 x (causal window MLP over the previous tokens,
  residual) -> LayerNorm -> layer(x, class_weights, class_ids).avg_xent

  python tools/demo.py                 # 300 steps, 32k vocabulary, a few minutes
  python tools/demo.py --quick         # seconds (tests)

Prints the loss curve, held-out loss before/after, the train step's temp memory
three ways (dense reference under `nnx.jit`; the op under plain `nnx.jit`, which
gets the primitives' chunked lowering; the op under `gshard_op.nnx_jit`), and
excerpts of the StableHLO before and after the pipeline.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import sys
import sysconfig
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import gshard_op  # noqa: E402

UNK = "<unk>"
TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|\n|[^\sA-Za-z0-9_]")
MIB = 2**20


# --- corpus ----------------------------------------------------------------------

def stdlib_files(max_files: int | None = None) -> list[str]:
  """The standard library's `.py` files in a fixed (sorted walk) order."""
  root = sysconfig.get_paths()["stdlib"]
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames
                         if d not in ("site-packages", "dist-packages", "__pycache__"))
    files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
  if not files:
    raise SystemExit(f"no .py files under {root}")
  return files[:max_files] if max_files else files


def tokenize_files(files: list[str]) -> list[list[str]]:
  docs = []
  for path in files:
    with open(path, encoding="utf-8", errors="replace") as f:
      docs.append(TOKEN_RE.findall(f.read()))
  return docs


class Vocab:
  def __init__(self, docs: list[list[str]], size: int):
    counts = collections.Counter(t for doc in docs for t in doc)
    # Frequency, then the token itself: ties break the same way on every run.
    common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size - 1]
    self.tokens = [UNK] + [t for t, _ in common]
    self.index = {t: i for i, t in enumerate(self.tokens)}
    self.coverage = sum(c for _, c in common) / max(1, sum(counts.values()))

  def __len__(self):
    return len(self.tokens)

  def encode(self, doc: list[str]) -> np.ndarray:
    return np.fromiter((self.index.get(t, 0) for t in doc), np.int32, len(doc))


def load_corpus(vocab_size: int, max_files: int | None, holdout_every: int = 20):
  """(vocab, train ids, held-out ids); every `holdout_every`-th file is held out."""
  files = stdlib_files(max_files)
  docs = tokenize_files(files)
  train_docs = [d for i, d in enumerate(docs) if i % holdout_every]
  vocab = Vocab(train_docs, vocab_size)
  encode = lambda ds: np.concatenate([vocab.encode(d) for d in ds if d])  # noqa: E731
  held = [d for i, d in enumerate(docs) if i % holdout_every == 0]
  return vocab, encode(train_docs), encode(held), len(files)


def sample_batch(rng: np.random.Generator, ids: np.ndarray, batch: int, seq: int):
  starts = rng.integers(0, len(ids) - seq - 1, size=batch)
  return np.stack([ids[s:s + seq + 1] for s in starts])


# --- model -------------------------------------------------------------------------

class WindowBlock(nnx.Module):
  """Residual MLP over a causal window of `window` positions spaced `dilation` apart."""

  def __init__(self, dim: int, hidden: int, window: int, dilation: int, *, rngs: nnx.Rngs):
    self.window, self.dilation = window, dilation
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.up = nnx.Linear(window * dim, hidden, rngs=rngs)
    self.down = nnx.Linear(hidden, dim, rngs=rngs)

  def __call__(self, x):  # [B, T, M]
    t = x.shape[1]
    y = self.norm(x)
    reach = (self.window - 1) * self.dilation
    padded = jnp.pad(y, ((0, 0), (reach, 0), (0, 0)))
    taps = [padded[:, k * self.dilation:k * self.dilation + t] for k in range(self.window)]
    return x + self.down(jax.nn.gelu(self.up(jnp.concatenate(taps, axis=-1))))


class TinyLM(nnx.Module):
  def __init__(self, vocab: int, dim: int, hidden: int, *, implementation: str,
               rngs: nnx.Rngs):
    # One weight for the input lookup and the output softmax.
    self.softmax = gshard_op.GShardSharedEmbeddingSoftmax(
        dim, vocab, use_tgt_labels_size_as_loss_denominator=False,
        implementation=implementation, rngs=rngs)
    self.blocks = nnx.List([WindowBlock(dim, hidden, 4, 1, rngs=rngs),
                            WindowBlock(dim, hidden, 4, 4, rngs=rngs)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)

  def __call__(self, tokens):
    """Mean next-token cross-entropy over the non-`<unk>` targets of `tokens[B, T+1]`."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    x = self.softmax.emb_lookup(inputs)
    for block in self.blocks:
      x = block(x)
    x = self.norm(x)
    weights = (targets != 0).astype(jnp.float32)[..., None]  # mask <unk> targets
    return self.softmax(x, weights, class_ids=targets[..., None]).avg_xent


def make_model(args, vocab_size: int, implementation: str) -> TinyLM:
  return TinyLM(vocab_size, args.dim, args.hidden, implementation=implementation,
                rngs=nnx.Rngs(args.seed))


# --- train / eval steps ---------------------------------------------------------------

def train_step(model: TinyLM, optimizer: nnx.Optimizer, tokens):
  loss, grads = nnx.value_and_grad(lambda m: m(tokens))(model)
  optimizer.update(model, grads)
  return loss


def eval_step(model: TinyLM, tokens):
  return model(tokens)


def make_training(args, vocab_size: int, implementation: str, jit):
  """A fresh model (same seed: same weights), its optimizer and the compiled step."""
  model = make_model(args, vocab_size, implementation)
  optimizer = nnx.Optimizer(model, optax.adam(args.lr, b2=0.98), wrt=nnx.Param)
  return model, optimizer, jit(train_step)


def compile_step(step, model, optimizer, tokens):
  """The jax.stages.Lowered and Compiled of an nnx.jit'ed step (for the IR and memory)."""
  lowered = step.lower(model, optimizer, tokens).lowered
  return lowered, lowered.compile()


# --- reporting ---------------------------------------------------------------------

class Progress:
  """A one-line progress bar on stderr (every step on a terminal, else ~10 lines)."""

  def __init__(self, total: int, width: int = 30):
    self.total, self.width, self.t0 = total, width, time.perf_counter()
    self.tty = sys.stderr.isatty()
    self.every = 1 if self.tty else max(1, total // 10)

  def update(self, step: int, loss: float) -> None:
    if step % self.every and step != self.total:
      return
    done = int(self.width * step / self.total)
    rate = (time.perf_counter() - self.t0) / step
    eta = rate * (self.total - step)
    line = (f"  step {step:>{len(str(self.total))}}/{self.total} "
            f"[{'#' * done}{'.' * (self.width - done)}] loss {loss:7.4f}  "
            f"{rate:.2f} s/step  eta {eta:5.0f} s")
    print(("\r" if self.tty else "") + line, end="" if self.tty else "\n",
          file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.tty:
      print(file=sys.stderr)


def excerpt(line: str, width: int = 200) -> str:
  """A shortened op line: composites lose their operands and attribute values,
  while loops their initial values; result types and `gshard.plan` stay."""
  line = line.strip()
  line = re.sub(r"composite_attributes = \{[^{}]*\}", "composite_attributes = {...}", line)
  line = re.sub(r'(stablehlo\.composite "[^"]+") [^{]*\{', r"\1 {", line)
  line = re.sub(r"stablehlo\.while\((%iterArg[^)]*)\)", "stablehlo.while(...)", line)
  if len(line) > width:
    line = line[:width - 4] + " ..."
  return line


def ir_lines(text: str, *needles: str) -> list[str]:
  return [ln for ln in text.splitlines() if all(n in ln for n in needles)]


def temp_mib(compiled) -> float:
  return compiled.memory_analysis().temp_size_in_bytes / MIB


# --- main ----------------------------------------------------------------------------

# The same model and step three ways: dense reference and the op under plain
# nnx.jit (the chunked lowering), and the op under gshard_op.nnx_jit.
DENSE, CHUNKED, PASSES = ("nnx.jit, dense reference", "nnx.jit, the op (chunked lowering)",
                          "gshard_op.nnx_jit (passes)")


def parse_args(argv):
  """The options, with `--quick`'s or the full run's defaults filled in."""
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--steps", type=int, default=None, help="training steps (default 300)")
  ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 32768)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 16)")
  ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 64)")
  ap.add_argument("--dim", type=int, default=None, help="model width M (default 128)")
  ap.add_argument("--lr", type=float, default=3e-3)
  ap.add_argument("--pipeline", default=None,
                  help="gshard_op.nnx_jit pipeline (default: the default pipeline)")
  ap.add_argument("--quick", action="store_true", help="a tiny run for tests")
  args = ap.parse_args(argv)
  quick = args.quick
  args.steps = args.steps or (20 if quick else 300)
  args.vocab = args.vocab or (2048 if quick else 32768)
  args.batch = args.batch or (4 if quick else 16)
  args.seq = args.seq or (32 if quick else 64)
  args.dim = args.dim or (32 if quick else 128)
  args.hidden = 2 * args.dim
  args.max_files = 120 if quick else None
  args.log_every = 5 if quick else 50
  return args


def prepare_corpus(args):
  """`(vocab, train ids, held-out ids)`, described on stdout."""
  t0 = time.perf_counter()
  vocab, train_ids, held_ids, n_files = load_corpus(args.vocab, args.max_files)
  print(f"corpus: {n_files} stdlib .py files under {sysconfig.get_paths()['stdlib']}: "
        f"{len(train_ids):,} train / {len(held_ids):,} held-out tokens; vocabulary "
        f"{len(vocab):,} (covers {vocab.coverage:.1%} of train tokens) "
        f"[{time.perf_counter() - t0:.1f} s]")
  print(f"  most frequent: {vocab.tokens[1:13]}")
  return vocab, train_ids, held_ids


def make_routes(args, vocab_size: int) -> dict:
  """`{route: (model, optimizer, step)}`, the three routes from the same seed;
  the model is described on stdout."""
  jit = gshard_op.nnx_jit(pipeline=args.pipeline) if args.pipeline else gshard_op.nnx_jit
  ours = make_training(args, vocab_size, "composite", jit)
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(ours[0], nnx.Param)))
  print(f"model: vocab V={vocab_size}, width M={args.dim}, {n_params:,} parameters "
        f"({vocab_size * args.dim:,} in the shared embedding); batch {args.batch}x{args.seq} "
        f"= {args.batch * args.seq} tokens; optax.adam lr {args.lr}; seed {args.seed}")
  return {DENSE: make_training(args, vocab_size, "reference", nnx.jit),
          CHUNKED: make_training(args, vocab_size, "composite", nnx.jit),
          PASSES: ours}


def show_pipeline(routes: dict, compiled: dict, tokens) -> int:
  """Prints the composites gshard_op.nnx_jit traces and the loops its pipeline
  makes of them; returns the number of composites left."""
  model, optimizer, step = routes[PASSES]
  with gshard_op.lowering("composite"):
    before_text = nnx.jit(train_step).lower(model, optimizer, tokens).lowered.as_text()
  after_text = compiled[PASSES][0].as_text()
  print("\nStableHLO before the pipeline (the op as composites, as gshard_op.nnx_jit traces it):")
  composites = ir_lines(before_text, "stablehlo.composite", '"gshard.')
  for ln in composites:
    print("  " + excerpt(ln, 1000))
  print(f"after `{compiled[PASSES][0].pipeline}`:")  # the pipeline that ran on it
  loops = ir_lines(after_text, "stablehlo.while", "gshard.plan")
  for ln in loops:
    print("  " + excerpt(ln, 1000))
  left = len(ir_lines(after_text, "stablehlo.composite"))
  print(f"  ({len(composites)} composites -> {len(loops)} while loop(s) tagged gshard.plan; "
        f"{left} composites left)")
  return left


def show_memory(compiled: dict) -> None:
  print("\ntrain step temp memory (compiled.memory_analysis().temp_size_in_bytes):")
  dense_mib = temp_mib(compiled[DENSE][1])
  for name, (_, c) in compiled.items():
    mib = temp_mib(c)
    print(f"  {name:<36}: {mib:8.1f} MiB   ({dense_mib / mib:5.1f}x less than dense)")


def train(args, routes: dict, first, data_rng, train_ids):
  """Step 1 on every route (same weights, same batch), then the other steps on
  gshard_op.nnx_jit's; returns `(step-1 losses, loss curve, seconds)`, the curve
  None when a loss is not finite."""
  first_losses = {name: float(s(m, o, first)) for name, (m, o, s) in routes.items()}
  model, optimizer, step = routes[PASSES]
  print(f"\ntraining {args.steps} steps:", flush=True)
  losses = [first_losses[PASSES]]
  progress = Progress(args.steps)
  progress.update(1, losses[0])
  t0 = time.perf_counter()
  for i in range(2, args.steps + 1):
    batch = sample_batch(data_rng, train_ids, args.batch, args.seq)
    losses.append(float(step(model, optimizer, batch)))
    if not math.isfinite(losses[-1]):
      progress.close()
      print(f"loss is {losses[-1]} at step {i}")
      return first_losses, None, None
    progress.update(i, losses[-1])
  progress.close()
  return first_losses, losses, time.perf_counter() - t0


def print_curve(args, losses: list[float], vocab_size: int) -> None:
  log_every = args.log_every
  print(f"loss curve (uniform guess: ln V = {math.log(vocab_size):.3f}):")
  print(f"  {'step':>6}  {'loss':>8}  {'mean of last ' + str(log_every):>16}")
  marks = sorted({1, *range(log_every, args.steps + 1, log_every), args.steps})
  for s in marks:
    window = losses[max(0, s - log_every):s]
    print(f"  {s:>6}  {losses[s - 1]:8.4f}  {np.mean(window):16.4f}")


def main(argv=None) -> int:
  args = parse_args(argv)
  t_start = time.perf_counter()
  vocab, train_ids, held_ids = prepare_corpus(args)

  t0 = time.perf_counter()
  routes = make_routes(args, len(vocab))
  data_rng = np.random.default_rng(args.seed)
  first = sample_batch(data_rng, train_ids, args.batch, args.seq)
  compiled = {name: compile_step(s, m, o, first) for name, (m, o, s) in routes.items()}
  print(f"compiled the train step three ways [{time.perf_counter() - t0:.1f} s]")
  left = show_pipeline(routes, compiled, first)
  show_memory(compiled)

  evaluate = nnx.jit(eval_step)
  eval_batches = [sample_batch(np.random.default_rng(args.seed + 1), held_ids, args.batch,
                               args.seq) for _ in range(4)]

  def held_out_loss(m):
    return float(np.mean([evaluate(m, b) for b in eval_batches]))

  model = routes[PASSES][0]
  held_before = held_out_loss(model)
  first_losses, losses, train_s = train(args, routes, first, data_rng, train_ids)
  if losses is None:
    return 1
  held_after = held_out_loss(model)

  ref_loss = first_losses[DENSE]
  rel = max(abs(v - ref_loss) / abs(ref_loss) for v in first_losses.values())
  print("step 1 loss: " + ", ".join(f"{name} {v:.6f}" for name, v in first_losses.items())
        + f" (max rel diff {rel:.1e})")
  print_curve(args, losses, len(vocab))
  print(f"held-out loss: {held_before:.4f} before -> {held_after:.4f} after training")
  print(f"trained {args.steps} steps in {train_s:.1f} s "
        f"({train_s / max(1, args.steps - 1) * 1e3:.0f} ms/step);"
        f" total {time.perf_counter() - t_start:.1f} s")
  ok = rel < 1e-4 and held_after < held_before and not left
  print("demo: OK" if ok else "demo: FAILED")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
