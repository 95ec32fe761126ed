"""`gshard_op.torch`: the op on torch tensors against torch's own dense computation.

The reference is what a PyTorch user writes: `F.cross_entropy(F.linear(x *
M**-0.5, E), y, ...)` with its autograd (plus the soft cap, clip and z-loss
written out in torch). Values and gradients of every differentiable output are
compared, and the path the gradient took (scaled fused gradients or the
general one) is checked too: a fused kernel that is only right for the mean
loss is the classic bug.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gshard_op  # noqa: E402
import gshard_op.torch as gt  # noqa: E402
from gshard_op.torch import _dlpack, _jax_step, _ops  # noqa: E402

BATCH, M, V = (3, 5), 16, 37  # 15 tokens, V not a power of two
IGNORE = -100

# rtol, and atol relative to the largest |expected| (values, gradients).
TOL = {torch.float32: (2e-5, 2e-5, 1e-4, 2e-5),
       # bf16 operands are rounded before the matmuls and the outputs after.
       torch.bfloat16: (2e-2, 2e-2, 3e-2, 3e-2)}


def assert_close(actual, expected, rtol, atol_rel, what):
  expected = expected.detach().double()
  atol = max(atol_rel * float(expected.abs().max()) if expected.numel() else 0.0, 1e-12)
  torch.testing.assert_close(actual.detach().double(), expected, rtol=rtol, atol=atol,
                             msg=lambda m: f"{what}: {m}")


# --- the dense torch model -------------------------------------------------------

def dense_logits(x, e, opts):
  """`[N, V]` float32 logits of `x[N, M]`, capped and clipped."""
  logits = F.linear(x.float() * x.shape[-1] ** -0.5, e.float())
  if opts.get("soft_cap_logits"):
    cap = opts["soft_cap_logits"]
    logits = cap * torch.tanh(logits / cap)
  if opts.get("logits_abs_max"):
    logits = logits.clamp(-opts["logits_abs_max"], opts["logits_abs_max"])
  return logits


def dense_fields(x, e, weights, ids, probs, opts):
  """The op's fields from `F.cross_entropy` on the dense logits (flat tokens)."""
  logits = dense_logits(x, e, opts)
  smoothing = opts.get("label_smoothing_prob", 0.0)
  if ids is not None:
    xent = F.cross_entropy(logits, ids.long(), ignore_index=IGNORE, label_smoothing=smoothing,
                           reduction="none")
    weights = weights * (ids != IGNORE)
  else:
    xent = F.cross_entropy(logits, probs, label_smoothing=smoothing, reduction="none")
  total_xent = (xent * weights).sum()
  total_weight = weights.sum()
  if opts.get("use_tgt_labels_size_as_loss_denominator", False):  # torch's mean by default
    denominator = torch.tensor(float(x.shape[0]))
  else:
    denominator = total_weight
  lse = torch.logsumexp(logits, -1)
  z_loss = opts.get("z_loss_weight", 0.0) * (lse**2 * weights).sum() / denominator
  return dict(logits=logits, log_probs=logits - lse[:, None],
              per_example_argmax=logits.argmax(-1), per_example_xent=xent,
              per_example_weight=weights, total_xent=total_xent, total_weight=total_weight,
              avg_xent=total_xent / denominator, avg_xent_weight=denominator, z_loss=z_loss)


# --- the losses differentiated, and the gradient path each must take ---------------

def loss_of(name, out, coeffs):
  """A scalar from the outputs; `coeffs` are fixed random cotangents."""
  flat = lambda t: t.reshape(-1, *t.shape[len(BATCH):]) if t.dim() > 1 else t
  if name == "mean":
    return out["avg_xent"]
  if name == "sum":
    return out["total_xent"]
  if name == "mean+z":
    return out["avg_xent"] + out["z_loss"]
  if name == "mean+z/2":
    return out["avg_xent"] + 0.5 * out["z_loss"]
  if name == "z":
    return out["z_loss"]
  if name == "none":
    return (flat(out["per_example_xent"]).float() * coeffs["tokens"]).sum()
  if name == "logits":
    return ((flat(out["logits"]).float() * coeffs["dense"]).sum()
            + (flat(out["log_probs"]).float() * coeffs["dense2"]).sum())
  raise ValueError(name)


def fused_path(name, opts):
  """Whether `name`'s gradient is the saved fused gradient, scaled."""
  if name in ("mean", "sum"):
    return not opts.get("z_loss_weight")
  if name == "mean+z":
    return True
  return name == "z" and not opts.get("z_loss_weight")


@pytest.fixture
def vjp_calls(monkeypatch):
  """Counts the general-gradient calls of the backward op."""
  calls = []
  original = _jax_step.vjp_fn

  def counting(config):
    fn = original(config)
    return lambda *a: (calls.append(config), fn(*a))[1]
  monkeypatch.setattr(_jax_step, "vjp_fn", counting)
  return calls


def make_case(seed, dtype=torch.float32, labels="ids", weights="random", ignore=False):
  g = torch.Generator().manual_seed(seed)
  x = (2.0 * torch.randn(BATCH + (M,), generator=g)).to(dtype)
  e = torch.randn((V, M), generator=g).to(dtype)
  ids = probs = None
  if labels == "ids":
    ids = torch.randint(0, V, BATCH, generator=g)
    if ignore:
      ids.view(-1)[torch.randperm(ids.numel(), generator=g)[:4]] = IGNORE
  else:
    probs = torch.softmax(2.0 * torch.randn(BATCH + (V,), generator=g), -1)
  if weights == "random":
    w = torch.rand(BATCH + (1,), generator=g) * 2
    w.view(-1)[:3] = 0.0
  else:
    w = None
  coeffs = dict(tokens=torch.randn(math.prod(BATCH), generator=g),
                dense=torch.randn(math.prod(BATCH), V, generator=g),
                dense2=torch.randn(math.prod(BATCH), V, generator=g))
  return x, e, w, ids, probs, coeffs


CASES = {
    # name: (case kwargs, options)
    "ids": (dict(weights="ones"), {}),
    "ignore_index": (dict(weights="ones", ignore=True),
                     dict(use_tgt_labels_size_as_loss_denominator=False)),
    "soft_labels": (dict(labels="probs"), {}),
    "class_weights": (dict(), dict(use_tgt_labels_size_as_loss_denominator=False)),
    "label_smoothing": (dict(ignore=True), dict(label_smoothing_prob=0.1)),
    "z_loss": (dict(ignore=True), dict(z_loss_weight=0.01)),
    # Praxis's denominator (all tokens, ignored ones too), with ignored tokens.
    "praxis_mean": (dict(ignore=True), dict(use_tgt_labels_size_as_loss_denominator=True,
                                            z_loss_weight=0.01, label_smoothing_prob=0.1)),
    "cap_clip_z": (dict(), dict(soft_cap_logits=6.0, logits_abs_max=4.0, z_loss_weight=0.1,
                                use_tgt_labels_size_as_loss_denominator=True)),
}


# bf16 on a subset: how the dtype flows does not depend on the options.
DTYPE_CASES = ([(name, torch.float32) for name in CASES]
               + [(name, torch.bfloat16) for name in ("ids", "z_loss")])


