"""The primitive on sharded inputs, on 8 host CPU devices (tests/conftest.py's).

Scenarios (values and gradients of several losses vs the same computation on
unsharded inputs, and vs the float64 NumPy model):
- `auto_vocab`: mesh (8,) "model" with Auto axes, the embedding sharded
  P("model", None) over the vocabulary, where plain `jax.jit` partitions the
  op itself (`gshard_op/partitioning.py`): no all-gather;
- `auto_data_model`: mesh (2, 4) ("data", "model"), Auto axes, tokens (inputs,
  labels, weights) on "data", embedding on "model"; ids and soft labels;
- `explicit_vocab`, `explicit_data_model_*`: the same under Explicit axes
  (`jax.make_mesh`'s default) inside `with jax.set_mesh(mesh):`, where plain
  `jax.jit` lowers the op to per-device loops in a manual computation;
- `explicit_vocab_host_tokens`: Explicit axes, the embedding on the mesh and the
  batch (inputs, labels, weights) passed as host NumPy arrays;
  `explicit_data_model_host_embedding`: the converse.
"""

from __future__ import annotations

import contextlib

import pytest

from conftest import seed_of

DEVICES = 8
OPTIONS = dict(soft_cap_logits=3.0, logits_abs_max=2.5, z_loss_weight=0.1,
               label_smoothing_prob=0.1, use_tgt_labels_size_as_loss_denominator=False,
               temperature=0.7)
# name: (Explicit axes?, 2x4 "data"/"model" mesh (else 8 "model")?, labels, operands
# left as host NumPy arrays instead of being placed on the mesh).
SCENARIOS = {
    "auto_vocab": (False, False, "ids", ()),
    "auto_data_model_ids": (False, True, "ids", ()),
    "auto_data_model_probs": (False, True, "probs", ()),
    "explicit_vocab": (True, False, "ids", ()),
    "explicit_data_model_ids": (True, True, "ids", ()),
    "explicit_data_model_probs": (True, True, "probs", ()),
    # A host batch with an embedding sharded on the mesh, and the converse.
    "explicit_vocab_host_tokens": (True, False, "ids", ("inputs", "weights", "labels", "coeffs")),
    "explicit_data_model_host_embedding": (True, True, "ids", ("embedding",)),
}
OPERANDS = ("inputs", "embedding", "weights", "labels", "coeffs")


def _scenario(name, rng):
  """Runs one scenario; raises AssertionError (or the op's own error) on failure."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  import gshard_op
  import numpy_reference as npref
  from arrays import assert_close, make_arrays
  from conftest import KINK_MARGIN, clip_kink_gap, np_options

  explicit, two_d, labels, host = SCENARIOS[name]
  labels = "probs" if labels == "probs" else "ids_out_of_range"
  case = make_arrays(rng, batch=(4, 6), in_features=16, num_classes=64, labels=labels)
  assert clip_kink_gap(case, np_options(OPTIONS)) > KINK_MARGIN
  coeffs = rng.standard_normal(case.batch).astype(np.float32)
  label_name = "class_ids" if labels != "probs" else "class_probabilities"
  label = case.class_ids if labels != "probs" else case.class_probabilities

  def loss(x, e, w, lab, c):
    out = gshard_op.shared_embedding_softmax(x, e, w, **{label_name: lab}, **OPTIONS)
    total = out.avg_xent + out.z_loss + jnp.sum(c * out.per_example_xent)
    return total, {k: out[k] for k in ("per_example_xent", "per_example_argmax", "z_loss",
                                        "avg_xent", "log_probs")}

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  args = (case.inputs, case.embedding, case.class_weights, label, coeffs)
  (want_value, want_out), (want_dx, want_de) = step(*args)  # unsharded, one device

  shape, axes = ((2, 4), ("data", "model")) if two_d else ((8,), ("model",))
  if explicit:
    mesh = jax.make_mesh(shape, axes)
    assert all(t == AxisType.Explicit for t in mesh.axis_types), mesh.axis_types
  else:
    mesh = jax.make_mesh(shape, axes, axis_types=(AxisType.Auto,) * len(axes))
  tokens = P("data") if two_d else P()
  specs = (P(*tokens, None, None), P("model", None), P(*tokens, None, None),
           P(*tokens, None, "model" if labels == "probs" and two_d else None), P(*tokens, None))
  with jax.set_mesh(mesh) if explicit else contextlib.nullcontext():
    placed = [a if n in host else jax.device_put(a, NamedSharding(mesh, s))
              for n, a, s in zip(OPERANDS, args, specs)]
    (value, out), (d_x, d_e) = step(*placed)
    if explicit and "embedding" not in host:
      # The lowering reads the vocab sharding off the avals: per-device loops in
      # a manual computation, [N]-sized all-reduces, no all-gather.
      lowered = step.lower(*placed)
      assert lowered.as_text().count("sdy.manual_computation") == 2, "not vocab-sharded"
      hlo = lowered.compile().as_text()
      assert "all-gather" not in hlo and "all-reduce" in hlo
    if not explicit:
      # The primitives partition themselves (custom_partitioning): per-device
      # loops and [N]-sized all-reduces, the embedding never gathered.
      hlo = step.lower(*placed).compile().as_text()
      assert "all-gather" not in hlo and "all-reduce" in hlo
    if explicit:  # sharding-in-types: the gradients carry their operands' specs
      if "embedding" not in host:
        assert d_e.sharding.spec == P("model", None), d_e.sharding
      if "inputs" not in host and two_d:
        assert d_x.sharding.spec[:1] == ("data",), d_x.sharding

  close = dict(rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(value, want_value, **close, err_msg="loss vs unsharded")
  for k in want_out:
    if k == "per_example_argmax":
      np.testing.assert_array_equal(out[k], want_out[k], err_msg=k)
    else:
      np.testing.assert_allclose(out[k], want_out[k], **close, err_msg=f"{k} vs unsharded")
  np.testing.assert_allclose(d_x, want_dx, rtol=1e-5, atol=1e-7, err_msg="d_x vs unsharded")
  np.testing.assert_allclose(d_e, want_de, rtol=1e-5, atol=1e-7, err_msg="d_e vs unsharded")

  opts = np_options(OPTIONS)
  ref = npref.forward(case.inputs, case.embedding, case.class_weights, opts=opts,
                      **{label_name: label})
  assert_close(value, ref["avg_xent"] + ref["z_loss"]
               + np.sum(coeffs * ref["per_example_xent"]), np.float32, "loss vs numpy")
  cot = npref.loss_cotangents("avg_xent_plus_z_loss", case.inputs, case.embedding,
                              case.class_weights, opts=opts, **{label_name: label})
  cot["g_xent"] = cot["g_xent"] + coeffs
  ref_dx, ref_de = npref.backward(case.inputs, case.embedding, opts=opts,
                                  **{label_name: label}, **cot)
  assert_close(d_x, ref_dx, np.float32, "d_x vs numpy", kind="grads")
  assert_close(d_e, ref_de, np.float32, "d_e vs numpy", kind="grads")


# --- the tests ----------------------------------------------------------------------------------

def _run(name):
  import numpy as np
  _scenario(name, np.random.default_rng(seed_of("sharded::" + name)))


def test_eight_host_devices(host_devices):
  assert len(host_devices) == DEVICES


@pytest.mark.parametrize("name", [s for s in SCENARIOS if not SCENARIOS[s][0]])
def test_auto_axes(host_devices, name):
  _run(name)


@pytest.mark.parametrize("name", [s for s in SCENARIOS if SCENARIOS[s][0]])
def test_explicit_axes(host_devices, name):
  _run(name)
