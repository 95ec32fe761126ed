"""The JAX primitive: its `stablehlo.composite` contract and its transformations.

(a) the lowered module holds `stablehlo.composite "gshard.shared_embedding_softmax"`
    (and, when a gradient is taken, `..._grad`) with `version = 1`, every option
    and the logit scale in `composite_attributes`, flattened operand types and a
    decomposition function of the same signature;
(b) the compiled program (XLA inlines the decompositions) equals the float64
    NumPy model, values and gradients; `check_grads` agrees in float32 and x64;
(c) vmap over inputs / labels / weights / embedding, and vmap of grad;
(d) jax.checkpoint around the loss;
(e) bfloat16 inputs and embedding against float64 with bf16 tolerances.
Sharded inputs on 8 host devices are in `test_sharded_primitive.py`.

Everything here runs on the composite route (`gshard_op.lowering("composite")`,
what `gshard_op.jit` traces under); the chunked lowering that plain `jax.jit`
gets is checked under the same transformations in `test_lowering.py`.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gshard_op
import numpy_reference as npref
from arrays import OPTION_SETS, assert_close, make_arrays
from conftest import KINK_MARGIN, check_against_numpy, clip_kink_gap, np_options
from gshard_op import contract

FORWARD, GRAD = "gshard.shared_embedding_softmax", "gshard.shared_embedding_softmax_grad"

OPTION_KEYS = ("soft_cap_logits", "logits_abs_max", "z_loss_weight", "label_smoothing_prob",
               "use_tgt_labels_size_as_loss_denominator", "temperature", "with_entropy")


@pytest.fixture(autouse=True)
def composite_route():
  with gshard_op.lowering("composite"):
    yield


def op(case, options, **kw):
  """The functional op on a case's arrays, with `kw` overriding them."""
  args = dict(inputs=case.inputs, embedding=case.embedding, class_weights=case.class_weights,
              class_ids=case.class_ids, class_probabilities=case.class_probabilities)
  args.update(kw)
  return gshard_op.shared_embedding_softmax(**args, **options)


def train_loss(out):
  return out.avg_xent + out.z_loss


# --- (a) the lowered composites --------------------------------------------------------

_COMPOSITE = re.compile(
    r'stablehlo\.composite "(?P<name>[^"]+)" (?P<operands>[^{]*)\{composite_attributes = '
    r'\{(?P<attrs>[^}]*)\}, decomposition = @(?P<decomposition>[\w.$-]+), '
    r'version = (?P<version>-?\d+) : i32\} : \((?P<in_types>[^)]*)\) -> \((?P<out_types>[^)]*)\)')


def parse_composites(text: str) -> list[dict]:
  """Every `stablehlo.composite` of a printed module, its attributes parsed."""
  found = []
  for line in text.splitlines():
    if "stablehlo.composite" not in line:
      continue
    m = _COMPOSITE.search(line)
    assert m, f"unparsed composite: {line.strip()}"
    attrs = {}
    for entry in m["attrs"].split(", "):
      key, value = (s.strip() for s in entry.split(" = ", 1))
      if value in ("true", "false"):
        attrs[key] = value == "true"
      elif value.startswith('"'):
        attrs[key] = value.strip('"')
      else:
        number, kind = value.rsplit(" : ", 1)
        assert kind == "f64", f"{key} is {kind}, not f64"
        attrs[key] = float(number)
    found.append(dict(name=m["name"], version=int(m["version"]), attrs=attrs,
                      decomposition=m["decomposition"],
                      in_types=[t.strip() for t in m["in_types"].split(", ")],
                      out_types=[t.strip() for t in m["out_types"].split(", ")]))
  return found


def decomposition_signature(text: str, symbol: str):
  """`(arg types, result types)` of `func.func private @symbol`."""
  m = re.search(r"func\.func private @" + re.escape(symbol) + r"\((?P<args>[^)]*)\) -> "
                r"(?:\((?P<results>[^)]*)\)|(?P<result>tensor<[^>]*>))", text)
  assert m, f"no decomposition function @{symbol}"
  args = [a.split(": ", 1)[1].strip() for a in m["args"].split(", ")]
  results = m["results"] or m["result"]
  return args, [r.strip() for r in results.split(", ")]