@pytest.mark.parametrize("case_name,dtype", DTYPE_CASES,
                         ids=[f"{n}-{str(d).removeprefix('torch.')}" for n, d in DTYPE_CASES])
def test_matches_dense_torch(case_name, dtype, vjp_calls):
  kwargs, opts = CASES[case_name]
  x, e, w, ids, probs, coeffs = make_case(zlib.crc32(case_name.encode()), dtype, **kwargs)
  n = math.prod(BATCH)
  flat_w = torch.ones(n) if w is None else w.reshape(n)
  flat_ids = None if ids is None else ids.reshape(n)
  flat_probs = None if probs is None else probs.reshape(n, V)
  rtol, atol, grad_rtol, grad_atol = TOL[dtype]

  # Values, all fields, with the dense logits returned too.
  out = gt.shared_embedding_softmax(x, e, w, ids, probs, return_logits=True, **opts)
  ref = dense_fields(x.reshape(n, M), e, flat_w, flat_ids, flat_probs, opts)
  assert list(out) == list(gt.FIELDS)
  for name in ("per_example_xent", "total_xent", "total_weight", "avg_xent",
               "avg_xent_weight", "z_loss", "per_example_weight", "logits", "log_probs"):
    got = out[name]
    assert got.shape[:len(BATCH)] == BATCH or got.dim() == 0, name
    assert_close(got.reshape(ref[name].shape), ref[name], rtol, atol, f"{case_name} {name}")
  assert out["per_example_xent"].dtype == dtype
  assert out["avg_xent"].dtype == out["z_loss"].dtype == out["total_xent"].dtype == torch.float32
  assert out["per_example_argmax"].dtype == torch.int32
  if dtype == torch.float32:
    assert torch.equal(out["per_example_argmax"].reshape(n).long(), ref["per_example_argmax"])
  if ids is not None:  # ignored tokens: zero cross-entropy, zero weight
    ignored = ids == IGNORE
    assert torch.all(out["per_example_xent"][ignored] == 0)
    assert torch.all(out["per_example_weight"][..., 0][ignored] == 0)

  losses = ["mean", "sum", "none", "mean+z", "logits"]
  if opts.get("z_loss_weight"):
    losses += ["mean+z/2", "z"]
  for loss_name in losses:
    # The dense torch autograd, in float32.
    xr, er = x.detach().float().requires_grad_(), e.detach().float().requires_grad_()
    ref = dense_fields(xr.reshape(n, M), er, flat_w, flat_ids, flat_probs, opts)
    ref_out = {k: (v.reshape(BATCH + v.shape[1:]) if v.dim() else v) for k, v in ref.items()}
    loss_of(loss_name, ref_out, coeffs).backward()
    want = (xr.grad, er.grad)

    xg, eg = x.detach().clone().requires_grad_(), e.detach().clone().requires_grad_()
    before = len(vjp_calls)
    out = gt.shared_embedding_softmax(xg, eg, w, ids, probs,
                                      return_logits=loss_name == "logits", **opts)
    loss = loss_of(loss_name, out, coeffs)
    assert_close(loss.float(), loss_of(loss_name, ref_out, coeffs), rtol, atol,
                 f"{case_name} loss {loss_name}")
    loss.backward()
    for got, expected, what in ((xg.grad, want[0], "d_inputs"), (eg.grad, want[1], "d_embedding")):
      assert got.dtype == dtype
      assert_close(got, expected, grad_rtol, grad_atol, f"{case_name} {loss_name} {what}")
    general = len(vjp_calls) - before
    assert general == (0 if fused_path(loss_name, opts) else 1), (
        f"{loss_name}: {'general' if general else 'fused'} gradient path")


def test_cross_entropy_reductions():
  """`avg_xent`, `total_xent` and `per_example_xent` are `F.cross_entropy`'s
  mean, sum and none with `ignore_index`, by default, the way a torch user
  writes them."""
  x, e, _, ids, _, _ = make_case(1, weights="ones", ignore=True)
  y = ids.reshape(-1)
  for reduction, field in (("mean", "avg_xent"), ("sum", "total_xent"),
                           ("none", "per_example_xent")):
    xg, eg = x.clone().requires_grad_(), e.clone().requires_grad_()
    out = gt.shared_embedding_softmax(xg, eg, None, ids)
    got = out[field].reshape(-1) if reduction == "none" else out[field]
    xr, er = x.clone().requires_grad_(), e.clone().requires_grad_()
    want = F.cross_entropy(F.linear(xr.reshape(-1, M) * M**-0.5, er), y, reduction=reduction)
    assert_close(got, want, 2e-5, 2e-5, reduction)
    cot = torch.randn(got.shape)
    (got * cot).sum().backward()
    (want * cot).sum().backward()
    assert_close(xg.grad, xr.grad, 1e-4, 2e-5, f"{reduction} d_inputs")
    assert_close(eg.grad, er.grad, 1e-4, 2e-5, f"{reduction} d_embedding")


def test_mean_over_the_tokens_not_ignored():
  """The torch front end's `avg_xent` divides by the tokens that are not
  ignored, as `F.cross_entropy` does (issue 24: 16 tokens, 2 ignored, gave
  9.343 against torch's 10.678); Praxis's count of all tokens is an option."""
  g = torch.Generator().manual_seed(24)
  x, e = 4.0 * torch.randn(16, M, generator=g), torch.randn(V, M, generator=g)
  y = torch.randint(0, V, (16,), generator=g)
  y[[3, 11]] = IGNORE
  layer = gt.GShardSharedEmbeddingSoftmax(M, V)
  with torch.no_grad():
    layer.embedding.copy_(e)
  xg, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
  ours = layer(xg, None, class_ids=y)["avg_xent"]
  torch_mean = F.cross_entropy(F.linear(xr * M**-0.5, layer.embedding), y)
  assert_close(ours, torch_mean, 2e-5, 2e-5, "avg_xent")
  ours.backward()
  torch_mean.backward()
  assert_close(xg.grad, xr.grad, 1e-4, 2e-5, "d_inputs")
  praxis = gt.shared_embedding_softmax(x, e, None, y,
                                       use_tgt_labels_size_as_loss_denominator=True)
  assert_close(praxis["avg_xent"], torch_mean.detach() * 14 / 16, 2e-5, 2e-5, "Praxis mean")
  assert float(praxis["avg_xent_weight"]) == 16


def test_all_tokens_ignored_gives_torchs_nan():
  """Every label `ignore_index`: the mean over no tokens is NaN and the
  gradients are zero, as `F.cross_entropy` gives; Praxis's denominator gives 0.
  `z_loss` is a mean over the same tokens."""
  x, e, w, ids, _, _ = make_case(6, weights="random")
  ids = torch.full_like(ids, IGNORE)
  xg, eg = x.clone().requires_grad_(), e.clone().requires_grad_()
  out = gt.shared_embedding_softmax(xg, eg, w, ids, z_loss_weight=0.1, label_smoothing_prob=0.1)
  xr, er = x.clone().requires_grad_(), e.clone().requires_grad_()
  want = F.cross_entropy(F.linear(xr.reshape(-1, M) * M**-0.5, er), ids.reshape(-1),
                         label_smoothing=0.1)
  assert torch.isnan(want) and torch.isnan(out["avg_xent"]) and torch.isnan(out["z_loss"])
  assert float(out["total_xent"]) == 0 and float(out["avg_xent_weight"]) == 0
  (out["avg_xent"] + out["z_loss"]).backward()
  want.backward()
  for got, ref in ((xg.grad, xr.grad), (eg.grad, er.grad)):
    assert torch.equal(ref, torch.zeros_like(ref)) and torch.equal(got, torch.zeros_like(got))
  praxis = gt.shared_embedding_softmax(x, e, w, ids, z_loss_weight=0.1,
                                       use_tgt_labels_size_as_loss_denominator=True)
  assert float(praxis["avg_xent"]) == 0 and float(praxis["z_loss"]) == 0


