"""The nn.Module: `GShardSharedEmbeddingSoftmax`, Praxis's layer for PyTorch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gshard_op.functional import check_shared_embedding
from gshard_op.options import (SoftmaxOptions, layer_options, option_arguments,
                               tied_head_keywords)
from gshard_op.torch._functional import TORCH_DEFAULTS, layer_call_options, softmax


class GShardSharedEmbeddingSoftmax(nn.Module):
  """One `[num_classes, in_features]` embedding for the token lookup and the
  output softmax (Praxis's `GShardSharedEmbeddingSoftmax`), for PyTorch.

  `embedding` is an `nn.Parameter`, initialised N(0, 1), or one the model
  has already (`embedding=`, or `from_embedding(nn.Embedding)`: the
  Parameter itself, shared, as a tied LM head shares it). Label smoothing
  applies in training mode only (`.eval()` turns it off). The options are
  Praxis's, with one default changed for torch users:
  `use_tgt_labels_size_as_loss_denominator=False`, so that `avg_xent` is
  `F.cross_entropy`'s mean over the tokens that are not ignored. `precision`
  is that of the op's matmuls (`jax.lax.Precision`'s names; None follows JAX's
  `jax_default_matmul_precision`). `options=SoftmaxOptions(...)` gives them
  all at once instead of the keywords (not both).

  Example::

    layer = GShardSharedEmbeddingSoftmax(512, 32000, z_loss_weight=1e-4)
    x = layer.emb_lookup(ids)                        # [B, T, 512]
    out = layer(x, None, class_ids=labels)           # ignore_index=-100
    (out["avg_xent"] + out["z_loss"]).backward()

  On a model's own embedding (no second `[V, M]` weight)::

    head = GShardSharedEmbeddingSoftmax.from_embedding(model.embed_tokens)
    out = head(hidden, None, class_ids=labels)   # logit_scale=1.0: hidden @ E.T
  """

  def __init__(self, in_features: int, num_classes: int, *, soft_cap_logits: float = 0.0,
               logits_abs_max: float = 0.0, z_loss_weight: float = 0.0,
               label_smoothing_prob: float = 0.0,
               use_tgt_labels_size_as_loss_denominator: bool = False,
               precision: str | None = None, temperature: float = 1.0,
               with_entropy: bool = False, logit_scale: float | None = None,
               options: SoftmaxOptions | None = None, ignore_index: int = -100,
               return_logits: bool = False, embedding: Tensor | None = None,
               device=None, dtype=None):
    super().__init__()
    # Checks the sizes and options now rather than at the first call.
    self.options = layer_options(in_features, num_classes, options, TORCH_DEFAULTS,
                                 **option_arguments(locals()))
    self.in_features = in_features
    self.num_classes = num_classes
    self.ignore_index = ignore_index
    self.return_logits = return_logits
    if embedding is None:
      self.embedding = nn.Parameter(
          torch.empty((num_classes, in_features), device=device, dtype=dtype))
      self.reset_parameters()
      return
    if device is not None or dtype is not None:
      raise ValueError("device= and dtype= make a new embedding; with embedding= the layer "
                       "uses that tensor as it is (move or cast it first)")
    check_shared_embedding("embedding", embedding, Tensor, "a torch.Tensor or nn.Parameter",
                           num_classes, in_features)
    # An nn.Parameter is registered as it is: the same object in both modules,
    # so one optimizer state and one gradient (as nn.Embedding's `_weight`).
    self.embedding = (embedding if isinstance(embedding, nn.Parameter)
                      else nn.Parameter(embedding))

  @classmethod
  def from_embedding(cls, embedding: nn.Embedding | Tensor, *,
                     logit_scale: float | None = 1.0,
                     **kwargs) -> "GShardSharedEmbeddingSoftmax":
    """The layer on an existing `nn.Embedding` (its `weight`) or `[V, M]`
    `nn.Parameter`, shared, not copied: the sizes come from it, and
    `state_dict` lists it under both modules, as a tied LM head does.

    `logit_scale` defaults to 1.0 here: the logits are `F.linear(x,
    embedding.weight)`, those of the tied head the embedding had (pass None
    for Praxis's `M**-0.5`). `kwargs` are the constructor's options. The
    lookup stays the embedding's own (`padding_idx`, `max_norm` are its);
    `emb_lookup` is Praxis's.
    """
    weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
    if not isinstance(weight, Tensor) or weight.dim() != 2:
      raise TypeError("from_embedding takes an nn.Embedding or a [num_classes, in_features] "
                      f"nn.Parameter, got {type(embedding).__name__}")
    num_classes, in_features = weight.shape
    return cls(in_features, num_classes, embedding=weight,
               **tied_head_keywords(logit_scale, kwargs))

  def reset_parameters(self) -> None:
    nn.init.normal_(self.embedding, mean=0.0, std=1.0)

  def emb_lookup(self, ids: Tensor) -> Tensor:
    """The rows `embedding[ids]`: `[...]` ids give `[..., in_features]`; an id
    outside `[0, num_classes)` gives a row of zeros, as Praxis's one-hot matmul."""
    valid = (ids >= 0) & (ids < self.num_classes)
    rows = nn.functional.embedding(torch.where(valid, ids, 0), self.embedding)
    return rows * valid.unsqueeze(-1).to(rows.dtype)

  def forward(self, inputs: Tensor, class_weights: Tensor | None = None,
              class_ids: Tensor | None = None,
              class_probabilities: Tensor | None = None) -> dict[str, Tensor | None]:
    """See `shared_embedding_softmax`; label smoothing only when `self.training`."""
    return softmax(inputs, self.embedding, class_weights, class_ids, class_probabilities,
                   layer_call_options(self.options, self.training), self.ignore_index,
                   self.return_logits)

  def extra_repr(self) -> str:
    return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"{self.options}, ignore_index={self.ignore_index}")
