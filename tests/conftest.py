"""Shared fixtures and helpers: random cases with per-case seeds, tolerances.

Every test draws its data from `rng`, a generator seeded from the test's own node
id, so each parametrized case gets fresh inputs that are nevertheless the same
on every run (a failure reproduces). Tolerances are per dtype (`TOLERANCES`) and
per kind of quantity (values or gradients); the absolute part is relative to the
largest magnitude of the expected array, so it fits tensors of any scale.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
import zlib

import jax

# Eight host CPU devices in this process, so that the multi-device tests (vocab-
# sharded meshes of 8, (2, 4) and (4, 2)) run in it, with their tracebacks and
# `-k`. JAX reads this once, when its CPU backend starts, so it comes before
# anything that could start it (this conftest is the first module pytest imports
# from tests/). Tests that assume one device are unaffected: an unsharded `jax.jit`
# still runs on `jax.devices()[0]` alone.
DEVICES = 8
jax.config.update("jax_num_cpu_devices", DEVICES)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

import gshard_op  # noqa: E402
import numpy_reference as npref  # noqa: E402
from arrays import assert_close  # noqa: E402  (one closeness check: tests/arrays.py)
from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles: `ci` (the default) keeps property tests to a few
# examples, since each compiles several programs, and draws the same ones on
# every run (derandomized: a CI failure reproduces); `pytest
# --hypothesis-profile=thorough` (or HYPOTHESIS_PROFILE=thorough) draws many,
# freshly. Tests that pin `max_examples` in their own `@settings` keep it.
settings.register_profile("ci", max_examples=8, deadline=None, print_blob=True,
                          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=60, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The slow tier, which `make test-fast` (`pytest -m 'not slow'`) leaves out and
# `make test` runs, in three tables:
# - SLOW_FILES: whole files that run other frameworks (Keras, transformers), the
#   tools or the README's blocks end to end, a two-process job, property tests,
#   or the same sharded steps on every mesh;
# - SLOW_TESTS: single tests by function name, all their cases;
# - FAST_CASES: heavily parametrized tests (routes x options x dtypes...) of
#   which the fast tier runs only the cases named (pytest ids: one
#   representative, the one with the most options on), the others being slow.
# A name here that matches no collected test only costs time, with a warning: a
# function whose FAST_CASES name none of its cases keeps all of them fast.
SLOW_FILES = {"test_device_check.py", "test_hf.py", "test_keras.py", "test_multiprocess.py",
              "test_properties.py", "test_readme.py", "test_sharded_primitive.py",
              "test_tools.py"}
# Reasons: [big] big shapes (V = 32768, model widths, N = 4096) or random ones;
# [compiles] many compiles; [process] fresh processes: whole tools, import
# probes, x64 mode; [frameworks] torch.compile, Keras, training loops; [second]
# second checks of paths the fast tier already runs (bfloat16 and vmap
# variants, more options of a pass, of jit, of the torch front end), left out
# for its time: lit runs beside it, and both must fit 3 minutes on 2 cores.
SLOW_TESTS = {
    "test_chunk_pass.py": {"test_random_shapes_and_chunks_match_reference",  # big
                           "test_bfloat16_matches_float32_reference",  # second
                           "test_vmap_under_jit"},  # second
    "test_driver.py": {"test_entry_points_of_installed_distributions",  # process
                       "test_plugin_example_runs_from_any_folder",  # process
                       "test_tools_wrapper_runs_from_anywhere"},  # process
    "test_entropy.py": {"test_keras_layer_returns_the_entropy_and_saves_the_options",  # frameworks
                        "test_keras_fit_with_an_entropy_bonus_follows_the_reference",  # frameworks
                        "test_nnx_jit_training_with_entropy_follows_the_reference",  # frameworks
                        "test_torch_module_entropy_and_temperature_equal_dense_torch",  # frameworks
                        "test_not_asked_for_it_is_absent_and_costs_nothing",  # second
                        "test_nnx_layer_returns_the_entropy", "test_grad_of_our_jit"},  # second
    "test_framework.py": {"test_a_pipeline_imports_only_the_passes_it_names"},  # process
    "test_fuse_pass.py": {"test_bfloat16_operands_match_float32_reference",  # second
                          "test_accumulate_bf16_option",  # second
                          "test_budget_too_small_for_a_block_is_left_to_chunking",  # second
                          "test_linear_log_probs_loss_is_fused_and_right"},  # second
    "test_hardening.py": {
        "test_int64_and_uint64_ids_beyond_int32_are_out_of_range_with_x64_on",  # process
        "test_non_finite_memory_budget_is_a_usage_error_of_gshard_opt",  # process
        "test_cases_are_what_they_claim"},  # cases: checks the test data, not the op
    "test_jit.py": {"test_nnx_jit_trains_in_place_like_nnx_jit",  # frameworks
                    "test_static_argnums", "test_static_argument_given_the_other_way",  # second
                    "test_precision_change_recompiles", "test_nnx_layer_split_under_jit",  # second
                    "test_static_argnames"},  # second
    "test_layering.py": {"test_plain_jit_lowering_imports_no_pass_and_no_kernel",  # process
                         "test_the_math_and_the_ir_package_import_no_pass"},  # process
    "test_lazy_fields.py": {"test_read_under_grad_vmap_and_returned_from_jit"},  # second
    "test_logit_scale.py": {"test_torch_layer_and_reductions_are_float32",  # second
                            "test_torch_values_and_gradients",  # second
                            "test_keras_layer_takes_and_serialises_the_scale"},  # frameworks
    "test_lowering.py": {"test_plain_jax_jit_has_no_logits_tensor",  # big
                         "test_nnx_jit_step_has_no_logits_tensor",  # big
                         "test_nnx_jit_step_loss_curve_equals_reference",  # big
                         "test_forward_mode_and_second_derivatives",  # compiles
                         "test_vmap_and_remat", "test_bfloat16"},  # second
    "test_nested_pipeline.py": {"test_gshard_opt_command_line"},  # process
    "test_nnx.py": {"test_compute_dtype_bfloat16"},  # second
    "test_package.py": {"test_any_module_imports_first",  # process
                        "test_old_top_level_name_is_a_warning_alias",  # process
                        "test_import_gshard_op_is_light"},  # process
    "test_pallas.py": {"test_kernels_at_model_widths_match_float64_reference",  # big
                       "test_tpu_kernels_in_tpu_interpret_mode",  # compiles (Mosaic's interpreter)
                       "test_tpu_kernels_with_feature_blocks_in_tpu_interpret_mode",  # compiles
                       "test_hostile_inputs_give_the_reference_answer",  # second
                       "test_entry_default_blocks_and_backends"},  # compiles (Triton, Mosaic)
    "test_partitioning.py": {"test_persistent_cache_hits_only_with_the_pointer_removed"},  # process
    "test_primitive.py": {"test_check_grads_x64"},  # compiles
    "test_private.py": {"test_jax_backend_started_is_answered_without_starting_it"},  # process
    "test_reference.py": {"test_random_shapes"},  # big
    "test_run.py": {"test_inputs_round_trip_through_npz",  # compiles
                    "test_loose_tolerance_accepts_what_a_tight_one_refuses",  # compiles
                    "test_sharded_rewrite_on_host_devices", "test_tools_wrapper"},  # process
    "test_shard_pass.py": {"test_sharded_temp_memory_beats_xla_partitioning",  # big
                           "test_sharded_temp_memory_is_at_most_a_quarter_of_one_device",  # big
                           "test_sharded_step_matches_reference",  # compiles (each mesh)
                           "test_explicit_axes",  # compiles
                           # second:
                           "test_vocab_and_model_dims_sharded_warn_and_are_right",
                           "test_replicated_operands_are_not_rewritten_by_the_shard_pass"},
    "test_targets.py": {"test_token_blocks_still_sum_embedding_rows_in_float32"},  # second
    "test_tied_embedding.py": {
        "test_keras_layer_on_an_embedding_trains_as_reverse_true",  # frameworks
        "test_nnx_jit_optax_step_equals_the_attend_model",  # frameworks
        "test_nnx_layer_on_an_embed_shares_its_param"},  # second
    "test_torch.py": {"test_bench_torch_quick",  # process
                      "test_layer_from_an_embedding_shares_its_parameter",  # second
                      "test_allocator_on_demand_when_imported_first",  # process
                      "test_allocator_left_to_the_user",  # process
                      "test_allocator_untouched_after_the_backend_started",  # process
                      "test_opcheck",  # compiles (torch.library.opcheck)
                      "test_cross_entropy_options_under_torch_compile",  # frameworks
                      "test_float_ids_are_refused_under_torch_compile_too",  # frameworks
                      "test_linear_cross_entropy_under_torch_compile",  # frameworks
                      "test_torch_compile_fullgraph",  # frameworks
                      "test_training_matches_dense_torch",  # frameworks
                      "test_compiled_once_per_shape_and_dtype",  # second
                      "test_mean_over_the_tokens_not_ignored",  # second
                      "test_all_tokens_ignored_gives_torchs_nan",  # second
                      "test_views_and_mixed_dtypes",  # second
                      "test_every_option_crosses_into_the_op"},  # second
}
FAST_CASES = {
    "test_chunk_pass.py": {"test_every_option_matches_reference": {"default"},
                           "test_every_loss_matches_reference": {"default"},
                           "test_argmax_ties_pick_the_first_index": {
                               "gshard-chunk-softmax{vocab-chunk=5 token-chunk=10}"}},
    "test_entropy.py": {
        "test_values_and_gradients_equal_float64": {"probs-tempered-default pipeline"},
        "test_infinite_logits_give_the_entropy_without_nan": {"default pipeline-mixed"},
        "test_vocab_sharded_on_eight_devices": {"pipeline"}},
    "test_fuse_pass.py": {"test_fused_step_matches_reference": {"default"}},
    "test_hardening.py": {
        # one hostile input on every route
        "test_route_matches_reference": {f"neg_inf_chunk_probs_smoothing-{route}" for route in (
            "plain", "composite", "default", "chunk", "fuse")},
        "test_shard_route_matches_reference": {"neg_inf_chunk_probs_smoothing"}},
    "test_logit_scale.py": {
        "test_every_route_equals_float64": {"float32-0.37-default pipeline"},
        "test_bf16_at_m_128_the_scale_is_not_rounded": {"default pipeline"},
        "test_vocab_sharded": {"auto_gshard_jit-0.37"}},
    "test_lowering.py": {"test_chunked_route_matches_numpy": {"everything-probs"}},
    "test_nnx.py": {"test_vocab_sharded_layer": {"placement", "numpy_model", "gshard_jit"},
                    "test_nnx_jit_and_value_and_grad": {"composite"},
                    "test_emb_lookup_rows": {"(2, 1, 4)"},
                    "test_get_logits": {"batch[2, 3, 4]-soft_cap_logits-logits_abs_max"}},
    "test_pallas.py": {
        "test_kernels_match_float64_reference": {"everything_unnormalized_probs-float32-ragged"},
        "test_entry_values_and_grads_match_the_dense_op": {"logit_scale_ids_entropy"},
        "test_cross_lowering": {"cuda-__gpu$xla.gpu.triton-bfloat16-1000-probs",
                                "tpu-tpu_custom_call-float32-128-ids"}},
    "test_partitioning.py": {"test_scenario": {"vocab_and_model"}},
    "test_precision.py": {"test_values_are_as_close_to_float64_as_dense": {"None"},
                          "test_every_dot_carries_highest": {"config-default pipeline"}},
    "test_primitive.py": {"test_vmap_forward": {"everything-ids"},
                          "test_compiled_value_and_grad": {"everything-probs"},
                          "test_bfloat16": {"everything-composite"},
                          "test_vmap_of_grad_per_example_gradients": {"shared_embedding"},
                          "test_checkpoint": {"default"},
                          "test_check_grads_float32": {"everything"},
                          "test_lowered_composites": {"batch[2, 3, 4]-everything-probs"}},
    "test_reference.py": {
        "test_all_fields_and_grads_per_option": {"everything-ids-composite",
                                                 "everything-probs-composite"},
        "test_numpy_backward_matches_finite_differences": {"everything-ids_out_of_range"},
        "test_leading_shapes": {"batch[2, 3, 5]-probs-composite"},
        "test_weights_and_denominators": {"random_with_zeros-weight_sum-composite"},
        "test_label_kinds": {"ids_out_of_range-composite"},
        "test_clipped_logits_have_no_gradient": {"composite"}},
    "test_targets.py": {"test_bf16_gradient_writes_embedding_rows_in_bf16": {"chunk"}},
    "test_temperature.py": {
        "test_values_and_gradients_equal_float64": {"probs-0.6-default pipeline"},
        "test_temperature_near_zero_equals_float64": {"1e-09-gshard_op.jit"}},
    "test_torch.py": {
        "test_matches_dense_torch": {"cap_clip_z-float32"},
        "test_cross_entropy_matches_torch": {"probabilities-True-0.2-mean"},
        "test_cross_entropy_takes_every_option": {
            "probabilities-True-0.2-mean-tied-cap-temperature"},
        "test_linear_cross_entropy_matches_torch": {"indices-True-0.2-mean-3"},
        "test_precision_reaches_the_jax_step": {"function"}},
}


def pytest_ignore_collect(collection_path, config):
  """Under `-m 'not slow'` (make test-fast) the SLOW_FILES are not even imported
  (Keras, transformers: seconds of the fast tier's start)."""
  if collection_path.name in SLOW_FILES and config.getoption("markexpr") == "not slow":
    return True
  return None


def pytest_collection_modifyitems(config, items):
  cases = {}  # (file, function) -> its items, for FAST_CASES
  seen = set()  # (file, function) of every item
  for item in items:
    name, function = item.path.name, getattr(item, "originalname", None)
    seen.add((name, function))
    if name in SLOW_FILES or function in SLOW_TESTS.get(name, ()):
      item.add_marker(pytest.mark.slow)
    elif function in FAST_CASES.get(name, ()):
      cases.setdefault((name, function), []).append(item)
  for (name, function), group in cases.items():
    fast = FAST_CASES[name][function]
    if not any(item.callspec.id in fast for item in group):
      if len(group) == 1:  # one case asked for by its id
        continue
      _stale(f"no case of {name}::{function} is named {sorted(fast)}; all its cases stay "
             "in the fast tier")
      continue
    for item in group:
      if item.callspec.id not in fast:
        item.add_marker(pytest.mark.slow)
  if not any("::" in arg for arg in config.args):  # whole files: every function collected
    files = {name for name, _ in seen}
    for table in (SLOW_TESTS, FAST_CASES):
      for name in files & set(table):
        for function in sorted(set(table[name]) - {f for n, f in seen if n == name}):
          _stale(f"{name} has no test {function}")


def _stale(what: str) -> None:
  """A name in the tables above that the tests no longer have: costs time, not
  tests (a stale slow name leaves its test in the fast tier)."""
  warnings.warn(f"tests/conftest.py's slow tier: {what}", pytest.PytestConfigWarning)


@pytest.fixture(scope="session")
def host_devices() -> list:
  """The 8 host CPU devices of a multi-device test (meshes of 8, (2, 4), (4, 2)).
  Skips where JAX's default backend is an accelerator: its meshes would be
  built from the accelerator's devices, not these."""
  if jax.default_backend() != "cpu":
    pytest.skip(f"runs on {DEVICES} host CPU devices; the default backend is "
                f"{jax.default_backend()}")
  devices = jax.devices()
  assert len(devices) == DEVICES, f"{len(devices)} devices: jax_num_cpu_devices was not applied"
  return devices


def seed_of(text: str) -> int:
  return zlib.crc32(text.encode())


@pytest.fixture
def rng(request) -> np.random.Generator:
  """A generator seeded from the test's node id: fresh per case, reproducible."""
  return np.random.default_rng(seed_of(request.node.nodeid))


def assert_argmax_ok(actual, logits64, *, tol: float, what: str):
  """`actual` indexes a maximal logit (up to `tol`, for float32 near-ties)."""
  actual = np.asarray(actual)
  flat = logits64.reshape(-1, logits64.shape[-1])
  idx = actual.reshape(-1)
  assert actual.shape == logits64.shape[:-1], f"{what}: shape {actual.shape}"
  assert np.all((idx >= 0) & (idx < flat.shape[-1])), f"{what}: index out of range: {idx}"
  picked = flat[np.arange(flat.shape[0]), idx]
  best = flat.max(axis=-1)
  bad = np.nonzero(picked < best - tol)[0]
  assert bad.size == 0, (f"{what}: tokens {bad.tolist()} picked {idx[bad].tolist()} "
                         f"but argmax is {flat[bad].argmax(-1).tolist()}")


def np_options(options: dict) -> npref.Options:
  return npref.Options(**options)


@functools.lru_cache(maxsize=None)
def _jitted(options_items: tuple, implementation: str, losses: tuple):
  """One jitted function: every output field and the gradients of `losses`."""
  options = dict(options_items)

  def output(x, e, w, ids, probs):
    return gshard_op.shared_embedding_softmax(
        x, e, w, ids, probs, implementation=implementation, **options)

  def loss(name, x, e, w, ids, probs, coeffs):
    return npref.loss_value(name, output(x, e, w, ids, probs), coeffs)

  def run(x, e, w, ids, probs, coeffs):
    grads = {name: jax.grad(functools.partial(loss, name), argnums=(0, 1))(
        x, e, w, ids, probs, coeffs) for name in losses}
    return output(x, e, w, ids, probs), grads

  return jax.jit(run)


def run_op(case, options: dict, implementation: str, coeffs: dict, losses=npref.LOSSES):
  coeffs = {k: jnp.asarray(v, jnp.float32) for k, v in coeffs.items()}
  fn = _jitted(tuple(sorted(options.items())), implementation, tuple(losses))
  out, grads = fn(case.inputs, case.embedding, case.class_weights, case.class_ids,
                  case.class_probabilities, coeffs)
  return jax.device_get(out), jax.device_get(grads)


# A float32 logit within this distance of the clip bound may land on either side
# of it in float32 and float64 (the gradient mask differs there).
KINK_MARGIN = 1e-5


def clip_kink_gap(case, opts: npref.Options) -> float:
  """The distance of the nearest capped logit to the clip bound (inf: no clip)."""
  if not opts.logits_abs_max:
    return float("inf")
  capped = npref.capped_logits(npref.raw_logits(case.inputs, case.embedding), opts)
  return float(np.min(np.abs(np.abs(capped) - opts.logits_abs_max), initial=np.inf))


def check_against_numpy(case, options: dict, implementation: str, rng, *,
                        losses=npref.LOSSES):
  """Every output field and every loss's gradients vs the float64 model."""
  dtype = case.inputs.dtype
  opts = np_options(options)
  if dtype == np.float32:
    assert clip_kink_gap(case, opts) > KINK_MARGIN, (
        "test data: a logit sits on the clip bound, where float32 and float64 may "
        "disagree on the gradient mask; pick other data")
  coeffs = npref.make_coefficients(rng, case.batch, case.num_classes)
  out, grads = run_op(case, options, implementation, coeffs, losses)
  expected = npref.forward(case.inputs, case.embedding, case.class_weights,
                           opts=opts, **case.labels())

  batch, v = case.batch, case.num_classes
  assert isinstance(out, gshard_op.SoftmaxOutput)
  shapes = dict(logits=batch + (v,), log_probs=batch + (v,), per_example_argmax=batch,
                per_example_xent=batch, per_example_weight=batch + (1,), total_xent=(),
                total_weight=(), avg_xent=(), avg_xent_weight=(), z_loss=())
  for name, shape in shapes.items():
    assert out[name].shape == shape, f"{name}: shape {out[name].shape} != {shape}"
  for name in ("logits", "log_probs", "per_example_xent"):
    assert out[name].dtype == dtype, f"{name}: dtype {out[name].dtype} != {dtype}"
  assert out["per_example_argmax"].dtype == np.int32
  for name in ("per_example_weight", "total_xent", "total_weight", "avg_xent", "avg_xent_weight",
               "z_loss"):  # the scalar losses are float32 whatever the inputs' dtype
    assert out[name].dtype == np.float32, f"{name}: dtype {out[name].dtype}"

  for name in ("logits", "log_probs", "per_example_xent", "total_xent", "total_weight",
               "avg_xent", "avg_xent_weight", "z_loss"):
    assert_close(out[name], expected[name], dtype, f"{implementation} {name}")
  np.testing.assert_array_equal(out["per_example_weight"], expected["per_example_weight"],
                                err_msg="per_example_weight")
  if not opts.z_loss_weight:
    assert float(out["z_loss"]) == 0.0
  argmax_tol = 1e-4 * max(1.0, float(np.abs(expected["logits"]).max()))
  if dtype != np.float32:
    argmax_tol = 3e-2 * max(1.0, float(np.abs(expected["logits"]).max()))
  assert_argmax_ok(out["per_example_argmax"], expected["logits"], tol=argmax_tol,
                   what=f"{implementation} per_example_argmax")

  for name in losses:
    want_x, want_e = npref.loss_grads(name, case.inputs, case.embedding, case.class_weights,
                                      opts=opts, coeffs=coeffs, **case.labels())
    got_x, got_e = grads[name]
    assert got_x.dtype == case.inputs.dtype and got_e.dtype == case.embedding.dtype
    assert_close(got_x, want_x, dtype, f"{implementation} d{name}/d_inputs", kind="grads")
    assert_close(got_e, want_e, dtype, f"{implementation} d{name}/d_embedding", kind="grads")
  return out, grads, expected


# --- no keras.json left in HOME (issue 30) -----------------------------------------------

def _keras_json() -> str:
  return os.path.join(os.path.expanduser("~"), ".keras", "keras.json")


def pytest_sessionstart(session):
  session.config._keras_json_before = os.path.exists(_keras_json())


def pytest_sessionfinish(session, exitstatus):
  """The suite fails when it leaves a keras.json naming tensorflow in a HOME that
  had none: something imported Keras on its default backend (run `make test`
  with an empty HOME to see it)."""
  path = _keras_json()
  if getattr(session.config, "_keras_json_before", True) or not os.path.exists(path):
    return
  with open(path) as f:
    if "tensorflow" in f.read():
      sys.stderr.write(f"\nthe test session left {path} naming tensorflow in a HOME that had "
                       "none: a test imported Keras without gshard_op.keras or a HOME of its "
                       "own\n")
      session.exitstatus = pytest.ExitCode.TESTS_FAILED