# --- gt.cross_entropy: F.cross_entropy's arguments ---------------------------------------

def _torch_dense(x, e, target, **kwargs):
  return F.cross_entropy(F.linear(x.reshape(-1, M) * M**-0.5, e),
                         target.reshape(-1, *target.shape[len(BATCH):]), **kwargs)


def _targets(kind, g):
  """Class indices with one batch row all ignored and a few more ignored, or
  class probabilities."""
  if kind == "probabilities":
    return torch.softmax(2.0 * torch.randn(BATCH + (V,), generator=g), -1)
  ids = torch.randint(0, V, BATCH, generator=g)
  ids[0] = IGNORE
  ids[1, 2] = IGNORE
  return ids


XENT_CASES = [(kind, weighted, smoothing, reduction)
              for kind in ("indices", "probabilities")
              for weighted in (False, True)
              for smoothing in (0.0, 0.2)
              for reduction in ("mean", "sum", "none")]


@pytest.mark.parametrize("kind,weighted,smoothing,reduction", XENT_CASES,
                         ids=["-".join(map(str, c)) for c in XENT_CASES])
def test_cross_entropy_matches_torch(kind, weighted, smoothing, reduction):
  """`gt.cross_entropy` against `F.cross_entropy` on the scaled logits and
  `F.linear_cross_entropy` on the scaled inputs (its chunked path where torch
  takes it), values and gradients, a batch row whose targets are all ignored
  included."""
  g = torch.Generator().manual_seed(zlib.crc32(f"{kind}{weighted}{smoothing}{reduction}".encode()))
  x, e = 2.0 * torch.randn(BATCH + (M,), generator=g), torch.randn(V, M, generator=g)
  target = _targets(kind, g)
  kwargs = dict(reduction=reduction, label_smoothing=smoothing)
  if weighted:
    kwargs["weight"] = 2.0 * torch.rand(V, generator=g)
  cot = torch.randn(math.prod(BATCH) if reduction == "none" else (), generator=g)

  def value_and_grads(fn, x, e):
    x, e = x.clone().requires_grad_(), e.clone().requires_grad_()
    loss = fn(x, e)
    (loss.reshape(cot.shape) * cot).sum().backward()
    return loss.detach().reshape(cot.shape), x.grad, e.grad

  ours = value_and_grads(lambda x, e: gt.cross_entropy(x, e, target, **kwargs), x, e)
  flat_target = target.reshape(-1, *target.shape[len(BATCH):])
  references = {"F.cross_entropy": lambda x, e: _torch_dense(x, e, target, **kwargs)}
  for name, options in (("F.linear_cross_entropy", None),
                        ("chunked", torch.nn.LinearCrossEntropyOptions())):
    references[name] = lambda x, e, options=options: F.linear_cross_entropy(
        x.reshape(-1, M) * M**-0.5, e, flat_target, options=options, **kwargs)
  if reduction == "none" and kind == "indices":
    assert torch.all(ours[0].reshape(BATCH)[0] == 0)  # the row whose targets are all ignored
  for name, fn in references.items():
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # the chunked path's fallback notice
      want = value_and_grads(fn, x, e)
    for got, ref, what in zip(ours, want, ("loss", "d_inputs", "d_embedding")):
      assert_close(got, ref, 1e-4, 2e-5, f"{name} {what}")


@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.0), (True, 0.1)])
def test_cross_entropy_all_ignored(weighted, smoothing):
  """Every target ignored: `mean` is NaN with zero gradients, `sum` 0, as torch."""
  x, e, _, ids, _, _ = make_case(7)
  ids = torch.full_like(ids, IGNORE)
  kwargs = dict(label_smoothing=smoothing,
                weight=torch.rand(V) if weighted else None)
  for reduction in ("mean", "sum"):
    xg = x.clone().requires_grad_()
    got = gt.cross_entropy(xg, e, ids, reduction=reduction, **kwargs)
    want = _torch_dense(x, e, ids, reduction=reduction, **kwargs)
    assert torch.isnan(got) if reduction == "mean" else float(got) == 0
    assert torch.isnan(want) == torch.isnan(got)
    got.backward()
    assert torch.equal(xg.grad, torch.zeros_like(xg.grad))


def _check_shared_argument_errors(fn, x, e, target):
  """What `cross_entropy` and `linear_cross_entropy` both refuse, as F.cross_entropy does."""
  with pytest.raises(ValueError, match="reduction"):
    fn(x, e, target, reduction="avg")
  with pytest.raises(ValueError, match="weight must be"):
    fn(x, e, target, weight=torch.ones(V + 1))
  with pytest.raises(ValueError, match="label_smoothing"):
    fn(x, e, target, label_smoothing=1.5)
  with pytest.raises(ValueError, match="in_features"):
    fn(x[..., :3], e, target)


def test_cross_entropy_argument_errors():
  x, e, _, ids, _, _ = make_case(8)
  _check_shared_argument_errors(gt.cross_entropy, x, e, ids)


def test_second_derivative_is_refused_by_name():
  """`backward(create_graph=True)` gives the right first derivative; a second
  backward through it fails with an error naming the op and the alternatives,
  not torch's generic "no autograd formula"."""
  x, e, _, ids, _, _ = make_case(9)
  xg = x.clone().requires_grad_()
  (d_x,) = torch.autograd.grad(gt.cross_entropy(xg, e, ids), xg, create_graph=True)
  xr = x.clone().requires_grad_()
  (want,) = torch.autograd.grad(_torch_dense(xr, e, ids), xr)
  assert_close(d_x, want, 1e-4, 2e-5, "first derivative")
  with pytest.raises(RuntimeError, match=r"(?s)gshard::shared_embedding_softmax has no second "
                     r"derivative.*F\.cross_entropy.*JAX"):
    d_x.square().sum().backward()


def test_no_grad_and_eval_skip_the_gradient():
  """Without autograd the op computes no gradient; label smoothing only trains."""
  layer = gt.GShardSharedEmbeddingSoftmax(M, V, label_smoothing_prob=0.2)
  x, _, _, ids, _, _ = make_case(2)
  with torch.no_grad():
    out = layer(x, None, class_ids=ids)
  assert not out["avg_xent"].requires_grad
  ref = lambda p: F.cross_entropy(F.linear(x.reshape(-1, M) * M**-0.5, layer.embedding),
                                  ids.reshape(-1), label_smoothing=p)
  assert_close(out["avg_xent"], ref(0.2), 2e-5, 2e-5, "train")
  layer.eval()
  with torch.no_grad():
    assert_close(layer(x, None, class_ids=ids)["avg_xent"], ref(0.0), 2e-5, 2e-5, "eval")


