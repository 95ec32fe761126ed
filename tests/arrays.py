"""Random layer arguments and the closeness check, one of each for every test.

`make_arrays(rng, batch, in_features, num_classes, labels=..., weights=...,
dtype=...)` draws fresh inputs, embedding, labels (ids or probabilities) and
class weights; `assert_close(actual, expected, dtype, what)` compares with the
tolerance of the dtype (`TOLERANCES`, values or gradients), or with explicit
ones. NumPy only, no jax import: scripts that must set `XLA_FLAGS` before jax
starts (the multi-process worker) import it first.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import numpy_reference as npref


# --- tolerances and the check ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Tolerance:
  value_rtol: float
  value_atol: float  # times max |expected|
  grad_rtol: float
  grad_atol: float  # times max |expected|


TOLERANCES = {
    # Matmuls accumulate in float32 over M <= 32 terms and the softmax math is
    # float32: values agree with float64 to a few ulps of their magnitude.
    "float32": Tolerance(value_rtol=1e-5, value_atol=1e-5, grad_rtol=1e-4, grad_atol=1e-5),
    # bf16 operands: the scaled inputs and the logits' cotangent are rounded to
    # bf16 (8 bits of mantissa: relative rounding error up to 2**-9 = 2e-3)
    # before the matmuls, and outputs are rounded to bf16 again; errors of a few
    # roundings are expected (measured: under 2e-3 of the scale).
    "bfloat16": Tolerance(value_rtol=1e-2, value_atol=1e-2, grad_rtol=1.5e-2, grad_atol=1.5e-2),
}


def dtype_name(dtype) -> str:
  return np.dtype(dtype).name


def assert_close(actual, expected, dtype=None, what: str = "", *, kind: str = "values",
                 rtol: float | None = None, atol_rel: float | None = None,
                 atol_floor: float = 1e-12):
  """`|actual - expected| <= atol + rtol * |expected|` elementwise, with
  `atol = max(atol_rel * max|expected|, atol_floor)`: relative to the scale of
  the expected array, so one tolerance fits tensors of any magnitude.

  The tolerance is `TOLERANCES[dtype]`'s for `kind` ("values" or "grads"), or
  the explicit `rtol` / `atol_rel`. Shapes must match; integer arrays must be
  equal; a non-finite value where a finite one is expected fails.
  """
  if (rtol is None) != (atol_rel is None) or (rtol is None) == (dtype is None):
    raise TypeError("assert_close takes a dtype or both rtol and atol_rel")
  if dtype is not None:
    tol = TOLERANCES[dtype_name(dtype)]
    rtol, atol_rel = {"values": (tol.value_rtol, tol.value_atol),
                      "grads": (tol.grad_rtol, tol.grad_atol)}[kind]
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, (
      f"{what}: shape {actual.shape} != expected {expected.shape}")
  if np.issubdtype(expected.dtype, np.integer):
    np.testing.assert_array_equal(actual, expected, err_msg=what)
    return
  actual, expected = npref.as_f64(actual), npref.as_f64(expected)
  bad = ~np.isfinite(actual) & np.isfinite(expected)
  assert not np.any(bad), f"{what}: non-finite values at {np.argwhere(bad)[:5].tolist()}"
  scale = float(np.max(np.abs(expected))) if expected.size else 0.0
  atol = max(atol_rel * scale, atol_floor)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# --- random arguments ----------------------------------------------------------------------

# Option sets that exercise every transform: none; cap, clip and z-loss; all of
# them with label smoothing and the weight-sum denominator.
OPTION_SETS = {
    "plain": {},
    "cap_clip_z": dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1),
    "everything": dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1,
                       label_smoothing_prob=0.2,
                       use_tgt_labels_size_as_loss_denominator=False),
    # The logits divided by a temperature after the cap and the clip.
    "tempered": dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1,
                     label_smoothing_prob=0.2, temperature=0.7),
}

LABEL_KINDS = ("ids", "ids_flat", "ids_out_of_range", "probs", "probs_unnormalized")
WEIGHT_KINDS = ("ones", "random_with_zeros", "scalar")


@dataclasses.dataclass
class Case:
  """One set of layer arguments (NumPy arrays in their final dtype)."""
  inputs: np.ndarray
  embedding: np.ndarray
  class_weights: np.ndarray
  class_ids: np.ndarray | None
  class_probabilities: np.ndarray | None

  @property
  def batch(self):
    return self.inputs.shape[:-1]

  @property
  def num_classes(self):
    return self.embedding.shape[0]

  def labels(self) -> dict:
    return dict(class_ids=self.class_ids, class_probabilities=self.class_probabilities)


def make_labels(rng, batch, num_classes, kind):
  """`(class_ids, class_probabilities)` of the given kind (`LABEL_KINDS`):
  ids `[..., 1]` (`ids_flat`: `[...]`; `ids_out_of_range`: some ids outside
  `[0, V)`, negative and too large), or probabilities `[..., V]` (normalised,
  or with a random total mass per token)."""
  batch = tuple(batch)
  if kind in ("ids", "ids_flat", "ids_out_of_range"):
    ids = rng.integers(0, num_classes, size=batch).astype(np.int32)
    if kind == "ids_out_of_range":
      flat = ids.reshape(-1)
      bad = [num_classes, -1, num_classes + 5, -num_classes, 2**30]
      n = min(len(bad), max(1, flat.size // 3))
      where = rng.choice(flat.size, size=n, replace=False)
      flat[where] = bad[:n]
      ids = flat.reshape(batch)
    if kind != "ids_flat":
      ids = ids[..., None]
    return ids, None
  logits = 2.0 * rng.standard_normal(batch + (num_classes,))
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  if kind == "probs_unnormalized":
    probs *= rng.uniform(0.3, 2.0, size=batch + (1,))
  elif kind != "probs":
    raise ValueError(kind)
  return None, probs.astype(np.float32)


def make_weights(rng, batch, kind):
  """Class weights `[..., 1]` of the given kind (`WEIGHT_KINDS`); a quarter of
  the random ones are zero, never all of them (the weight denominator)."""
  batch = tuple(batch)
  if kind == "ones":
    return np.ones(batch + (1,), np.float32)
  if kind == "random_with_zeros":
    w = rng.uniform(0.0, 2.0, size=batch + (1,))
    w[rng.uniform(size=w.shape) < 0.25] = 0.0
    w.reshape(-1)[0] = 1.5
    return w.astype(np.float32)
  if kind == "scalar":
    return np.asarray(0.75, np.float32)
  raise ValueError(kind)


def make_arrays(rng, batch=(7,), in_features=16, num_classes=37, *, labels="ids",
                weights="random_with_zeros", dtype=np.float32, input_std=2.5) -> Case:
  """Fresh random layer arguments: inputs `[*batch, M]` (std `input_std`) and a
  std-1 embedding `[V, M]` in `dtype`, labels and weights of the given kinds.
  With the std-1 embedding the raw logits have std `input_std`, large enough
  for soft caps and clips of ~2 to matter."""
  batch = tuple(batch)
  inputs = (input_std * rng.standard_normal(batch + (in_features,))).astype(dtype)
  embedding = rng.standard_normal((num_classes, in_features)).astype(dtype)
  class_ids, class_probabilities = make_labels(rng, batch, num_classes, labels)
  return Case(inputs, embedding, make_weights(rng, batch, weights), class_ids,
              class_probabilities)
