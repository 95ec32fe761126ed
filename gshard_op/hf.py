"""`gshard_op.hf`: Hugging Face transformers causal LMs whose loss is the op.

    import gshard_op.hf
    model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-0.5B")   # tied embeddings
    gshard_op.hf.apply(model)
    out = model(input_ids, labels=input_ids)   # out.loss as before; out.logits is None
    out.loss.backward()

`apply(model)` replaces the model's `forward` (on this instance, as Liger's
`apply_liger_kernel_to_*(model=...)` and Apple CCE's `cce_patch` do): a call
with `labels` runs the decoder, then `gshard_op.torch.cross_entropy` on its
last hidden states and the embedding the LM head shares, so the
`[tokens, vocab]` logits never exist, and returns `logits=None`. The loss is
HF's `ForCausalLMLoss`: labels shifted left by one (or `shift_labels=` as
given), `-100` ignored, the mean over the tokens that are not ignored or, with
`num_items_in_batch=` (what `Trainer` passes under gradient accumulation), the
sum divided by it; in float32, with the config's head transform: Gemma 2/3's
`final_logit_softcapping`, Cohere's `logit_scale`, Granite's `logits_scaling`.
A call without `labels` (`generate`, evaluation of logits) runs the model's own
forward, unchanged. Call it before `torch.compile(model)`; the patched forward
compiles with `fullgraph=True`.

Only tied models are taken (`tie_word_embeddings=True`: the LM head's weight
is the input embedding's Parameter), of the families in `SUPPORTED`, each
checked against the unpatched model in this package's tests. Anything else is
refused with an error that says why, before the model is touched.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable

import torch
from torch import Tensor, nn

import gshard_op.torch as gt

__all__ = ["SUPPORTED", "apply", "causal_lm_loss", "head_options"]


def _plain(config) -> dict:
  return {}


def _final_logit_softcapping(config) -> dict:
  cap = getattr(config, "final_logit_softcapping", None)
  return {"soft_cap_logits": float(cap)} if cap else {}


def _cohere(config) -> dict:   # CohereForCausalLM: logits * config.logit_scale
  return {"logit_scale": float(config.logit_scale)}


def _granite(config) -> dict:  # GraniteForCausalLM: logits / config.logits_scaling
  return {"logit_scale": 1.0 / float(config.logits_scaling)}


# `config.model_type` -> the op's options for what the family's causal LM does
# to `lm_head(hidden_states)` before its loss (beyond the plain, unscaled head,
# `logit_scale=1.0`). Each family is checked against the unpatched model in
# tests/test_hf.py.
SUPPORTED: dict[str, Callable] = {
    "llama": _plain,
    "mistral": _plain,
    "qwen2": _plain,
    "qwen3": _plain,
    "gemma": _plain,
    "gemma2": _final_logit_softcapping,
    "gemma3_text": _final_logit_softcapping,
    "cohere": _cohere,
    "granite": _granite,
}

# The arguments of a causal LM's forward that are not the decoder's.
_HEAD_ARGUMENTS = ("labels", "logits_to_keep", "return_dict")


def head_options(config) -> dict:
  """The `cross_entropy` options that give `config`'s causal LM head: its
  logit scale (1.0, the plain tied head, unless the family scales), soft cap."""
  if config.model_type not in SUPPORTED:
    raise ValueError(
        f"gshard_op.hf does not support model_type {config.model_type!r}; supported: "
        f"{', '.join(sorted(SUPPORTED))}. Another family needs its head transform (what "
        "its forward does to lm_head(hidden_states) before the loss) added to "
        "gshard_op.hf.SUPPORTED, with a test against the unpatched model.")
  return {"logit_scale": 1.0, **SUPPORTED[config.model_type](config)}


def causal_lm_loss(hidden_states: Tensor, embedding: Tensor, labels: Tensor | None, *,
                   num_items_in_batch: Tensor | int | None = None, ignore_index: int = -100,
                   shift_labels: Tensor | None = None, **options) -> Tensor:
  """transformers' `ForCausalLMLoss` on `hidden_states @ embedding.T` (as
  `options` transform it), without the logits: position `t` predicts
  `labels[..., t + 1]` (the last predicts nothing), or `shift_labels` as given;
  `ignore_index` tokens do not count; the mean over the counted tokens, or the
  sum over `num_items_in_batch`. Float32 whatever the inputs' dtype."""
  if shift_labels is None:
    shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
  in_features = hidden_states.shape[-1]
  reduction = "mean" if num_items_in_batch is None else "sum"
  loss = gt.cross_entropy(hidden_states.reshape(-1, in_features), embedding,
                          shift_labels.reshape(-1).to(hidden_states.device),
                          reduction=reduction, ignore_index=ignore_index, **options)
  loss = loss.float()
  if num_items_in_batch is not None:
    if torch.is_tensor(num_items_in_batch):
      num_items_in_batch = num_items_in_batch.to(loss.device)
    loss = loss / num_items_in_batch
  return loss