def test_layer_parameters_and_lookup():
  torch.manual_seed(0)
  layer = gt.GShardSharedEmbeddingSoftmax(64, 1000)
  p = {k: v.detach() for k, v in layer.named_parameters()}
  assert list(p) == ["embedding"] and p["embedding"].shape == (1000, 64)
  assert abs(float(p["embedding"].mean())) < 0.02 and abs(float(p["embedding"].std()) - 1) < 0.02
  ids = torch.tensor([[0, 999, 1000, -1, 5]])
  rows = layer.emb_lookup(ids)
  assert rows.shape == (1, 5, 64)
  assert torch.equal(rows[0, :2], p["embedding"][[0, 999]])
  assert torch.all(rows[0, 2:4] == 0)  # out of range: zero rows, as Praxis's one-hot
  with pytest.raises(ValueError, match="in_features"):
    gt.GShardSharedEmbeddingSoftmax(0, 10)
  with pytest.raises(ValueError, match="label_smoothing_prob"):
    gt.GShardSharedEmbeddingSoftmax(4, 10, label_smoothing_prob=2.0)


def test_argument_errors():
  x, e, w, ids, probs, _ = make_case(3)
  with pytest.raises(ValueError, match="exactly one"):
    gt.shared_embedding_softmax(x, e, w)
  with pytest.raises(ValueError, match="in_features"):
    gt.shared_embedding_softmax(x[..., :3], e, w, ids)
  with pytest.raises(ValueError, match="class_ids must have shape"):
    gt.shared_embedding_softmax(x, e, w, ids[:1])
  with pytest.raises(TypeError, match="integers"):
    gt.shared_embedding_softmax(x, e, w, ids.float())


def test_views_and_mixed_dtypes():
  """Non-contiguous and offset views, and a bf16 embedding with float32 inputs
  (promoted to float32, the embedding's gradient back in bf16)."""
  x, e, w, ids, _, _ = make_case(5)
  xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # a non-contiguous view of x
  assert not xt.is_contiguous()
  e16 = e.to(torch.bfloat16)
  big = torch.cat([torch.zeros(1, M, dtype=torch.bfloat16), e16])[1:]  # offset 32 bytes
  eg = big.clone().requires_grad_()
  out = gt.shared_embedding_softmax(xt, eg, w, ids, z_loss_weight=0.1)
  ref = dense_fields(x.reshape(-1, M), e16.float(), w.reshape(-1), ids.reshape(-1), None,
                     dict(z_loss_weight=0.1))
  assert out["avg_xent"].dtype == torch.float32
  assert_close(out["avg_xent"], ref["avg_xent"], 2e-5, 2e-5, "avg_xent")
  (out["avg_xent"] + out["z_loss"]).backward()
  assert eg.grad.dtype == torch.bfloat16
  out = gt.shared_embedding_softmax(xt, big, w, ids, z_loss_weight=0.1)
  assert_close(out["z_loss"], ref["z_loss"], 2e-5, 2e-5, "z_loss of an offset view")


# --- a tiny tied-embedding language model ---------------------------------------------

class TinyLM(torch.nn.Module):
  """Embedding lookup, one causal mixing layer, the shared softmax."""

  def __init__(self, vocab, width, dense=False, **options):
    super().__init__()
    self.head = gt.GShardSharedEmbeddingSoftmax(width, vocab, **options)
    self.mix = torch.nn.Linear(width, width)
    self.dense = dense
    self.options = options

  def forward(self, tokens, targets):
    h = self.head.emb_lookup(tokens)
    prev = F.pad(h, (0, 0, 1, 0))[:, :-1]  # the previous token's embedding
    h = h + torch.tanh(self.mix(prev))
    if not self.dense:
      out = self.head(h, None, class_ids=targets)
      return out["avg_xent"] + out["z_loss"]
    logits = F.linear(h.reshape(-1, h.shape[-1]) * h.shape[-1] ** -0.5, self.head.embedding)
    y = targets.reshape(-1)
    z = self.options.get("z_loss_weight", 0.0) * (torch.logsumexp(logits, -1) ** 2).mean()
    return F.cross_entropy(logits, y, reduction="sum") / y.numel() + z


def _train(model, batches, steps):
  opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
  losses = []
  for tokens, targets in batches[:steps]:
    opt.zero_grad()
    loss = model(tokens, targets)
    loss.backward()
    opt.step()
    losses.append(float(loss))
  return losses


def _lm_pair(seed=0, **options):
  torch.manual_seed(seed)
  ours = TinyLM(61, 16, **options)
  dense = TinyLM(61, 16, dense=True, **options)
  dense.load_state_dict(ours.state_dict())
  g = torch.Generator().manual_seed(seed)
  batches = []
  for _ in range(20):
    seq = torch.randint(0, 61, (4, 9), generator=g)
    batches.append((seq[:, :-1], seq[:, 1:]))
  return ours, dense, batches


def test_training_matches_dense_torch():
  """20 AdamW steps: the same losses and parameters as the dense torch model."""
  ours, dense, batches = _lm_pair(z_loss_weight=1e-3)
  got, want = _train(ours, batches, 20), _train(dense, batches, 20)
  np.testing.assert_allclose(got, want, rtol=2e-4)
  assert want[-1] < want[0] - 0.5  # it learns
  for (name, a), b in zip(ours.named_parameters(), dense.parameters()):
    assert_close(a, b, 1e-3, 1e-4, name)


def test_torch_compile_fullgraph():
  """`torch.compile(fullgraph=True)` traces the op without graph breaks (Dynamo,
  the fake kernels, AOTAutograd's joint graph) and trains like eager. The
  backend is aot_eager to keep the test fast; `tools/bench.py --torch` runs
  inductor (`test_bench_torch_quick`)."""
  ours, dense, batches = _lm_pair(seed=1, z_loss_weight=1e-3)
  compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
  got, want = _train(compiled, batches, 4), _train(dense, batches, 4)
  np.testing.assert_allclose(got, want, rtol=2e-4)


# --- options= and precision ---------------------------------------------------------------

@pytest.fixture
def op_configs(monkeypatch):
  """The `Config`s the ops build their JAX steps for, in call order."""
  seen = []
  for name in ("forward_fn", "fused_fn", "vjp_fn"):
    def record(config, original=getattr(_jax_step, name)):
      seen.append(config)
      return original(config)
    monkeypatch.setattr(_jax_step, name, record)
  return seen


