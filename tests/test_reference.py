"""`gshard_op.shared_embedding_softmax` against the float64 NumPy model.

Both implementations ("composite": the primitive whose composites XLA inlines;
"reference": the dense math under JAX's own autodiff) are checked, field by
field and gradient by gradient, for every option and their combinations, for
id and soft labels, several weightings and leading shapes. The NumPy model's
analytic backward is itself checked against central finite differences.

Out-of-range class ids are part of the tested contract: such a token's target is
all zero (Praxis's `one_hot`), so without label smoothing its cross-entropy is 0
and it contributes no gradient through the cross-entropy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gshard_op
import numpy_reference as npref
from arrays import LABEL_KINDS, assert_close, make_arrays
from conftest import KINK_MARGIN, check_against_numpy, clip_kink_gap, np_options

IMPLEMENTATIONS = ("composite", "reference")

OPTION_SETS = {
    "plain": {},
    "soft_cap": dict(soft_cap_logits=2.0),
    "abs_clip": dict(logits_abs_max=1.5),
    "cap_and_clip": dict(soft_cap_logits=3.0, logits_abs_max=2.0),
    "z_loss": dict(z_loss_weight=0.05),
    "z_loss_cap_clip": dict(soft_cap_logits=4.0, logits_abs_max=3.0, z_loss_weight=0.1),
    "label_smoothing": dict(label_smoothing_prob=0.1),
    "full_smoothing": dict(label_smoothing_prob=1.0),
    "weight_denominator": dict(use_tgt_labels_size_as_loss_denominator=False),
    "everything": dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1,
                       label_smoothing_prob=0.2,
                       use_tgt_labels_size_as_loss_denominator=False),
}


# --- the NumPy model's own backward ---------------------------------------------

@pytest.mark.parametrize("labels", ["ids_out_of_range", "probs_unnormalized"])
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_numpy_backward_matches_finite_differences(option_set, labels, rng):
  """The analytic float64 backward equals central differences of `forward`."""
  opts = np_options(OPTION_SETS[option_set])
  case = make_arrays(rng, batch=(2, 3), in_features=4, num_classes=5, labels=labels,
                     dtype=np.float64, input_std=2.0)
  coeffs = npref.make_coefficients(rng, case.batch, case.num_classes)
  h = 1e-6

  def loss(name, x, e):
    out = npref.forward(x, e, case.class_weights, opts=opts, **case.labels())
    return npref.loss_value(name, out, coeffs)

  def numeric(name, x, e):
    grads = []
    for which in (0, 1):
      base = (x, e)[which]
      g = np.zeros_like(base)
      for i in np.ndindex(base.shape):
        plus, minus = base.copy(), base.copy()
        plus[i] += h
        minus[i] -= h
        args_p = (plus, e) if which == 0 else (x, plus)
        args_m = (minus, e) if which == 0 else (x, minus)
        g[i] = (loss(name, *args_p) - loss(name, *args_m)) / (2 * h)
      grads.append(g)
    return grads

  # No logit may sit on the clip's kink, where the derivative is undefined.
  if opts.logits_abs_max:
    capped = npref.capped_logits(npref.raw_logits(case.inputs, case.embedding), opts)
    assert np.min(np.abs(np.abs(capped) - opts.logits_abs_max)) > 1e-4
  for name in npref.LOSSES:
    want_x, want_e = numeric(name, case.inputs, case.embedding)
    got_x, got_e = npref.loss_grads(name, case.inputs, case.embedding, case.class_weights,
                                    opts=opts, coeffs=coeffs, **case.labels())
    assert_close(got_x, want_x, rtol=1e-6, atol_rel=1e-7, what=f"d{name}/d_inputs")
    assert_close(got_e, want_e, rtol=1e-6, atol_rel=1e-7, what=f"d{name}/d_embedding")


def test_numpy_model_basic_facts():
  """Sanity of the model itself on hand-computable values."""
  v = 4
  x = np.zeros((2, 3))
  e = np.ones((v, 3))
  out = npref.forward(x, e, np.ones((2, 1)), class_ids=np.array([[1], [v]]))
  # Zero logits: log_probs = -log V; the out-of-range id gets xent 0.
  np.testing.assert_allclose(out["log_probs"], -np.log(v))
  np.testing.assert_allclose(out["per_example_xent"], [np.log(v), 0.0])
  np.testing.assert_array_equal(out["per_example_argmax"], [0, 0])
  smoothed = npref.target_probs(x, v, np.array([[1], [v]]), None,
                                npref.Options(label_smoothing_prob=0.4))
  np.testing.assert_allclose(smoothed[0], [0.1, 0.7, 0.1, 0.1])
  np.testing.assert_allclose(smoothed[1], [0.1] * 4)


# --- every option, both implementations -----------------------------------------

# Compiling one case costs about a second, so the matrix is a covering design
# rather than a full product: every option set through the composite with ids,
# those that touch the targets with soft labels too, the cap and the clip alone
# and all options together through the reference implementation (JAX's autodiff
# of the dense math); the leading shapes, the other label kinds and the
# weightings with all options at once.
#
# Soft labels interact with smoothing and the denominator, not with cap, clip or
# z-loss; the reference implementation's own autodiff differs from the
# composite's in the cap and clip derivatives.
PROBS_OPTION_SETS = ("plain", "label_smoothing", "full_smoothing", "weight_denominator",
                     "everything")
REFERENCE_OPTION_SETS = ("soft_cap", "abs_clip", "everything")
PER_OPTION_CASES = [
    pytest.param(option_set, labels, implementation, id=f"{option_set}-{labels}-{implementation}")
    for option_set in OPTION_SETS
    for labels, implementation, wanted in (("ids", "composite", OPTION_SETS),
                                           ("probs", "composite", PROBS_OPTION_SETS),
                                           ("ids", "reference", REFERENCE_OPTION_SETS))
    if option_set in wanted]

# The losses whose gradients the per-option cases check: each cotangent path
# alone (`total_xent` and `avg_xent + z_loss` are linear combinations of these
# and are checked by the smaller cases and in test_primitive.py).
PER_OPTION_LOSSES = ("avg_xent", "z_loss", "per_token_xent", "logits", "log_probs")
# The losses the smaller cases check: per-token xent, the mean and logsumexp
# together, the dense outputs.
SOME_LOSSES = ("avg_xent_plus_z_loss", "per_token_xent", "logits", "log_probs")


@pytest.mark.parametrize("option_set, labels, implementation", PER_OPTION_CASES)
def test_all_fields_and_grads_per_option(option_set, labels, implementation, rng):
  """Every field, and the gradients of a loss on each differentiable output."""
  case = make_arrays(rng, batch=(3, 5), in_features=16, num_classes=37, labels=labels)
  check_against_numpy(case, OPTION_SETS[option_set], implementation, rng,
                      losses=PER_OPTION_LOSSES)


@pytest.mark.parametrize("batch, labels, implementation", [
    ((), "ids", "composite"), ((), "probs", "composite"),
    ((7,), "ids", "composite"), ((7,), "probs", "composite"),
    ((2, 3, 5), "ids", "composite"), ((2, 3, 5), "probs", "composite"),
    ((), "ids", "reference"), ((2, 3, 5), "probs", "reference"),
], ids=lambda v: "batch" + str(list(v)) if isinstance(v, tuple) else str(v))
def test_leading_shapes(batch, labels, implementation, rng):
  """Leading dims of rank 0 to 3: inputs [16], [7,16], [2,3,5,16]."""
  case = make_arrays(rng, batch=batch, in_features=16, num_classes=29, labels=labels)
  check_against_numpy(case, OPTION_SETS["everything"], implementation, rng, losses=SOME_LOSSES)


@pytest.mark.parametrize("labels, implementation", [
    ("ids_flat", "composite"), ("ids_out_of_range", "composite"),
    ("probs_unnormalized", "composite"), ("ids_out_of_range", "reference"),
    ("probs_unnormalized", "reference")])
def test_label_kinds(labels, implementation, rng):
  """Ids `[...]` without the trailing 1, out-of-range ids (with smoothing), soft
  labels whose mass is not 1."""
  assert labels in LABEL_KINDS
  case = make_arrays(rng, batch=(4, 5), in_features=12, num_classes=31, labels=labels)
  check_against_numpy(case, OPTION_SETS["everything"], implementation, rng, losses=SOME_LOSSES)


@pytest.mark.parametrize("weights, denominator, implementation", [
    ("ones", "labels_size", "composite"), ("ones", "weight_sum", "composite"),
    ("random_with_zeros", "labels_size", "composite"),
    ("random_with_zeros", "weight_sum", "composite"), ("scalar", "weight_sum", "composite"),
    ("random_with_zeros", "weight_sum", "reference")])
def test_weights_and_denominators(weights, denominator, implementation, rng):
  """Uniform, non-uniform with zeros and scalar (broadcast) class weights, both
  denominators."""
  case = make_arrays(rng, batch=(4, 6), in_features=8, num_classes=23, weights=weights)
  options = dict(z_loss_weight=0.1, use_tgt_labels_size_as_loss_denominator=(
      denominator == "labels_size"))
  out, _, _ = check_against_numpy(case, options, implementation, rng,
                                  losses=("avg_xent", "total_xent", "z_loss"))
  w = np.broadcast_to(case.class_weights, (4, 6, 1))
  want = w.size if denominator == "labels_size" else w.sum()
  assert float(out.avg_xent_weight) == pytest.approx(float(want), rel=1e-6)


# --- specific behaviours -----------------------------------------------------------

@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_out_of_range_ids_without_smoothing(implementation, rng):
  """Out-of-range ids (>= V or < 0): all-zero target, xent exactly 0, and no
  gradient from the cross-entropy reaches that token's inputs."""
  v = 11
  case = make_arrays(rng, batch=(6,), in_features=8, num_classes=v, labels="ids",
                     weights="ones")
  bad = np.array([1, 3, 4])
  case.class_ids[bad, 0] = [v, -1, 10 * v]
  out, grads, _ = check_against_numpy(case, {"z_loss_weight": 0.0}, implementation, rng,
                                     losses=("avg_xent", "total_xent", "per_token_xent"))
  np.testing.assert_array_equal(np.asarray(out.per_example_xent)[bad], 0.0)
  good = np.setdiff1d(np.arange(6), bad)
  assert np.all(np.asarray(out.per_example_xent)[good] > 0)
  for loss in ("avg_xent", "total_xent", "per_token_xent"):
    d_x, d_e = grads[loss]
    np.testing.assert_array_equal(np.asarray(d_x)[bad], 0.0, err_msg=loss)
    assert np.all(np.any(np.asarray(d_x)[good] != 0, axis=-1)), loss
  # d_embedding is what the valid tokens alone give.
  good_weights = case.class_weights.copy()
  good_weights[bad] = 0.0
  _, want_e = npref.loss_grads("total_xent", case.inputs, case.embedding, good_weights,
                               class_ids=case.class_ids)
  assert_close(grads["total_xent"][1], want_e, np.float32, "d_embedding of valid tokens",
               kind="grads")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_out_of_range_ids_with_smoothing(implementation, rng):
  """With smoothing, an out-of-range id's target is uniform `p / V`."""
  v, p = 13, 0.3
  case = make_arrays(rng, batch=(5,), in_features=8, num_classes=v, labels="ids")
  case.class_ids[2, 0] = v + 1
  out, _, expected = check_against_numpy(case, {"label_smoothing_prob": p}, implementation, rng,
                                         losses=SOME_LOSSES)
  log_probs = expected["log_probs"][2]
  assert float(out.per_example_xent[2]) == pytest.approx(-p / v * log_probs.sum(), rel=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_ties_pick_the_first_class(implementation):
  """Zero inputs give all-equal logits: argmax 0 (first maximum), xent log V."""
  v = 9
  x = jnp.zeros((4, 8))
  e = jnp.asarray(np.random.default_rng(0).standard_normal((v, 8)), jnp.float32)
  out = jax.jit(lambda x, e: gshard_op.shared_embedding_softmax(
      x, e, jnp.ones((4, 1)), jnp.array([[0], [3], [8], [5]]),
      implementation=implementation, soft_cap_logits=1.0, logits_abs_max=0.5))(x, e)
  np.testing.assert_array_equal(out.per_example_argmax, 0)
  np.testing.assert_allclose(out.per_example_xent, np.log(v), rtol=1e-6)
  np.testing.assert_allclose(out.log_probs, -np.log(v), rtol=1e-6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_clipped_logits_have_no_gradient(implementation, rng):
  """Logits saturated by the clip pass no gradient: with a tiny clip every logit
  is clipped, so every gradient is exactly zero."""
  case = make_arrays(rng, batch=(6,), in_features=8, num_classes=15, input_std=5.0)
  raw = npref.raw_logits(case.inputs, case.embedding)
  abs_max = 0.5 * float(np.min(np.abs(raw)))
  _, grads, _ = check_against_numpy(case, {"logits_abs_max": abs_max, "z_loss_weight": 0.1},
                                    implementation, rng, losses=PER_OPTION_LOSSES)
  for name, (d_x, d_e) in grads.items():
    np.testing.assert_array_equal(d_x, 0.0, err_msg=name)
    np.testing.assert_array_equal(d_e, 0.0, err_msg=name)


def test_class_ids_with_and_without_trailing_one(rng):
  case = make_arrays(rng, batch=(3, 4), in_features=8, num_classes=17, labels="ids")
  f = jax.jit(gshard_op.shared_embedding_softmax)
  a = f(case.inputs, case.embedding, case.class_weights, case.class_ids)
  b = f(case.inputs, case.embedding, case.class_weights, case.class_ids[..., 0])
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_soft_labels_get_no_gradient(rng):
  """Class probabilities are targets, not parameters: their gradient is zero."""
  case = make_arrays(rng, batch=(5,), in_features=8, num_classes=7, labels="probs")

  def loss(probs):
    return gshard_op.shared_embedding_softmax(
        case.inputs, case.embedding, case.class_weights,
        class_probabilities=probs, label_smoothing_prob=0.1).avg_xent

  grad = jax.jit(jax.grad(loss))(jnp.asarray(case.class_probabilities))
  np.testing.assert_array_equal(grad, 0.0)


# --- random shapes -------------------------------------------------------------------

@st.composite
def random_problems(draw):
  rank = draw(st.integers(0, 3))
  batch = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
  in_features = draw(st.integers(1, 32))
  num_classes = draw(st.integers(1, 48)) * 2 + 1  # odd V in [3, 97]
  labels = draw(st.sampled_from(("ids", "ids_out_of_range", "probs")))
  options = dict(
      soft_cap_logits=draw(st.sampled_from((0.0, 2.5, 10.0))),
      logits_abs_max=draw(st.sampled_from((0.0, 2.0))),
      z_loss_weight=draw(st.sampled_from((0.0, 1e-3, 0.2))),
      label_smoothing_prob=draw(st.sampled_from((0.0, 0.1))),
      use_tgt_labels_size_as_loss_denominator=draw(st.booleans()))
  seed = draw(st.integers(0, 2**32 - 1))
  return batch, in_features, num_classes, labels, options, seed


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problem=random_problems())
def test_random_shapes(problem):
  batch, in_features, num_classes, labels, options, seed = problem
  rng = np.random.default_rng(seed)
  case = make_arrays(rng, batch=batch, in_features=in_features, num_classes=num_classes,
                     labels=labels)
  assume(clip_kink_gap(case, np_options(options)) > KINK_MARGIN)
  check_against_numpy(case, options, "composite", rng, losses=SOME_LOSSES)