def _slice_to_keep(hidden_states: Tensor, logits_to_keep) -> Tensor:
  """The positions the model would compute logits for (`logits_to_keep`: 0 all,
  `k` the last k, a tensor the given indices), as transformers slices them."""
  if isinstance(logits_to_keep, int):
    return hidden_states if logits_to_keep == 0 else hidden_states[:, -logits_to_keep:, :]
  try:
    from transformers.modeling_utils import slice_logits_to_keep
  except ImportError:
    return hidden_states[:, logits_to_keep, :]
  return slice_logits_to_keep(hidden_states, logits_to_keep)


def _tied_embedding(model) -> nn.Parameter:
  """The Parameter the LM head shares with the input embedding, or an error."""
  head, embed = model.get_output_embeddings(), model.get_input_embeddings()
  if not isinstance(head, nn.Linear) or head.bias is not None:
    raise ValueError(f"gshard_op.hf needs a bias-free nn.Linear LM head, not {head!r}")
  if not isinstance(embed, nn.Embedding) or head.weight is not embed.weight:
    raise ValueError(
        f"{type(model).__name__}'s LM head is not tied to its input embedding "
        "(config.tie_word_embeddings is False, or the weights were untied): gshard_op.hf "
        "computes the loss of a shared embedding softmax, and takes tied models only")
  return head.weight


def apply(model):
  """Makes `model` (a transformers `*ForCausalLM` with tied embeddings, of a
  family in `SUPPORTED`) compute its loss through the op; returns the model.

  Calls with `labels` return the same `loss` as before (the shift, `-100`,
  `num_items_in_batch`, the family's soft cap and logit scale) and
  `logits=None`; calls without them (generation) run the model's own forward.
  Applying it twice is a no-op. Raises ValueError, touching nothing, for an
  untied or unsupported model.
  """
  try:
    from transformers import PreTrainedModel
  except ImportError as e:
    raise ImportError("gshard_op.hf needs transformers: pip install 'gshard-op[hf]'") from e
  if not isinstance(model, PreTrainedModel):
    raise TypeError(f"gshard_op.hf.apply takes a transformers PreTrainedModel, got "
                    f"{type(model).__name__}")
  if getattr(model, "_gshard_op_hf", False):
    return model
  options = head_options(model.config)
  loss_type = getattr(model, "loss_type", None)
  if loss_type not in (None, "ForCausalLM"):
    raise ValueError(f"gshard_op.hf replaces the ForCausalLM loss; {type(model).__name__} "
                     f"has loss_type {loss_type!r}")
  _tied_embedding(model)
  own_forward = model.forward
  # The forward's positional parameters, by name, once here (Dynamo traces the
  # plain dict below, not inspect's binding).
  names = [p.name for p in inspect.signature(type(model).forward).parameters.values()
           if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]

  def forward(self, *args, **kwargs):
    arguments = dict(zip(names, args))
    arguments.update(kwargs)
    if arguments.get("labels") is None:
      return own_forward(*args, **kwargs)
    labels = arguments.pop("labels")
    logits_to_keep = arguments.pop("logits_to_keep", 0)
    return_dict = arguments.pop("return_dict", None)
    if return_dict is None:
      return_dict = getattr(self.config, "return_dict", True)
    # As the model's own forward: every other argument goes to the decoder,
    # and the loss reads its own among them.
    outputs = self.base_model(**arguments)
    hidden_states = _slice_to_keep(outputs[0], logits_to_keep)
    loss = causal_lm_loss(
        hidden_states, self.get_output_embeddings().weight, labels,
        num_items_in_batch=arguments.get("num_items_in_batch"),
        ignore_index=arguments.get("ignore_index", -100),
        shift_labels=arguments.get("shift_labels"), **options)
    from transformers.modeling_outputs import CausalLMOutputWithPast
    rest = {k: v for k, v in outputs.items() if k != "last_hidden_state"}
    output = CausalLMOutputWithPast(loss=loss, logits=None, **rest)
    return output if return_dict else output.to_tuple()

  model.forward = types.MethodType(forward, model)
  model._gshard_op_hf = True
  return model
