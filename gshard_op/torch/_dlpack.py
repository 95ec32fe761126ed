"""Crossing between torch and JAX: DLPack, both ways.

DLPack on CUDA is ordered by streams, and both directions follow torch's
current stream through the protocol's `stream=` argument:

* torch -> JAX: `jax.dlpack.from_dlpack(t)` calls `t.__dlpack__(stream=s)` with
  the stream JAX reads on; torch makes `s` wait for an event recorded on its
  current stream, so JAX sees every write queued there before the call.
* JAX -> torch: `torch.from_dlpack(a)` calls `a.__dlpack__(stream=...)` with
  torch's current stream on `a`'s device; JAX makes that stream wait until `a`
  is ready, so torch's later kernels read the finished results.

The host waits for the JAX step before the op returns (`to_torch`): torch's
caching allocator tracks only torch's streams, and would hand the inputs'
memory to the next torch kernel while JAX's stream could still be reading it.
"""

from __future__ import annotations

import contextlib

import jax
import torch
from torch import Tensor


def _on_device_of(t: Tensor):
  """torch exports a CUDA tensor only while its device is the current one."""
  return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def to_jax(t: Tensor | None):
  """A JAX view of `t` (DLPack; a copy only where the strides are not compact)."""
  if t is None:
    return None
  t = t.detach().contiguous()
  with _on_device_of(t):
    try:
      return jax.dlpack.from_dlpack(t)
    except RuntimeError as e:
      if t.is_cuda and all(d.platform != "gpu" for d in jax.devices()):
        raise RuntimeError(f"gshard_op.torch: a tensor on {t.device} needs JAX's CUDA "
                           "backend, which this JAX does not have (pip install "
                           "'jax[cuda12]'), or move the tensors to the CPU") from e
      raise


def to_torch(arrays, inputs) -> list[Tensor]:
  """Torch views of JAX arrays (DLPack), once JAX is done with them and with
  the inputs. An op's outputs may alias neither its inputs nor each other;
  where JAX forwarded a buffer, the tensor is copied."""
  arrays = jax.block_until_ready(arrays)
  seen = {t.data_ptr() for t in inputs if t is not None and t.numel()}
  out = []
  for a in arrays:
    t = torch.from_dlpack(a)
    if t.numel() and t.data_ptr() in seen:
      t = t.clone()
    seen.add(t.data_ptr())
    out.append(t)
  return out

