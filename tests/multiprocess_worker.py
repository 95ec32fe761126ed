"""One process of the two-process JAX job of `test_multiprocess.py`.

    python tests/multiprocess_worker.py COORDINATOR PROCESS_ID NUM_PROCESSES OUT_DIR

Started with `XLA_FLAGS=--xla_force_host_platform_device_count=4`, it joins the
job (`jax.distributed.initialize` with gloo CPU collectives), so 8 devices in
all, and for each mesh of `MESHES` and each route of `ROUTES` runs the
vocab-sharded training step `jax.value_and_grad(loss)` on global arrays
built with `jax.make_array_from_callback`: under `gshard_op.jit` (the default
pipeline, whose gshard-shard-vocab reads Shardy's annotations) and under
plain `jax.jit` (the primitives partition themselves). The loss and the
gradients, gathered with `process_allgather`, go to
`OUT_DIR/process{ID}.npz`, and facts about the run (devices, which mesh axes
span both processes, the rewritten and compiled programs) to
`OUT_DIR/process{ID}.json`. The inputs are drawn from `SEED`, so the parent
computes the same step on one device and compares.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from arrays import make_arrays  # noqa: E402

SEED = 1234
BATCH, M, V = (4, 6), 16, 64
OPTIONS = dict(soft_cap_logits=3.0, z_loss_weight=0.1, label_smoothing_prob=0.1,
               use_tgt_labels_size_as_loss_denominator=False)
# name: (mesh shape, axis names, token axis or None): the embedding is sharded
# over "vocab" in both; in "vocab8" its 8 shards span both processes, in
# "data2_vocab4" the tokens are split across the processes.
MESHES = {
    "vocab8": ((8,), ("vocab",), None),
    "data2_vocab4": ((2, 4), ("data", "vocab"), "data"),
}
ROUTES = ("gshard_op.jit", "jax.jit")


def inputs():
  """`(x, embedding, weights, ids, coeffs)`: the global arrays, as NumPy."""
  rng = np.random.default_rng(SEED)
  case = make_arrays(rng, BATCH, M, V, labels="ids_out_of_range")
  coeffs = rng.standard_normal(BATCH).astype(np.float32)
  return case.inputs, case.embedding, case.class_weights, case.class_ids, coeffs


def step_fn():
  """`value_and_grad` w.r.t. inputs and embedding of `avg_xent + z_loss +
  sum(c * per_example_xent)` (the mean and the per-token cotangent paths)."""
  import jax

  import gshard_op

  def loss(x, e, w, ids, c):
    out = gshard_op.shared_embedding_softmax(x, e, w, ids, **OPTIONS)
    return out.avg_xent + out.z_loss + (c * out.per_example_xent).sum()

  return jax.value_and_grad(loss, argnums=(0, 1))


def main(coordinator: str, process_id: int, num_processes: int, out_dir: str) -> None:
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                             initialization_timeout=120)
  from jax.experimental import multihost_utils
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  import gshard_op

  facts = {"process_index": jax.process_index(), "process_count": jax.process_count(),
           "device_count": jax.device_count(), "local_device_count": jax.local_device_count()}
  arrays = inputs()
  results = {}
  for name, (shape, axes, token_axis) in MESHES.items():
    mesh = jax.make_mesh(shape, axes, axis_types=(AxisType.Auto,) * len(axes))
    owners = np.vectorize(lambda d: d.process_index)(mesh.devices)
    spans = {a: bool(np.any(np.ptp(owners, axis=i) > 0)) for i, a in enumerate(axes)}
    tok = P(token_axis)
    specs = (P(token_axis, None, None), P("vocab", None), P(token_axis, None, None),
             P(token_axis, None, None), tok)
    placed = []
    for a, spec in zip(arrays, specs):
      sharding = NamedSharding(mesh, spec)
      placed.append(jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx]))
    for route in ROUTES:
      step = (gshard_op.jit if route == "gshard_op.jit" else jax.jit)(step_fn())
      lowered = step.lower(*placed)
      text = lowered.as_text()
      hlo = lowered.compile().as_text()
      value, (d_x, d_e) = step(*placed)
      gathered = multihost_utils.process_allgather((value, d_x, d_e), tiled=True)
      for key, g in zip(("loss", "d_x", "d_e"), gathered):
        results[f"{route}/{name}/{key}"] = np.asarray(g)
      facts[f"{route}/{name}"] = {
          "axis_spans_processes": spans,
          "d_e_sharded_over_vocab": d_e.sharding.is_equivalent_to(
              NamedSharding(mesh, P("vocab", None)), 2),
          "composites_left": text.count("stablehlo.composite"),
          "manual_computation": "sdy.manual_computation" in text,
          "custom_partitioning": "CustomSPMDPartitioning" in text,
          "all_gather": "all-gather" in hlo,
          "all_reduce": hlo.count("all-reduce("),
      }
  np.savez(os.path.join(out_dir, f"process{process_id}.npz"), **results)
  with open(os.path.join(out_dir, f"process{process_id}.json"), "w") as f:
    json.dump(facts, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