def expected_attributes(options: dict, in_features: int) -> dict:
  flags = ("use_tgt_labels_size_as_loss_denominator", "with_entropy")
  opts = npref.Options(**options)
  want = {k: v if k in flags else float(v) for k, v in opts.__dict__.items()
          if k != "logit_scale"}
  # The scale in force, and whether it multiplies the logits (a logit_scale
  # option) rather than the inputs (None: Praxis's M**-0.5).
  want["logit_scale"] = npref.scale_of(in_features, opts.logit_scale)
  want["scales_logits"] = opts.logit_scale is not None
  return want


def check_composite(c, name, options, in_features, in_types, out_types, text):
  assert c["name"] == name
  assert c["version"] == 5 == contract.VERSION
  attrs = c["attrs"]
  assert set(attrs) == set(OPTION_KEYS) | {"logit_scale", "scales_logits", "precision"}, \
      sorted(attrs)
  # No precision asked for, none configured: DEFAULT, as a dense jnp.dot's.
  assert attrs.pop("precision") == options.get("precision", "DEFAULT")
  for key, value in expected_attributes(options, in_features).items():
    if isinstance(value, bool):
      assert attrs[key] is value, key
    else:
      assert attrs[key] == pytest.approx(value, rel=1e-15, abs=0), key
  assert c["in_types"] == in_types
  assert c["out_types"] == out_types
  assert decomposition_signature(text, c["decomposition"]) == (in_types, out_types)


@pytest.mark.parametrize("labels", ["ids", "probs"])
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
@pytest.mark.parametrize("batch", [(6,), (2, 3, 4)], ids=lambda b: "batch" + str(list(b)))
def test_lowered_composites(batch, option_set, labels, rng):
  options = OPTION_SETS[option_set]
  m, v = 12, 19
  case = make_arrays(rng, batch=batch, in_features=m, num_classes=v, labels=labels)
  n = int(np.prod(batch))

  def loss(x, e):
    return train_loss(op(case, options, inputs=x, embedding=e))

  text = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(
      case.inputs, case.embedding).as_text()
  composites = parse_composites(text)
  assert [c["name"] for c in composites] == [FORWARD, GRAD], text
  label_type = f"tensor<{n}xi32>" if labels == "ids" else f"tensor<{n}x{v}xf32>"
  x_type, e_type = f"tensor<{n}x{m}xf32>", f"tensor<{v}x{m}xf32>"
  tok_f32 = f"tensor<{n}xf32>"
  check_composite(composites[0], FORWARD, options, m, [x_type, e_type, label_type],
                  [tok_f32, f"tensor<{n}xi32>", tok_f32, tok_f32], text)
  check_composite(composites[1], GRAD, options, m,
                  [x_type, e_type, label_type] + [tok_f32] * 4, [x_type, e_type], text)


def test_no_gradient_no_grad_composite(rng):
  case = make_arrays(rng, batch=(4, 5), in_features=8, num_classes=11)
  options = OPTION_SETS["everything"]
  text = jax.jit(lambda x, e: train_loss(op(case, options, inputs=x, embedding=e))).lower(
      case.inputs, case.embedding).as_text()
  assert [c["name"] for c in parse_composites(text)] == [FORWARD]
  # Every field, no gradient: still one forward composite only.
  text = jax.jit(lambda x, e: op(case, options, inputs=x, embedding=e)).lower(
      case.inputs, case.embedding).as_text()
  assert [c["name"] for c in parse_composites(text)] == [FORWARD]
  # A gradient w.r.t. the embedding alone still needs the one grad composite.
  text = jax.jit(jax.grad(lambda e: train_loss(op(case, options, embedding=e)))).lower(
      case.embedding).as_text()
  assert sorted(c["name"] for c in parse_composites(text)) == [FORWARD, GRAD]


