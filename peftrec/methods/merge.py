"""Fold a trained head into the base weights, where the head is a weight update (LoRA family, IA3)."""

from __future__ import annotations

import logging

import torch
from peft import PeftModel

from peftrec.errors import PeftrecError

log = logging.getLogger(__name__)


def merge_head(model: torch.nn.Module) -> torch.nn.Module:
    """Merge the head into the base model's weights and return the plain base model.

    A merged model runs at the base model's speed with no peft at inference. LoRA, rsLoRA, DoRA,
    AdaLoRA, IA3 and QLoRA are weight updates and merge (into a 4/8-bit base, peft dequantises, merges
    and requantises: lossy, so this warns). Prefix and prompt tuning add virtual tokens to the input,
    which no weight can express. The bottleneck adapter adds layers and raises its own error.

    Args:
        model: the model returned by :func:`peftrec.methods.apply_head` (or loaded from an adapter folder).

    Returns:
        The base model with the head merged in (the head's modules removed).

    Raises:
        PeftrecError: the head cannot be merged.
    """
    if isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning:
        name = model.active_peft_config.peft_type.value.lower()
        raise PeftrecError(
            f"a {name} head cannot be merged into the base weights: its virtual tokens are extra inputs, not a "
            "weight update. Keep base model + adapter folder (PeftModel.from_pretrained), or train a mergeable "
            "head (peft=lora, adalora, ia3, qlora)"
        )
    merge = getattr(model, "merge_and_unload", None)
    if merge is None:
        raise PeftrecError(f"{type(model).__name__} has no head to merge: pass the model apply_head returned")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        # Measured on the tiny test Llama: logits moved by up to 0.8 after merging into NF4 weights.
        log.warning(
            "merging into a 4/8-bit base requantises its weights (outputs change); for the exact "
            "model, load the base with model.quantization=null and merge the adapter into that"
        )
    return merge()
