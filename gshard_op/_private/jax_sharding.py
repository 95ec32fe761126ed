"""A `jax.sharding.Sharding` made from an XLA `HloSharding`.

Why private: `gshard-run` (`passes/run.py`) compiles a module with
JAX's backend client, which gives the executable's parameter and output
shardings as XLA `HloSharding`s, and must place its inputs (and assemble its
outputs) by them. No public sharding wraps an `HloSharding`;
`jax._src.sharding_impls.GSPMDSharding` does.
"""

from __future__ import annotations


def from_hlo_sharding(devices, hlo_sharding):
  """The sharding of arrays laid out on `devices` (a sequence of devices, in
  the executable's device order) as `hlo_sharding` says."""
  from jax._src.sharding_impls import GSPMDSharding

  return GSPMDSharding(tuple(devices), hlo_sharding)