def test_reference_implementation_emits_no_composite(rng):
  case = make_arrays(rng, batch=(4,), in_features=8, num_classes=11)
  text = jax.jit(jax.grad(lambda x: op(case, {}, inputs=x, implementation="reference").avg_xent)
                 ).lower(case.inputs).as_text()
  assert "stablehlo.composite" not in text


# --- (b) compiled values and gradients -----------------------------------------------------

@pytest.mark.parametrize("labels", ["ids_out_of_range", "probs"])
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_compiled_value_and_grad(option_set, labels, rng):
  """`jit(value_and_grad)` lowered, compiled (decompositions inlined by XLA: no
  custom call is left) and run, against the float64 model."""
  options = OPTION_SETS[option_set]
  case = make_arrays(rng, batch=(3, 7), in_features=16, num_classes=41, labels=labels)
  assert clip_kink_gap(case, np_options(options)) > KINK_MARGIN
  c = rng.standard_normal(case.batch).astype(np.float32)

  def loss(x, e):
    out = op(case, options, inputs=x, embedding=e)
    return train_loss(out) + jnp.sum(c * out.per_example_xent), out

  lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)).lower(
      case.inputs, case.embedding)
  compiled = lowered.compile()
  assert "custom_call_target=\"gshard" not in compiled.as_text()
  (value, out), (d_x, d_e) = compiled(case.inputs, case.embedding)

  opts = np_options(options)
  want = npref.forward(case.inputs, case.embedding, case.class_weights, opts=opts,
                       **case.labels())
  want_value = want["avg_xent"] + want["z_loss"] + np.sum(c * want["per_example_xent"])
  assert_close(value, want_value, np.float32, "loss")
  for name in ("per_example_xent", "total_xent", "avg_xent", "z_loss", "log_probs"):
    assert_close(out[name], want[name], np.float32, name)
  cot = npref.loss_cotangents("avg_xent_plus_z_loss", case.inputs, case.embedding,
                              case.class_weights, opts=opts, **case.labels())
  cot["g_xent"] = cot["g_xent"] + c
  want_x, want_e = npref.backward(case.inputs, case.embedding, opts=opts, **case.labels(), **cot)
  assert_close(d_x, want_x, np.float32, "d_inputs", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_embedding", kind="grads")


# Central differences of a float32 function are noisy: with step 1e-2 the
# truncation error of the directional derivative is a few 1e-4 (measured), so
# 2e-3 leaves a margin of about 5. The op computes in float32 whatever the input
# dtype (all softmax math is float32, as in Praxis), so x64 inputs do not make the
# function smoother and get the same tolerance.
CHECK_GRADS = dict(order=1, modes=["rev"], eps=1e-2, atol=2e-3, rtol=2e-3)


def _check_grads_case(rng, options, dtype):
  case = make_arrays(rng, batch=(2, 5), in_features=8, num_classes=13, labels="ids",
                     input_std=1.5)
  c = rng.standard_normal(case.batch)
  x, e = jnp.asarray(case.inputs, dtype), jnp.asarray(case.embedding, dtype)
  w, cc = jnp.asarray(case.class_weights, dtype), jnp.asarray(c, dtype)

  def loss(x, e):
    out = gshard_op.shared_embedding_softmax(x, e, w, case.class_ids, **options)
    return train_loss(out) + jnp.sum(cc * out.per_example_xent) + 0.1 * jnp.sum(
        cc[..., None] * out.log_probs)

  check_grads(jax.jit(loss), (x, e), **CHECK_GRADS)


@pytest.mark.parametrize("option_set", ["plain", "everything"])
def test_check_grads_float32(option_set, rng):
  # No clip: a finite difference across the clip's kink is not a derivative.
  options = {k: v for k, v in OPTION_SETS[option_set].items() if k != "logits_abs_max"}
  _check_grads_case(rng, options, jnp.float32)


def test_check_grads_x64(rng):
  """The primitive lowers, runs and differentiates with float64 operands (x64
  enabled locally); its math is float32 inside."""
  options = dict(soft_cap_logits=3.0, z_loss_weight=0.1, label_smoothing_prob=0.1)
  with jax.enable_x64(True):
    _check_grads_case(rng, options, jnp.float64)
    x = jnp.zeros((3, 4), jnp.float64)
    out = gshard_op.shared_embedding_softmax(x, jnp.ones((5, 4), jnp.float64),
                                             jnp.ones((3, 1)), jnp.zeros((3, 1), jnp.int64))
    assert out.per_example_xent.dtype == jnp.float64
    np.testing.assert_allclose(out.per_example_xent, np.log(5), rtol=1e-6)


# --- (c) vmap -------------------------------------------------------------------------------

def _batched_cases(rng, b, batch, in_features, num_classes, labels="ids"):
  cases = [make_arrays(rng, batch=batch, in_features=in_features, num_classes=num_classes,
                       labels=labels) for _ in range(b)]
  stack = lambda name: (None if getattr(cases[0], name) is None
                        else np.stack([getattr(c, name) for c in cases]))
  names = ("inputs", "embedding", "class_weights", "class_ids", "class_probabilities")
  return cases, {n: stack(n) for n in names}


def _fields(out):
  return {k: out[k] for k in ("per_example_xent", "per_example_argmax", "total_xent",
                              "avg_xent", "z_loss", "log_probs")}


VMAP_OPTIONS = OPTION_SETS["everything"]


@pytest.mark.parametrize("batched, labels", [
    ("inputs_labels_weights", "ids"), ("inputs_labels_weights", "probs"), ("labels_only", "ids"),
    ("weights_only", "ids"),  # weights are no operand of the primitive
    ("embedding_only", "probs"), ("everything", "ids")])
def test_vmap_forward(batched, labels, rng):
  """vmap over any subset of the operands equals a Python loop, which equals the
  float64 model; the shared-embedding case folds the batch into the tokens of a
  single composite."""
  b, batch, m, v = 3, (2, 5), 8, 17
  cases, stacked = _batched_cases(rng, b, batch, m, v, labels)
  label_name = "class_ids" if labels == "ids" else "class_probabilities"
  mapped = {"inputs_labels_weights": ("inputs", label_name, "class_weights"),
            "labels_only": (label_name,), "weights_only": ("class_weights",),
            "embedding_only": ("embedding",),
            "everything": ("inputs", "embedding", label_name, "class_weights")}[batched]
  shared = cases[0]
  names = ("inputs", "embedding", "class_weights", label_name)
  args = [stacked[n] if n in mapped else getattr(shared, n) for n in names]
  in_axes = [0 if n in mapped else None for n in names]

  def f(x, e, w, labels):
    return _fields(gshard_op.shared_embedding_softmax(x, e, w, **{label_name: labels},
                                                      **VMAP_OPTIONS))

  fn = jax.jit(jax.vmap(f, in_axes=in_axes))
  got = fn(*args)
  text = fn.lower(*args).as_text()
  forwards = [c for c in parse_composites(text) if c["name"] == FORWARD]
  assert len(forwards) == 1
  if "embedding" in mapped:  # one composite per batch element, in a loop
    assert forwards[0]["in_types"][0] == f"tensor<10x{m}xf32>"
  elif batched == "weights_only":  # weights are no operand: nothing to batch
    assert forwards[0]["in_types"][0] == f"tensor<10x{m}xf32>"
  else:  # the batch folds into the tokens of a single composite
    assert forwards[0]["in_types"][0] == f"tensor<{b * 10}x{m}xf32>"
  opts = np_options(VMAP_OPTIONS)
  jf = jax.jit(f)
  for i in range(b):
    one = [a[i] if ax == 0 else a for a, ax in zip(args, in_axes)]
    loop = jf(*one)
    want = npref.forward(one[0], one[1], one[2], opts=opts, **{label_name: one[3]})
    for name, value in got.items():
      if name == "per_example_argmax":
        np.testing.assert_array_equal(value[i], loop[name], err_msg=name)
        continue
      np.testing.assert_allclose(value[i], loop[name], rtol=1e-6, atol=1e-6, err_msg=name)
      assert_close(value[i], want[name], np.float32, f"vmap[{i}] {name}")


def test_vmap_nonzero_axes_and_nested(rng):
  """in_axes other than 0, and vmap of vmap."""
  m, v = 8, 13
  case = make_arrays(rng, batch=(4, 3, 5), in_features=m, num_classes=v)
  options = VMAP_OPTIONS

  def f(x, w, ids):
    return gshard_op.shared_embedding_softmax(x, case.embedding, w, ids, **options).per_example_xent

  want = npref.forward(case.inputs, case.embedding, case.class_weights, case.class_ids,
                       opts=np_options(options))
  # vmap over axis 1 of [4, 3, 5, M]: per-slice denominators differ from the full
  # problem, but per-token xent does not.
  got = jax.jit(jax.vmap(f, in_axes=(1, 1, 1), out_axes=1))(
      case.inputs, case.class_weights, case.class_ids)
  assert_close(got, want["per_example_xent"], np.float32, "vmap in_axes=1")
  got = jax.jit(jax.vmap(jax.vmap(f)))(case.inputs, case.class_weights, case.class_ids)
  assert_close(got, want["per_example_xent"], np.float32, "vmap of vmap")


@pytest.mark.parametrize("embedding_batched", [False, True], ids=["shared_embedding",
                                                                   "batched_embedding"])
def test_vmap_of_grad_per_example_gradients(embedding_batched, rng):
  """Per-example gradients by vmap of grad equal a Python loop and the float64 model."""
  b, batch, m, v = 3, (2, 4), 8, 19
  cases, stacked = _batched_cases(rng, b, batch, m, v)
  coeffs = rng.standard_normal((b,) + batch).astype(np.float32)

  def loss(x, e, w, ids, c):
    out = gshard_op.shared_embedding_softmax(x, e, w, ids, **VMAP_OPTIONS)
    return train_loss(out) + jnp.sum(c * out.per_example_xent)

  grad = jax.grad(loss, argnums=(0, 1))
  e_axis = 0 if embedding_batched else None
  e_arg = stacked["embedding"] if embedding_batched else cases[0].embedding
  args = (stacked["inputs"], e_arg, stacked["class_weights"], stacked["class_ids"], coeffs)
  d_x, d_e = jax.jit(jax.vmap(grad, in_axes=(0, e_axis, 0, 0, 0)))(*args)
  assert d_x.shape == stacked["inputs"].shape and d_e.shape == (b, v, m)
  opts = np_options(VMAP_OPTIONS)
  jgrad = jax.jit(grad)
  for i in range(b):
    e = e_arg[i] if embedding_batched else e_arg
    loop_x, loop_e = jgrad(stacked["inputs"][i], e, stacked["class_weights"][i],
                           stacked["class_ids"][i], coeffs[i])
    np.testing.assert_allclose(d_x[i], loop_x, rtol=1e-5, atol=1e-7, err_msg=f"d_x[{i}] vs loop")
    np.testing.assert_allclose(d_e[i], loop_e, rtol=1e-5, atol=1e-7, err_msg=f"d_e[{i}] vs loop")
    assert clip_kink_gap(dataclasses.replace(cases[i], embedding=e), opts) > KINK_MARGIN
    cot = npref.loss_cotangents("avg_xent_plus_z_loss", stacked["inputs"][i], e,
                                stacked["class_weights"][i], stacked["class_ids"][i], opts=opts)
    cot["g_xent"] = cot["g_xent"] + coeffs[i]
    want_x, want_e = npref.backward(stacked["inputs"][i], e, stacked["class_ids"][i],
                                    opts=opts, **cot)
    assert_close(d_x[i], want_x, np.float32, f"d_x[{i}]", kind="grads")
    assert_close(d_e[i], want_e, np.float32, f"d_e[{i}]", kind="grads")


# --- (d) remat ------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["default", "nothing_saveable"])
def test_checkpoint(policy, rng):
  case = make_arrays(rng, batch=(3, 4), in_features=8, num_classes=23)
  options = OPTION_SETS["everything"]
  assert clip_kink_gap(case, np_options(options)) > KINK_MARGIN
  pol = None if policy == "default" else getattr(jax.checkpoint_policies, policy)

  def loss(x, e):
    return train_loss(op(case, options, inputs=x, embedding=e))

  plain = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(case.inputs, case.embedding)
  remat = jax.jit(jax.value_and_grad(jax.checkpoint(loss, policy=pol), argnums=(0, 1)))
  value, (d_x, d_e) = remat(case.inputs, case.embedding)
  np.testing.assert_allclose(value, plain[0], rtol=1e-6)
  np.testing.assert_allclose(d_x, plain[1][0], rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(d_e, plain[1][1], rtol=1e-5, atol=1e-8)
  want_x, want_e = npref.loss_grads("avg_xent_plus_z_loss", case.inputs, case.embedding,
                                    case.class_weights, case.class_ids, opts=np_options(options))
  assert_close(d_x, want_x, np.float32, "d_inputs under remat", kind="grads")
  assert_close(d_e, want_e, np.float32, "d_embedding under remat", kind="grads")
  names = [c["name"] for c in parse_composites(
      remat.lower(case.inputs, case.embedding).as_text())]
  assert names.count(GRAD) == 1 and names.count(FORWARD) >= 1


def test_checkpoint_in_scan(rng):
  """A remat'd op inside `lax.scan` over microbatches (a common training loop)."""
  case = make_arrays(rng, batch=(3, 4), in_features=8, num_classes=23)
  options = OPTION_SETS["cap_clip_z"]
  assert clip_kink_gap(case, np_options(options)) > KINK_MARGIN

  def loss(e, xs, ws, ids):
    def body(acc, xwi):
      x, w, i = xwi
      out = gshard_op.shared_embedding_softmax(x, e, w, i, **options)
      return acc + train_loss(out), None
    total, _ = jax.lax.scan(jax.checkpoint(body), jnp.zeros((), jnp.float32), (xs, ws, ids))
    return total

  d_e = jax.jit(jax.grad(loss))(case.embedding, case.inputs, case.class_weights, case.class_ids)
  opts = np_options(options)
  want = sum(npref.loss_grads("avg_xent_plus_z_loss", case.inputs[i], case.embedding,
                              case.class_weights[i], case.class_ids[i], opts=opts)[1]
             for i in range(3))
  assert_close(d_e, want, np.float32, "d_embedding, scan of remat", kind="grads")


# --- (e) bfloat16 -----------------------------------------------------------------------------

@pytest.mark.parametrize("option_set, implementation", [
    ("plain", "composite"), ("everything", "composite"), ("everything", "reference")])
def test_bfloat16(option_set, implementation, rng):
  """bf16 inputs and embedding: every field and gradient against float64 on the
  same (bf16-rounded) values, with bf16 tolerances; outputs are bf16."""
  case = make_arrays(rng, batch=(4, 6), in_features=16, num_classes=37, labels="ids",
                     dtype=jnp.bfloat16)
  out, grads, _ = check_against_numpy(case, OPTION_SETS[option_set], implementation, rng,
                                      losses=("avg_xent_plus_z_loss", "per_token_xent"))
  assert out.logits.dtype == jnp.bfloat16 and out.per_example_xent.dtype == jnp.bfloat16


def test_bfloat16_inputs_float32_embedding(rng):
  """Mixed: bf16 activations with a float32 embedding; d_embedding stays float32."""
  case = make_arrays(rng, batch=(4, 6), in_features=16, num_classes=37, labels="probs")
  case.inputs = case.inputs.astype(jnp.bfloat16)
  options = OPTION_SETS["cap_clip_z"]

  def loss(x, e):
    return train_loss(op(case, options, inputs=x, embedding=e)).astype(jnp.float32)

  d_x, d_e = jax.jit(jax.grad(loss, argnums=(0, 1)))(case.inputs, case.embedding)
  assert d_x.dtype == jnp.bfloat16 and d_e.dtype == jnp.float32
  want_x, want_e = npref.loss_grads("avg_xent_plus_z_loss", case.inputs, case.embedding,
                                    case.class_weights, opts=np_options(options), **case.labels())
  assert_close(d_x, want_x, jnp.bfloat16, "d_inputs", kind="grads")
  assert_close(d_e, want_e, jnp.bfloat16, "d_embedding", kind="grads")