def test_options_object_equals_the_keywords():
  """`options=SoftmaxOptions(...)` gives what the keywords give; both at once
  is refused; the object's defaults are its own (Praxis's denominator)."""
  x, e, w, ids, _, _ = make_case(21)
  opts = dict(soft_cap_logits=3.0, z_loss_weight=0.1, label_smoothing_prob=0.1)
  by_keywords = gt.shared_embedding_softmax(x, e, w, ids, **opts)
  by_object = gt.shared_embedding_softmax(
      x, e, w, ids, options=gshard_op.SoftmaxOptions(
          **opts, use_tgt_labels_size_as_loss_denominator=False))
  for name, value in by_keywords.items():
    if value is not None:
      assert torch.equal(by_object[name], value), name
  praxis = gt.shared_embedding_softmax(x, e, w, ids, options=gshard_op.SoftmaxOptions(**opts))
  assert float(praxis["avg_xent_weight"]) == math.prod(BATCH)
  with pytest.raises(ValueError, match=r"options= and the option keywords \['z_loss_weight'\]"):
    gt.shared_embedding_softmax(x, e, w, ids, options=gshard_op.SoftmaxOptions(),
                                z_loss_weight=0.1)
  with pytest.raises(TypeError, match="options must be a gshard_op.SoftmaxOptions"):
    gt.shared_embedding_softmax(x, e, w, ids, options=opts)


def test_every_option_crosses_into_the_op():
  """The ops take the options as one JSON string, so every `SoftmaxOptions`
  field reaches the JAX step, including ones torch has no keyword for: the
  op's fields equal the JAX functional op's with the same options."""
  fields = {f.name: f for f in dataclasses.fields(gshard_op.SoftmaxOptions)}
  changed = dict(soft_cap_logits=3.0, logits_abs_max=2.0, z_loss_weight=0.1,
                 label_smoothing_prob=0.1, use_tgt_labels_size_as_loss_denominator=True,
                 precision="HIGHEST", temperature=2.5, with_entropy=True, logit_scale=0.37)
  changed = {k: v for k, v in changed.items() if k in fields}
  assert set(changed) == set(fields), f"new options to cover here: {set(fields) - set(changed)}"
  options = gshard_op.SoftmaxOptions(**changed)
  assert _jax_step.decode(_jax_step.encode(options), IGNORE, False).options == options
  x, e, w, ids, _, _ = make_case(23)
  got = gt.shared_embedding_softmax(x, e, w, ids, options=options)
  want = gshard_op.shared_embedding_softmax(x.numpy(), e.numpy(), w.numpy(), ids.numpy(),
                                            options=options)
  for name in ("per_example_xent", "total_xent", "avg_xent", "z_loss", "per_example_entropy"):
    np.testing.assert_allclose(got[name].numpy(), np.asarray(want[name]), rtol=1e-5,
                               atol=1e-6, err_msg=name)


@pytest.mark.parametrize("front_end", ["function", "cross_entropy", "layer", "compiled layer"])
def test_precision_reaches_the_jax_step(front_end, op_configs):
  """`precision=` crosses the custom ops' schemas (as a string) into the JAX
  step, whose matmuls then carry it; under torch.compile(fullgraph=True) too,
  with the layer's eval-mode options (no label smoothing)."""
  x, e, w, ids, _, _ = make_case(22)
  x, e = x.requires_grad_(), e.requires_grad_()
  if front_end == "function":
    loss = gt.shared_embedding_softmax(x, e, w, ids, precision="highest")["avg_xent"]
  elif front_end == "cross_entropy":
    loss = gt.cross_entropy(x, e, ids, precision="highest")
  else:
    layer = gt.GShardSharedEmbeddingSoftmax(M, V, precision="highest", label_smoothing_prob=0.1)
    layer.eval()
    with torch.no_grad():
      layer.embedding.copy_(e)
    if front_end == "compiled layer":
      layer = torch.compile(layer, fullgraph=True, backend="aot_eager")
    loss = layer(x, w, ids)["avg_xent"]
  loss.backward()
  assert op_configs, "no JAX step was built"
  assert {c.options.precision for c in op_configs} == {"HIGHEST"}
  if front_end.endswith("layer"):
    assert {c.options.label_smoothing_prob for c in op_configs} == {0.0}
  n = math.prod(BATCH)
  specs = (jax.ShapeDtypeStruct((n, M), jnp.float32), jax.ShapeDtypeStruct((V, M), jnp.float32),
           jax.ShapeDtypeStruct((n,), jnp.int32), None, jax.ShapeDtypeStruct((n,), jnp.float32))
  assert "HIGHEST" in _jax_step.fused_fn(op_configs[0]).lower(*specs).as_text()
  default = dataclasses.replace(op_configs[0], options=dataclasses.replace(
      op_configs[0].options, precision=None))
  assert "HIGHEST" not in _jax_step.fused_fn(default).lower(*specs).as_text()


def test_opcheck():
  """torch.library's own checks of the schema, fake and autograd registrations."""
  x = torch.randn(6, 8, requires_grad=True)
  e = torch.randn(11, 8, requires_grad=True)
  ids = torch.randint(0, 11, (6,), dtype=torch.int32)
  for precision in (None, "highest"):
    options = (_jax_step.encode(gshard_op.SoftmaxOptions(
        z_loss_weight=0.1, label_smoothing_prob=0.1, precision=precision)), IGNORE, True)
    for with_grads in (False, True):
      result = torch.library.opcheck(_ops.softmax_op,
                                     (x, e, ids, None, torch.rand(6), *options, with_grads))
      assert set(result.values()) == {"SUCCESS"}, result


# --- crossing over: DLPack, caching ------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32])
def test_dlpack_is_zero_copy(dtype):
  t = torch.arange(64).reshape(8, 8).to(dtype)
  a = _dlpack.to_jax(t)
  assert a.dtype == jnp.dtype(str(dtype).removeprefix("torch."))
  assert a.unsafe_buffer_pointer() == t.data_ptr()
  b = jnp.ones((4, 4), a.dtype)
  (tb,) = _dlpack.to_torch([b], ())
  assert tb.data_ptr() == b.unsafe_buffer_pointer()
  # A view at an odd offset is copied by JAX (it wants aligned data), not misread.
  view = t.reshape(-1)[1:]
  assert torch.equal(torch.from_dlpack(_dlpack.to_jax(view)), view)
  # An output that would alias an input (JAX forwards returned inputs) is copied.
  (same,) = _dlpack.to_torch([a], (t,))
  assert same.data_ptr() != t.data_ptr() and torch.equal(same, t)


# --- one GPU, two runtimes: JAX's allocator ----------------------------------------

_ALLOCATOR_VARIABLES = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_ALLOCATOR",
                        "XLA_PYTHON_CLIENT_MEM_FRACTION")


