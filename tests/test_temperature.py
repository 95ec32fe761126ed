"""Sampling temperature: the logits become `z / T` after the cap and the clip.

Every field follows (cross-entropy, log-probs, z-loss on the tempered
logsumexp; the argmax is unchanged), on every route, against the float64
NumPy model, values and gradients of a loss mixing the per-token and the
mean fields. The 8-device sharded route runs with a temperature in
`test_sharded_primitive.py`; here: plain `jax.jit`, the default pipeline
(fused), chunks under a tiny budget, and the Pallas kernels interpreted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gshard_op
import numpy_reference as npref
from arrays import assert_close, make_arrays
from conftest import KINK_MARGIN, clip_kink_gap, np_options
from gshard_op import contract
from gshard_op.options import MIN_TEMPERATURE, SoftmaxOptions

ROUTES = {
    "plain jax.jit": lambda f: jax.jit(f),
    "default pipeline": lambda f: gshard_op.jit(f),
    "chunk, tiny budget": lambda f: gshard_op.jit(
        f, pipeline="gshard-chunk-softmax{memory-budget-mib=0.0005}"),
    "pallas interpret": lambda f: gshard_op.jit(
        f, pipeline="gshard-pallas{platform=interpret block-tokens=8 block-vocab=16},"
                    "gshard-chunk-softmax"),
}


def _options(temperature):
  return dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1,
              label_smoothing_prob=0.1, temperature=temperature)


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("temperature", [0.6, 2.5])
@pytest.mark.parametrize("labels", ["ids_out_of_range", "probs"])
def test_values_and_gradients_equal_float64(rng, route, temperature, labels):
  options = _options(temperature)
  case = make_arrays(rng, batch=(3, 8), in_features=16, num_classes=40, labels=labels)
  assert clip_kink_gap(case, np_options(options)) > KINK_MARGIN
  coeffs = rng.standard_normal(case.batch).astype(np.float32)
  label = dict(class_ids=case.class_ids) if labels != "probs" else dict(
      class_probabilities=case.class_probabilities)

  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, case.class_weights, **label, **options)
    return (out.avg_xent + out.z_loss + jnp.sum(coeffs * out.per_example_xent),
            (out.per_example_argmax, out.per_example_xent))

  (value, (argmax, xent)), (d_x, d_e) = ROUTES[route](
      jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(case.inputs, case.embedding)

  opts = np_options(options)
  ref = npref.forward(case.inputs, case.embedding, case.class_weights, opts=opts, **label)
  assert_close(xent, ref["per_example_xent"], np.float32, "per_example_xent")
  np.testing.assert_array_equal(argmax, ref["per_example_argmax"])
  assert_close(value, ref["avg_xent"] + ref["z_loss"] + np.sum(coeffs * ref["per_example_xent"]),
               np.float32, "loss")
  cot = npref.loss_cotangents("avg_xent_plus_z_loss", case.inputs, case.embedding,
                              case.class_weights, opts=opts, **label)
  cot["g_xent"] = cot["g_xent"] + coeffs
  want_x, want_e = npref.backward(case.inputs, case.embedding, opts=opts, **label, **cot)
  assert_close(d_x, want_x, np.float32, "d_x", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_e", kind="grads")


def test_temperature_one_is_the_untempered_op(rng):
  case = make_arrays(rng, batch=(8,), in_features=16, num_classes=40)
  out = [gshard_op.shared_embedding_softmax(case.inputs, case.embedding, case.class_weights,
                                            class_ids=case.class_ids, **kw)
         for kw in ({}, {"temperature": 1.0})]
  np.testing.assert_array_equal(out[0].per_example_xent, out[1].per_example_xent)


def test_a_high_temperature_flattens_the_distribution(rng):
  """At T -> inf every class is equally likely: xent -> log V for any id."""
  case = make_arrays(rng, batch=(8,), in_features=16, num_classes=40)
  out = gshard_op.shared_embedding_softmax(case.inputs, case.embedding, np.ones((8, 1)),
                                           class_ids=case.class_ids % 40, temperature=1e6)
  np.testing.assert_allclose(out.per_example_xent, np.log(40.0), rtol=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), 1e-46, True])
def test_bad_temperature_is_refused(bad):
  with pytest.raises((ValueError, TypeError), match="temperature"):
    SoftmaxOptions(temperature=bad)


def test_the_composite_records_the_temperature(rng):
  case = make_arrays(rng, batch=(8,), in_features=16, num_classes=40)
  with gshard_op.lowering("composite"):
    text = jax.jit(lambda x, e: gshard_op.shared_embedding_softmax(
        x, e, case.class_weights, class_ids=case.class_ids, temperature=0.5).avg_xent).lower(
            case.inputs, case.embedding).as_text()
  line = next(l for l in text.splitlines() if "stablehlo.composite" in l)
  assert "temperature = 5.000000e-01 : f64" in line and f"version = {contract.VERSION} : i32" in line, line


# --- temperature near zero (issue 30) ------------------------------------------------------

NEAR_ZERO_ROUTES = {
    "plain jax.jit": lambda f: jax.jit(f),
    "gshard_op.jit": lambda f: gshard_op.jit(f),
    "gshard-inline": lambda f: gshard_op.jit(f, pipeline="gshard-inline"),
    "composite": lambda f: _under_composite_lowering(jax.jit(f)),
    "reference": None,  # implementation="reference" under plain jax.jit
}


def _under_composite_lowering(jitted):
  def run(*args):
    with gshard_op.lowering("composite"):
      return jitted(*args)
  return run


@pytest.mark.parametrize("route", list(NEAR_ZERO_ROUTES))
@pytest.mark.parametrize("temperature", [1e-9, MIN_TEMPERATURE])
def test_temperature_near_zero_equals_float64(rng, route, temperature):
  """The issue's reproducer and the smallest temperature the option accepts:
  `c / T` is `c * (1 / T)` to XLA, recomputed per fusion and contracted into an
  FMA with the subtraction of the max, so the largest class's exponent was a
  rounding error of ~100 (an inf or -inf loss). At the smallest temperature
  the logits are made small (|z| ~ 0.01) so that z / T ~ 1e36 stays finite."""
  scale = 1.0 if temperature >= 1e-20 else 0.1
  x = (scale * rng.standard_normal((8, 4))).astype(np.float32)
  e = (scale * rng.standard_normal((30, 4))).astype(np.float32)
  ids = rng.integers(0, 30, (8,)).astype(np.int32)
  w = np.ones((8, 1), np.float32)
  options = dict(temperature=temperature, soft_cap_logits=3.0)
  implementation = "reference" if route == "reference" else "composite"

  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, w, class_ids=ids,
                                             implementation=implementation, **options)
    return out.avg_xent, out.per_example_xent

  wrap = NEAR_ZERO_ROUTES[route] or jax.jit
  (value, xent), (d_x, d_e) = wrap(jax.value_and_grad(loss, (0, 1), has_aux=True))(x, e)

  opts = np_options(options)
  ref = npref.forward(x, e, w, class_ids=ids, opts=opts)
  assert np.isfinite(ref["avg_xent"]) and ref["avg_xent"] > 1e-3 / temperature  # z / T dominates
  assert_close(value, ref["avg_xent"], np.float32, "avg_xent")
  assert_close(xent, ref["per_example_xent"], np.float32, "per_example_xent")
  cot = npref.loss_cotangents("avg_xent", x, e, w, class_ids=ids, opts=opts)
  want_x, want_e = npref.backward(x, e, class_ids=ids, opts=opts, **cot)
  assert_close(d_x, want_x, np.float32, "d_x", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_e", kind="grads")


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf"), 1e-39, 1e-46])
def test_every_bad_temperature_gets_one_message(bad):
  with pytest.raises(ValueError, match=r"^temperature must be finite and > 0 \(at least "):
    SoftmaxOptions(temperature=bad)
  with pytest.raises(ValueError, match=r"^temperature must be finite and > 0"):
    gshard_op.shared_embedding_softmax(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32),
                                       np.ones((2, 1)), class_ids=np.zeros((2,), np.int32),
                                       temperature=bad)
