"""`SoftmaxOutput`: the layer's result, with attribute and key access."""

from __future__ import annotations

import jax

FIELDS = ("logits", "log_probs", "per_example_argmax", "per_example_xent",
          "per_example_weight", "total_xent", "total_weight", "avg_xent",
          "avg_xent_weight", "z_loss")
# Present only when asked for (`with_entropy=True`), after Praxis's fields.
OPTIONAL_FIELDS = ("per_example_entropy",)


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
                       for k, v in self.items())
    return f"SoftmaxOutput({shapes})"


jax.tree_util.register_pytree_node(
    SoftmaxOutput,
    lambda out: (tuple(out.values()), tuple(out)),
    lambda names, leaves: SoftmaxOutput(**dict(zip(names, leaves))))
