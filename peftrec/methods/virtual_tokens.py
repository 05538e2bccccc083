"""How many virtual tokens a head puts in front of the input (position bookkeeping for scoring)."""

from __future__ import annotations

import torch
from peft import PeftModel, PeftType

# These heads concatenate learned embeddings before the input embeddings, so the base model sees
# num_virtual_tokens more positions and returns logits for them too. Prefix tuning passes its
# prefix as a KV cache instead: the input keeps its positions.
_PREPENDING = {PeftType.PROMPT_TUNING, PeftType.P_TUNING, PeftType.MULTITASK_PROMPT_TUNING, PeftType.CPT}


def prepended_tokens(model: torch.nn.Module) -> int:
    """Number of positions the head inserts before the first input token (0 for most heads).

    Args:
        model: a causal LM, a peft model, or either inside a DDP wrapper.

    Returns:
        ``num_virtual_tokens`` for prompt tuning / p-tuning, else 0.
    """
    model = getattr(model, "module", model)
    if isinstance(model, PeftModel):
        config = model.active_peft_config
        if config.peft_type in _PREPENDING:
            return int(config.num_virtual_tokens)
    return 0