def _fresh_import(code_before: str = "", **environ) -> dict:
  """Imports gshard_op.torch in a fresh interpreter, after `code_before`, with
  JAX's allocator variables only as given; returns what it saw."""
  env = {k: v for k, v in os.environ.items() if k not in _ALLOCATOR_VARIABLES}
  env.update(environ)
  code = "\n".join([
      "import json, os, warnings",
      code_before,
      "with warnings.catch_warnings(record=True) as caught:",
      "  warnings.simplefilter('always')",
      "  import gshard_op.torch as gt",
      "print(json.dumps(dict(allocator=gt.JAX_ALLOCATOR,",
      f"    environ={{k: os.environ.get(k) for k in {_ALLOCATOR_VARIABLES!r}}},",
      "    warnings=[str(w.message) for w in caught if w.category is RuntimeWarning])))"])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_allocator_on_demand_when_imported_first():
  """Imported before JAX's backend starts: JAX will allocate on demand."""
  seen = _fresh_import("import jax")  # importing jax does not start its backend
  assert seen["environ"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  assert seen["allocator"] == "set XLA_PYTHON_CLIENT_PREALLOCATE=false"


@pytest.mark.parametrize("name,value", [("XLA_PYTHON_CLIENT_PREALLOCATE", "true"),
                                        ("XLA_PYTHON_CLIENT_ALLOCATOR", "platform"),
                                        ("XLA_PYTHON_CLIENT_MEM_FRACTION", ".5")])
def test_allocator_left_to_the_user(name, value):
  """Any of JAX's allocator variables set by the user: nothing is changed."""
  seen = _fresh_import(**{name: value})
  assert seen["environ"] == {k: value if k == name else None for k in _ALLOCATOR_VARIABLES}
  assert seen["allocator"] == f"left to the user's {name}={value}"


def test_allocator_untouched_after_the_backend_started():
  """JAX's backend already running: its allocator is fixed, so nothing is set,
  and `JAX_ALLOCATOR` says why (a GPU backend would also warn; the CPU's does not)."""
  seen = _fresh_import("import jax; jax.devices()")
  assert seen["environ"] == {k: None for k in _ALLOCATOR_VARIABLES}
  assert seen["allocator"].startswith("unchanged: JAX's backend had already started")
  assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in seen["allocator"]
  assert seen["warnings"] == []


# --- on a GPU (tools/device_check.py runs these) ------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA torch and a GPU")


@pytest.mark.accelerator
@cuda
def test_cuda_follows_torchs_current_stream():
  """Inputs whose last write is still queued on a side stream behind a
  ~0.1 s spin, results read by kernels on it: the op orders itself after the
  first and before the second through DLPack's `stream=` handshake, with no
  synchronize by the caller. A race would read unwritten inputs, far outside
  the tolerance (which allows for TF32 matmuls on the JAX side)."""
  side = torch.cuda.Stream()
  g = torch.Generator(device="cuda").manual_seed(0)
  with torch.cuda.stream(side):
    e = torch.randn(32768, 512, device="cuda", generator=g)
    y = torch.randint(0, 32768, (2048,), device="cuda", generator=g)
    x = torch.zeros(2048, 512, device="cuda")
    torch.cuda._sleep(200_000_000)  # keeps the stream busy well past the op's call
    x.copy_(torch.randn(2048, 512, device="cuda", generator=g))
    ours = gt.cross_entropy(x, e, y, reduction="none") * 2.0
    want = _scaled_dense(x, e, y) * 2.0
  torch.cuda.synchronize()
  torch.testing.assert_close(ours, want, rtol=1e-2, atol=1e-2)


def _scaled_dense(x, e, y):
  return F.cross_entropy(F.linear(x * x.shape[-1] ** -0.5, e), y, reduction="none")


@pytest.mark.accelerator
@cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_tensors_on_another_device():
  """Tensors on cuda:1 while cuda:0 is current: torch exports them, JAX runs
  on their device, and the results come back there."""
  x = torch.randn(64, 32, device="cuda:1", requires_grad=True)
  e = torch.randn(1000, 32, device="cuda:1")
  y = torch.randint(0, 1000, (64,), device="cuda:1")
  loss = gt.cross_entropy(x, e, y)
  loss.backward()
  assert loss.device == x.grad.device == torch.device("cuda:1")
  torch.testing.assert_close(loss, _scaled_dense(x, e, y).mean(), rtol=1e-2, atol=1e-2)


@pytest.mark.accelerator
@cuda
def test_cuda_memory_left_for_torch():
  """In a fresh process that imports gshard_op.torch first, running the op
  leaves most of the GPU free (JAX's default would hold 75% of it)."""
  code = "\n".join([
      "import torch, gshard_op.torch as gt",
      "x = torch.randn(256, 64, device='cuda'); e = torch.randn(1000, 64, device='cuda')",
      "gt.cross_entropy(x, e, torch.randint(0, 1000, (256,), device='cuda'))",
      "free, total = torch.cuda.mem_get_info()",
      "print(free / total)"])
  env = {k: v for k, v in os.environ.items() if k not in _ALLOCATOR_VARIABLES}
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert float(proc.stdout.split()[-1]) > 0.5


@pytest.fixture
def compiles():
  """The XLA compilations that happen while the test runs."""
  events = []

  def listener(event, *_, **__):
    if event == "/jax/core/compile/backend_compile_duration":
      events.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  yield events
  jax.monitoring.unregister_event_duration_listener(listener)


def test_compiled_once_per_shape_and_dtype(compiles):
  x, e, w, ids, _, _ = make_case(4)
  kwargs = dict(soft_cap_logits=3.0)  # options of this test only: nothing cached yet

  def count(*args):
    before = len(compiles)
    gt.shared_embedding_softmax(*args, **kwargs)
    return len(compiles) - before

  assert count(x, e, w, ids) == 1
  assert count(x + 1, e, w, ids) == 0
  assert count(x[:2], e, w[:2], ids[:2]) == 1
  assert count(x.to(torch.bfloat16), e.to(torch.bfloat16), w, ids) == 1


def test_bench_torch_quick(tmp_path):
  """`tools/bench.py --torch --quick`: torch eager, torch.compile (inductor),
  torch's chunked `F.linear_cross_entropy` (eager and compiled) and the op in
  one run, all checked against eager, with times and peak memory; the two
  three-matmul floors are timed and measured, not checked (they compute no loss)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "tools/bench.py", "--torch", "--quick", "--out",
                         str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
  checked = ("torch eager", "torch.compile", "torch chunked", "compile chunked",
             "gshard_op.torch")
  for mode in checked:
    assert re.search(rf"^{re.escape(mode)} +[\d.]+ .* ok$", proc.stdout, re.M), proc.stdout
  for mode in ("torch floor", "jax floor"):
    assert re.search(rf"^{re.escape(mode)} +[\d.]+ .* \(floor\)$", proc.stdout, re.M), proc.stdout
  assert "torch falls back to eager at the chunked op" in proc.stdout
  with open(tmp_path / "bench_torch.json") as f:
    (result,) = json.load(f)["results"]
  assert [row["mode"] for row in result["rows"]] == [*checked, "torch floor", "jax floor"]
  for row in result["rows"]:
    assert row["correct"] is (True if row["checked"] else None), row
    assert row["median_ms"] > 0 and row["peak_rss_bytes"] >= 0, row
    # At the quick shape torch's chunked op (and a floor) can step within the
    # memory the warm-up left resident: a peak of 0 bytes above it is right there.
    if row["mode"] in ("torch eager", "torch.compile", "gshard_op.torch"):
      assert row["peak_rss_bytes"] > 0, row


def test_float_ids_are_refused_under_torch_compile_too():
  """The ids are cast to int32 before the op, so the dtype rule is checked in
  torch's own terms while Dynamo traces (fullgraph: it surfaces the error)."""
  x, e = torch.randn(8, M), torch.randn(V, M)
  compiled = torch.compile(
      lambda x, e, ids: gt.shared_embedding_softmax(x, e, None, class_ids=ids)["avg_xent"],
      fullgraph=True)
  assert torch.isfinite(compiled(x, e, torch.randint(0, V, (8,))))
  with pytest.raises(Exception, match="class_ids must be integers, got torch.float32"):
    compiled(x, e, torch.rand(8) * V)
  with pytest.raises(TypeError, match="class_ids must be integers"):  # eager: the same words
    gt.shared_embedding_softmax(x, e, None, class_ids=torch.rand(8))


# --- gt.cross_entropy with every option of the op ----------------------------------------

# (options, what a torch user writes for them) pairs: the plain tied head with
# Gemma's soft cap and a temperature; a scaled head with a clip and a z-loss;
# Praxis's scale with a z-loss.
OPTION_CASES = {
    "tied-cap-temperature": dict(logit_scale=1.0, soft_cap_logits=3.0, temperature=0.7),
    "scaled-clip-zloss": dict(logit_scale=0.5, logits_abs_max=2.5, z_loss_weight=1e-2),
    "praxis-zloss": dict(z_loss_weight=1e-2),
}


def _dense_with_options(x, e, target, weight, reduction, label_smoothing, *,
                        logit_scale=None, soft_cap_logits=0.0, logits_abs_max=0.0,
                        temperature=1.0, z_loss_weight=0.0):
  """What a torch user writes: the logits, F.cross_entropy, and the z-loss
  (`z_loss_weight * lse**2` per token, weighted and reduced as the loss)."""
  x = x.reshape(-1, M)
  z = F.linear(x * M**-0.5, e) if logit_scale is None else F.linear(x, e) * logit_scale
  if soft_cap_logits:
    z = soft_cap_logits * torch.tanh(z / soft_cap_logits)
  if logits_abs_max:
    z = z.clamp(-logits_abs_max, logits_abs_max)
  z = z / temperature
  target = target.reshape(-1, *target.shape[len(BATCH):])
  loss = F.cross_entropy(z, target, weight=weight, reduction=reduction,
                         label_smoothing=label_smoothing)
  if not z_loss_weight:
    return loss
  if target.is_floating_point():
    token_weight = torch.ones(z.shape[0])
  else:
    counted = target != IGNORE
    token_weight = counted.float() * (1.0 if weight is None
                                      else weight[torch.where(counted, target, 0)])
  z_total = z_loss_weight * (torch.logsumexp(z, -1) ** 2 * token_weight).sum()
  return loss + (z_total if reduction == "sum" else z_total / token_weight.sum())


@pytest.mark.parametrize("case", OPTION_CASES)
@pytest.mark.parametrize("kind,weighted,smoothing,reduction", XENT_CASES,
                         ids=["-".join(map(str, c)) for c in XENT_CASES])
def test_cross_entropy_takes_every_option(case, kind, weighted, smoothing, reduction):
  """`gt.cross_entropy(x, E, y, ...)` with the op's options (keyword-only, torch's
  names for torch's own) equals the dense torch loss, values and gradients."""
  options = OPTION_CASES[case]
  if options.get("z_loss_weight") and reduction == "none":
    with pytest.raises(ValueError, match="z_loss_weight needs reduction='mean' or 'sum'"):
      gt.cross_entropy(torch.randn(2, M), torch.randn(V, M), torch.zeros(2, dtype=torch.long),
                       reduction="none", **options)
    return
  g = torch.Generator().manual_seed(zlib.crc32(f"{case}{kind}{weighted}{smoothing}".encode()))
  x, e = 2.0 * torch.randn(BATCH + (M,), generator=g), torch.randn(V, M, generator=g)
  target = _targets(kind, g)
  weight = 2.0 * torch.rand(V, generator=g) if weighted else None
  call = dict(weight=weight, reduction=reduction, label_smoothing=smoothing)
  if (kind == "indices" and weighted and smoothing
      and (options.get("soft_cap_logits") or options.get("logits_abs_max"))):
    with pytest.raises(NotImplementedError, match="class weights and label smoothing"):
      gt.cross_entropy(x, e, target, **call, **options)
    return
  cot = torch.randn(math.prod(BATCH) if reduction == "none" else (), generator=g)

  def value_and_grads(fn):
    xr, er = x.clone().requires_grad_(), e.clone().requires_grad_()
    loss = fn(xr, er)
    (loss.reshape(cot.shape) * cot).sum().backward()
    return loss.detach().reshape(cot.shape), xr.grad, er.grad

  ours = value_and_grads(lambda x, e: gt.cross_entropy(x, e, target, **call, **options))
  want = value_and_grads(lambda x, e: _dense_with_options(x, e, target, **call, **options))
  for got, ref, what in zip(ours, want, ("loss", "d_inputs", "d_embedding")):
    assert_close(got, ref, 1e-4, 2e-5, what)


def test_cross_entropy_options_under_torch_compile():
  """The options are constants of the graph: a fullgraph compile of a call
  with all of them equals eager, and the options stay keyword-only."""
  x, e, _, ids, _, _ = make_case(11, ignore=True)
  options = dict(logit_scale=1.0, soft_cap_logits=3.0, z_loss_weight=1e-2, temperature=0.9)
  fn = lambda x, e: gt.cross_entropy(x, e, ids, label_smoothing=0.1, **options)
  compiled = torch.compile(fn, fullgraph=True)
  grads = []
  for f in (fn, compiled):
    xr, er = x.clone().requires_grad_(), e.clone().requires_grad_()
    loss = f(xr, er)
    loss.backward()
    grads.append((loss.detach(), xr.grad, er.grad))
  for got, ref in zip(*grads):
    assert_close(got, ref, 1e-5, 1e-6, "compiled")
  with pytest.raises(TypeError):
    gt.cross_entropy(x, e, ids, None, "mean")  # torch's `weight`, `reduction` are keywords


# --- gt.linear_cross_entropy: F.linear_cross_entropy's signature --------------------------

LINEAR_CASES = [(kind, weighted, smoothing, reduction, ignore)
                for kind in ("indices", "probabilities")
                for weighted in (False, True)
                for smoothing in (0.0, 0.2)
                for reduction in ("mean", "sum", "none")
                for ignore in ((None, 3) if kind == "indices" else (None,))]


def _linear_case(name):
  """`x[N, M]`, `E[V, M]` and a generator for the case `name`."""
  g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
  n = math.prod(BATCH)
  return torch.randn(n, M, generator=g), torch.randn(V, M, generator=g), g


@pytest.mark.parametrize("kind,weighted,smoothing,reduction,ignore", LINEAR_CASES,
                         ids=["-".join(map(str, c)) for c in LINEAR_CASES])
def test_linear_cross_entropy_matches_torch(kind, weighted, smoothing, reduction, ignore,
                                            op_configs):
  """`gt.linear_cross_entropy(input, linear_weight, target, ...)` against torch's
  `F.linear_cross_entropy` (its reference path) and `F.cross_entropy(F.linear(
  input, linear_weight), ...)`: the same logits, unscaled, values and
  gradients, with `ignore_index` left to torch's default (-100 for class
  indices) or set to a class id; computed by the op, not densely."""
  x, e, g = _linear_case(f"linear{kind}{weighted}{smoothing}{reduction}{ignore}")
  n = x.shape[0]
  if kind == "probabilities":
    target = torch.softmax(2.0 * torch.randn(n, V, generator=g), -1)
  else:
    target = torch.randint(0, V, (n,), generator=g)
    target[[1, 4, 9]] = IGNORE if ignore is None else ignore
  kwargs = dict(reduction=reduction, label_smoothing=smoothing)
  if weighted:
    kwargs["weight"] = 2.0 * torch.rand(V, generator=g)
  if ignore is not None:
    kwargs["ignore_index"] = ignore
  cot = torch.randn(n if reduction == "none" else (), generator=g)

  def value_and_grads(fn):
    xr, er = x.clone().requires_grad_(), e.clone().requires_grad_()
    loss = fn(xr, er)
    (loss * cot).sum().backward()
    return loss.detach(), xr.grad, er.grad

  ours = value_and_grads(lambda x, e: gt.linear_cross_entropy(x, e, target, **kwargs))
  assert op_configs, "the op did not run"
  assert {c.options.logit_scale for c in op_configs} == {1.0}
  dense_kwargs = dict(kwargs, ignore_index=IGNORE if ignore is None else ignore)
  references = {
      "F.linear_cross_entropy": lambda x, e: F.linear_cross_entropy(x, e, target, **kwargs),
      "F.cross_entropy": lambda x, e: F.cross_entropy(F.linear(x, e), target, **dense_kwargs)}
  rtol, atol, grad_rtol, grad_atol = TOL[torch.float32]
  for name, fn in references.items():
    want = value_and_grads(fn)
    assert ours[0].shape == want[0].shape, name
    for got, ref, what, tol in zip(ours, want, ("loss", "d_input", "d_linear_weight"),
                                   ((rtol, atol), (grad_rtol, grad_atol), (grad_rtol, grad_atol))):
      assert_close(got, ref, *tol, f"{name} {what}")
  if kind == "indices" and reduction == "none":
    assert torch.all(ours[0][[1, 4, 9]] == 0)  # the ignored tokens


def test_linear_cross_entropy_under_torch_compile(op_configs):
  """`torch.compile(fullgraph=True)` traces it without a graph break (the op, no
  dense fallback) and equals eager and torch, with `ignore_index` and label
  smoothing; torch's chunking options are taken and change nothing."""
  x, e, g = _linear_case("linear-compiled")
  target = torch.randint(0, V, (x.shape[0],), generator=g)
  target[:3] = IGNORE
  chunking = torch.nn.LinearCrossEntropyOptions()
  fn = lambda x, e: gt.linear_cross_entropy(x, e, target, label_smoothing=0.1,
                                            options=chunking)
  compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
  reference = lambda x, e: F.cross_entropy(F.linear(x, e), target, label_smoothing=0.1)
  results = []
  for f in (compiled, fn, reference):
    xr, er = x.clone().requires_grad_(), e.clone().requires_grad_()
    loss = f(xr, er)
    loss.backward()
    results.append((loss.detach(), xr.grad, er.grad))
    if f is compiled:
      assert op_configs, "the compiled function did not run the op"
  for other, what in ((results[1], "eager"), (results[2], "torch")):
    for got, ref in zip(results[0], other):
      assert_close(got, ref, 1e-4, 2e-5, f"compiled against {what}")


def test_linear_cross_entropy_argument_errors():
  x, e, g = _linear_case("linear-errors")
  y = torch.randint(0, V, (x.shape[0],), generator=g)
  with pytest.raises(NotImplementedError, match="takes no linear_bias"):
    gt.linear_cross_entropy(x, e, y, linear_bias=torch.zeros(V))
  with pytest.raises(TypeError, match="options must be None or a torch.nn.LinearCrossEntropyOptions"):
    gt.linear_cross_entropy(x, e, y, options=gshard_op.SoftmaxOptions())
  _check_shared_argument_errors(gt.linear_cross_entropy, x, e, y)
  with pytest.raises(TypeError):
    gt.linear_cross_entropy(x, e, y, None, None)  # torch's keywords are keyword-only
  assert list(inspect.signature(gt.linear_cross_entropy).parameters)[:9] == list(
      inspect.signature(F.linear_cross_entropy).parameters)


# --- the layer on an existing embedding -------------------------------------------------

def test_layer_from_an_embedding_shares_its_parameter():
  """`from_embedding(nn.Embedding)` (and `embedding=Parameter`) registers the
  embedding's own Parameter: no second [V, M] weight, one gradient, one
  optimizer state, and the loss is the tied head's, `F.linear(h, E)`."""
  torch.manual_seed(0)

  class Tied(torch.nn.Module):
    def __init__(self, head=None):
      super().__init__()
      self.embed = torch.nn.Embedding(V, M)
      self.mix = torch.nn.Linear(M, M)
      self.head = head or gt.GShardSharedEmbeddingSoftmax.from_embedding(self.embed,
                                                                         z_loss_weight=1e-3)

    def forward(self, ids, labels):
      out = self.head(torch.tanh(self.mix(self.embed(ids))), None, class_ids=labels)
      return out["avg_xent"] + out["z_loss"]

  model = Tied()
  assert model.head.embedding is model.embed.weight
  assert model.head.options.logit_scale == 1.0 and model.head.num_classes == V
  assert len(list(model.parameters())) == 3  # embedding, mix weight and bias
  ids, labels = torch.randint(0, V, (4, 6)), torch.randint(0, V, (4, 6))
  labels[0, :2] = IGNORE

  def dense(model):
    h = torch.tanh(model.mix(model.embed(ids)))
    z = F.linear(h, model.embed.weight).reshape(-1, V)
    keep = labels.reshape(-1) != IGNORE
    return (F.cross_entropy(z, labels.reshape(-1))
            + 1e-3 * (torch.logsumexp(z, -1)[keep] ** 2).mean())

  reference = Tied()
  reference.load_state_dict(model.state_dict())
  for m, fn in ((model, lambda m: m(ids, labels)), (reference, dense),
                (compiled := torch.compile(model, fullgraph=True), lambda m: m(ids, labels))):
    m.zero_grad()
    fn(m).backward()
  grads = lambda m: [p.grad for p in m.parameters()]
  for got, ref in zip(grads(model), grads(reference)):
    assert_close(got, ref, 1e-4, 1e-5, "gradient")
  del compiled

  param = torch.nn.Parameter(torch.randn(V, M))
  layer = gt.GShardSharedEmbeddingSoftmax(M, V, embedding=param)
  assert layer.embedding is param and layer.options.logit_scale is None  # the constructor's default
  assert gt.GShardSharedEmbeddingSoftmax.from_embedding(param).embedding is param
  with pytest.raises(ValueError, match=r"embedding must be \[num_classes=37, in_features=8\]"):
    gt.GShardSharedEmbeddingSoftmax(8, V, embedding=param)
  with pytest.raises(ValueError, match="device= and dtype= make a new embedding"):
    gt.GShardSharedEmbeddingSoftmax(M, V, embedding=param, dtype=torch.float64)
  with pytest.raises(TypeError, match="from_embedding takes an nn.Embedding"):
    gt.GShardSharedEmbeddingSoftmax.from_embedding(torch.nn.Linear(M, V))
