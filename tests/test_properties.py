"""Property tests: every route against the float64 NumPy reference, on drawn
shapes, dtypes, options, labels and chunk sizes.

Hypothesis draws N from 0 (an empty batch), V and M from 1 (primes among
them), vocab chunks and token blocks that do not divide them, float32 or
bfloat16 operands, option sets, class ids (some out of range) or soft labels,
and weights. Each example runs the routes of `ROUTES`: the dense reference
and plain `jax.jit` of the op (the primitives' chunked lowering),
`gshard_op.jit`'s default pipeline, and `gshard-chunk-softmax` /
`gshard-fuse-fwd-bwd` with the drawn sizes; `test_shard_route_properties`
runs `gshard-shard-vocab` on an 8-device mesh (tests/conftest.py's devices). Every output field and the gradients of `avg_xent + z_loss +
sum(c * per_example_xent)` are compared with `numpy_reference`.

The number of examples is the hypothesis profile's (`tests/conftest.py`: `ci`
by default, `--hypothesis-profile=thorough` for a long run).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

import numpy_reference as npref
from pass_testing import fast_xla

ROUTES = ("reference", "plain", "default", "chunk", "fuse")
OPTION_SETS = (
    {},
    dict(soft_cap_logits=2.0, z_loss_weight=0.1),
    dict(logits_abs_max=1.5, label_smoothing_prob=0.15),
    dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.05, label_smoothing_prob=0.1,
         use_tgt_labels_size_as_loss_denominator=False),
)
# float32: a few ulps of the magnitude; bfloat16: a few roundings of 2**-9.
TOLERANCES = {"float32": (1e-5, 1e-5, 1e-4, 1e-5), "bfloat16": (1e-2, 1e-2, 1.5e-2, 1.5e-2)}
# A logit this close to the clip bound may fall on either side of it, depending
# on where a route rounds (bfloat16 rounds the scaled inputs or the scaled
# embedding slice): the gradient mask differs there. Such draws are skipped.
KINK_MARGIN = {"float32": 1e-5, "bfloat16": 3e-2}


@st.composite
def problems(draw, vocab=st.sampled_from([1, 2, 3, 5, 7, 11, 16, 24])):
  n = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 13]))
  v = draw(vocab)
  return dict(
      n=n, m=draw(st.sampled_from([1, 2, 3, 5, 8])), v=v,
      dtype=draw(st.sampled_from(["float32", "float32", "bfloat16"])),
      options=draw(st.sampled_from(OPTION_SETS)),
      labels=draw(st.sampled_from(["ids", "ids_out_of_range", "probs"])),
      vocab_chunk=draw(st.integers(1, v + 2)),
      token_chunk=draw(st.integers(0, n + 2)),
      seed=draw(st.integers(0, 2**32 - 1)))


def make_arrays(p: dict) -> dict:
  rng = np.random.default_rng(p["seed"])
  n, m, v = p["n"], p["m"], p["v"]
  dtype = jnp.bfloat16 if p["dtype"] == "bfloat16" else np.float32
  ids, probs = None, None
  if p["labels"] == "probs":
    probs = rng.dirichlet(np.ones(v), n).astype(np.float32) * rng.uniform(0.5, 1.5, (n, 1))
    probs = probs.astype(np.float32)
  else:
    ids = rng.integers(0, v, (n, 1))
    if p["labels"] == "ids_out_of_range" and n:
      ids[rng.uniform(size=n) < 0.4, 0] = rng.choice([-1, v, v + 7, 2**31 - 1])
    ids = ids.astype(np.int32)
  return dict(x=(2.5 * rng.standard_normal((n, m))).astype(dtype),
              e=rng.standard_normal((v, m)).astype(dtype), ids=ids, probs=probs,
              w=rng.uniform(0.0, 2.0, (n, 1)).astype(np.float32),
              c=rng.standard_normal(n).astype(np.float32))


def pipeline_of(route: str, p: dict) -> str | None:
  chunks = f"vocab-chunk={p['vocab_chunk']} token-chunk={p['token_chunk']}"
  return {"chunk": f"gshard-chunk-softmax{{{chunks}}}",
          "fuse": f"gshard-fuse-fwd-bwd{{token-chunk={p['token_chunk']}}},"
                  f"gshard-chunk-softmax{{{chunks}}}",
          "shard": f"gshard-shard-vocab{{{chunks}}},gshard-chunk-softmax"}.get(route)


def step(options: dict, implementation: str):
  """Every output field, and the gradients of the mixed loss w.r.t. x and e."""
  from gshard_op import shared_embedding_softmax

  def outputs(x, e, ids, probs, w):
    return shared_embedding_softmax(x, e, w, ids, probs, implementation=implementation,
                                    **options)

  def loss(x, e, ids, probs, w, c):
    out = outputs(x, e, ids, probs, w)
    return out.avg_xent.astype(jnp.float32) + out.z_loss + jnp.sum(
        c * out.per_example_xent.astype(jnp.float32))

  def run(x, e, ids, probs, w, c):
    return dict(outputs(x, e, ids, probs, w)), jax.grad(loss, (0, 1))(x, e, ids, probs, w, c)

  return run


def run_route(route: str, p: dict, a: dict, put_embedding=None):
  import gshard_op
  args = [a[k] for k in ("x", "e", "ids", "probs", "w", "c")]
  if put_embedding is not None:
    args[1] = put_embedding(args[1])
  if route == "reference":
    fn = jax.jit(step(p["options"], "reference"))
  elif route == "plain":
    fn = jax.jit(step(p["options"], "composite"))
  elif route == "default":
    fn = gshard_op.jit(step(p["options"], "composite"))
  else:
    fn = gshard_op.jit(step(p["options"], "composite"), pipeline=pipeline_of(route, p))
  return jax.tree.map(np.asarray, fn(*args))


def expected(p: dict, a: dict):
  """The NumPy float64 outputs and gradients of the mixed loss."""
  opts = npref.Options(**p["options"])
  labels = dict(class_ids=a["ids"], class_probabilities=a["probs"])
  with np.errstate(divide="ignore", invalid="ignore"):  # N = 0: 0 / 0
    out = npref.forward(a["x"], a["e"], a["w"], opts=opts, **labels)
    w, den = out["per_example_weight"][..., 0], out["avg_xent_weight"]
    g_xent = w / den + npref.as_f64(a["c"])
    g_lse = opts.z_loss_weight * 2.0 * out["logsumexp"] * w / den
    grads = npref.backward(a["x"], a["e"], opts=opts, g_xent=g_xent, g_lse=g_lse, **labels)
    # The size of the logits' cotangent: `dz`'s rounding errors scale with it.
    out["cotangent_scale"] = float(np.max(np.abs(g_xent) + np.abs(g_lse), initial=0.0))
  return out, grads


def assert_close(actual, want, rtol, atol_rel, what, scale=0.0):
  """`|actual - want| <= rtol * |want| + atol_rel * max(scale, max|want|)`."""
  actual, want = npref.as_f64(actual), np.asarray(want, np.float64)
  assert actual.shape == want.shape, f"{what}: shape {actual.shape} != {want.shape}"
  if want.size == 0 or np.all(np.isnan(want)):  # N = 0: empty, or 0 / 0
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(want), err_msg=what)
    return
  scale = max(scale, float(np.max(np.abs(want))))
  np.testing.assert_allclose(actual, want, rtol=rtol, atol=max(atol_rel * scale, 1e-12),
                             err_msg=what)


def check_route(route: str, p: dict, a: dict, want, got) -> None:
  out_want, (dx_want, de_want) = want
  out, (d_x, d_e) = got
  rtol, atol, grad_rtol, grad_atol = TOLERANCES[p["dtype"]]
  what = f"{route} {p}"
  # `z - lse` cancels: its error is a few ulps of the logits, not of itself.
  z_scale = float(np.max(np.abs(out_want["logits"]), initial=0.0))
  weight = float(np.sum(np.abs(out_want["per_example_weight"])))
  scales = dict(log_probs=z_scale, per_example_xent=z_scale, total_xent=z_scale * weight,
                avg_xent=z_scale * weight / max(1.0, float(out_want["avg_xent_weight"])))
  for name in ("logits", "log_probs", "per_example_xent", "per_example_weight", "total_xent",
               "total_weight", "avg_xent", "avg_xent_weight", "z_loss"):
    assert_close(out[name], out_want[name], rtol, atol, f"{what}: {name}",
                 scale=scales.get(name, 0.0))
  # argmax: a maximal logit (float32 near-ties may pick another).
  z = out_want["logits"]
  idx = out["per_example_argmax"]
  assert idx.dtype == np.int32 and idx.shape == z.shape[:-1], what
  if z.size:
    tol = (1e-4 if p["dtype"] == "float32" else 3e-2) * max(1.0, float(np.abs(z).max()))
    picked = z[np.arange(z.shape[0]), idx]
    assert np.all(picked >= z.max(-1) - tol), f"{what}: argmax {idx} of {z}"
  assert d_x.dtype == a["x"].dtype and d_e.dtype == a["e"].dtype, what
  g = out_want["cotangent_scale"] * p["m"] ** -0.5
  g = g if np.isfinite(g) else 0.0
  assert_close(d_x, dx_want, grad_rtol, grad_atol, f"{what}: d_inputs",
               scale=g * float(np.max(np.abs(npref.as_f64(a["e"])), initial=0.0)))
  assert_close(d_e, de_want, grad_rtol, grad_atol, f"{what}: d_embedding",
               scale=g * float(np.max(np.abs(npref.as_f64(a["x"])), initial=0.0)))


def clip_gap(p: dict, a: dict) -> float:
  """The relative distance of the nearest capped logit to the clip bound."""
  opts = npref.Options(**p["options"])
  if not opts.logits_abs_max:
    return np.inf
  capped = npref.capped_logits(npref.raw_logits(a["x"], a["e"]), opts)
  gap = float(np.min(np.abs(np.abs(capped) - opts.logits_abs_max), initial=np.inf))
  return gap / opts.logits_abs_max


@given(problems())
def test_every_route_matches_numpy(p):
  a = make_arrays(p)
  assume(clip_gap(p, a) > KINK_MARGIN[p["dtype"]])
  want = expected(p, a)
  with fast_xla():
    for route in ROUTES:
      check_route(route, p, a, want, run_route(route, p, a))


# --- the shard route, on 8 devices ---------------------------------------------------------------

def _vocab_sharded(e):
  """`e` placed vocab-sharded on a (8,) "model" mesh."""
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  mesh = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,))
  return jax.device_put(e, NamedSharding(mesh, P("model", None)))


@given(problems(vocab=st.sampled_from([8, 16, 24, 40])))
def test_shard_route_properties(host_devices, p):
  """The shard route on a (8,) "model" mesh, V a multiple of 8 so that the pass
  shards (it leaves other V to the chunk pass)."""
  a = make_arrays(p)
  assume(clip_gap(p, a) > KINK_MARGIN[p["dtype"]])
  with fast_xla():
    check_route("shard", p, a, expected(p, a), run_route("shard", p, a, _vocab_sharded))
