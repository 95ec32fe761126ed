"""`SoftmaxOutput`: the layer's result, with attribute and key access.

The dense `[..., V]` fields (`logits`, `log_probs`) are `LazyField`s until
read: building them is a matmul over the whole vocabulary, which a caller of
`avg_xent` alone never asks for (and which, under an Explicit mesh with tokens
and vocab sharded on one axis, JAX cannot even type). Reading a field, the
pytree flattening (returning the output from `jax.jit`, `vmap`, `grad`'s aux)
and `dict(out)` compute it, once.
"""

from __future__ import annotations

import jax

FIELDS = ("logits", "log_probs", "per_example_argmax", "per_example_xent",
          "per_example_weight", "total_xent", "total_weight", "avg_xent",
          "avg_xent_weight", "z_loss")
# Present only when asked for (`with_entropy=True`), after Praxis's fields.
OPTIONAL_FIELDS = ("per_example_entropy",)


class LazyField:
  """A field computed on first read: `compute()` returns it; `shape` and
  `dtype` are known before (for `repr` and for readers that only look)."""

  __slots__ = ("compute", "shape", "dtype")

  def __init__(self, compute, shape, dtype):
    self.compute, self.shape, self.dtype = compute, tuple(shape), dtype


class SoftmaxOutput(dict):
  """A dict of the fields in `FIELDS` (and those of `OPTIONAL_FIELDS` that
  were asked for) that also reads as attributes (Praxis's `NestedMap`):
  `out.avg_xent is out["avg_xent"]`. A pytree."""

  def __init__(self, **fields):
    missing = set(FIELDS) - set(fields)
    unknown = set(fields) - set(FIELDS) - set(OPTIONAL_FIELDS)
    if missing or unknown:
      raise TypeError(f"SoftmaxOutput fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
    super().__init__((name, fields[name]) for name in FIELDS + OPTIONAL_FIELDS
                     if name in fields)

  def __getitem__(self, name):
    value = dict.__getitem__(self, name)
    if isinstance(value, LazyField):
      value = value.compute()
      dict.__setitem__(self, name, value)
    return value

  def get(self, name, default=None):
    return self[name] if name in self else default

  def __iter__(self):
    # Not dict's own iterator: `dict(out)` and `{**out}` then read through
    # `__getitem__` instead of copying an uncomputed field.
    return iter(dict.keys(self))

  def values(self):
    return [self[name] for name in self]

  def items(self):
    return [(name, self[name]) for name in self]

  def __getattr__(self, name):
    try:
      return self[name]
    except KeyError:
      raise AttributeError(f"SoftmaxOutput has no field {name!r}; fields: {tuple(self)}"
                           + (" (per_example_entropy needs with_entropy=True)"
                              if name in OPTIONAL_FIELDS else "")) from None

  def __setattr__(self, name, value):
    raise AttributeError("SoftmaxOutput is read-only")

  def __repr__(self):
    shapes = ", ".join(f"{k}={getattr(v, 'dtype', '')}{list(getattr(v, 'shape', ()))}"
                       for k, v in dict.items(self))
    return f"SoftmaxOutput({shapes})"


jax.tree_util.register_pytree_node(
    SoftmaxOutput,
    lambda out: (tuple(out.values()), tuple(out)),  # computes the lazy fields
    lambda names, leaves: SoftmaxOutput(**dict(zip(names, leaves))))
