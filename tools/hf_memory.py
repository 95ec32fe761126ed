"""Peak memory of one training step of a tied transformers Llama, unpatched and
after `gshard_op.hf.apply`, each in a fresh process.

    .venv/bin/python tools/hf_memory.py                 # V=32768, 2048 tokens
    .venv/bin/python tools/hf_memory.py --vocab 4096 --tokens 256 --hidden 64

As tools/bench.py measures torch: a warm-up step (compiles, allocates what
stays), then the peak resident set of one more forward + backward above the
resident set before it (VmHWM reset through /proc/self/clear_refs), so torch's
and XLA's allocators count alike. Prints one JSON line per row and a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys

ROWS = ("transformers", "gshard_op.hf")


def _kib(key: str) -> int:
  with open("/proc/self/status") as f:
    return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1))


def worker(row: str, vocab: int, tokens: int, hidden: int, layers: int) -> None:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import torch
  import transformers

  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
      num_key_value_heads=max(1, hidden // 64), tie_word_embeddings=True,
      initializer_range=0.1)
  model = transformers.LlamaForCausalLM(config)
  if row == "gshard_op.hf":
    import gshard_op.hf
    gshard_op.hf.apply(model)
  ids = torch.randint(0, vocab, (1, tokens))

  def step():
    model.zero_grad(set_to_none=False)
    loss = model(ids, labels=ids).loss
    loss.backward()
    return float(loss)

  step()  # warm-up: compiles, allocates the gradients
  gc.collect()
  before = _kib("VmRSS")
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := the current resident set
  loss = step()
  peak = _kib("VmHWM")
  print(json.dumps({"row": row, "loss": loss, "peak_rss_bytes": (peak - before) * 1024,
                    "vocab": vocab, "tokens": tokens, "hidden": hidden, "layers": layers}))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vocab", type=int, default=32768)
  parser.add_argument("--tokens", type=int, default=2048)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--layers", type=int, default=1)
  parser.add_argument("--worker", choices=ROWS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  shape = (args.vocab, args.tokens, args.hidden, args.layers)
  if args.worker:
    worker(args.worker, *shape)
    return 0
  results = []
  for row in ROWS:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", row,
           "--vocab", str(args.vocab), "--tokens", str(args.tokens),
           "--hidden", str(args.hidden), "--layers", str(args.layers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
      print(proc.stderr[-3000:], file=sys.stderr)
      return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    results.append(result)
  print(f"Llama, tied, V={args.vocab}, {args.tokens} tokens, hidden {args.hidden}, "
        f"{args.layers} layer(s): step peak RSS above its start")
  for r in results:
    print(f"  {r['row']:<14} {r['peak_rss_bytes'] / 2**20:8.1f} MiB   loss {r['loss']:.6f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
