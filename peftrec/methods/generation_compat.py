"""Refuses head x library-version combinations whose ``generate`` is known to be silently wrong."""

from __future__ import annotations

import peft
import torch
import transformers
from packaging.version import Version
from peft import PeftModel, PeftType

from peftrec.errors import PeftrecError

# transformers 5.24 renamed the generation cache argument ``past_key_values`` to ``cache``. peft 0.21.2
# (the newest release when this was written) still reads ``past_key_values`` in
# PeftModelForCausalLM.prepare_inputs_for_generation, finds none after the first step, and injects a
# fresh prefix KV cache at every decoding step: from the second generated token on, the scores differ
# from a plain forward pass over the same tokens (checked on a tiny Llama, prefix tuning, greedy
# search: 5.23 agrees with the forward pass, 5.24 does not). Training and single-forward scoring do
# not go through that code and are unaffected.
_CACHE_RENAMED = Version("5.24.0")
_LAST_PEFT_READING_PAST_KEY_VALUES = Version("0.21.2")
_CACHE_PREFIX_HEADS = {PeftType.PREFIX_TUNING, PeftType.CARTRIDGE}


def check_multi_step_generation(model: torch.nn.Module) -> None:
    """Raise if ``model.generate`` beyond the first token is known to be wrong with the installed versions.

    Args:
        model: a causal LM, a peft model, or either inside a DDP wrapper.

    Raises:
        PeftrecError: prefix tuning with transformers >= 5.24 and peft <= 0.21.2, naming the fix.
    """
    model = getattr(model, "module", model)
    if not isinstance(model, PeftModel) or model.active_peft_config.peft_type not in _CACHE_PREFIX_HEADS:
        return
    if (
        Version(transformers.__version__) >= _CACHE_RENAMED
        and Version(peft.__version__) <= _LAST_PEFT_READING_PAST_KEY_VALUES
    ):
        raise PeftrecError(
            f"prefix tuning cannot generate correctly with transformers {transformers.__version__} and peft "
            f"{peft.__version__}: peft re-injects the prefix at every decoding step since transformers 5.24 "
            "renamed past_key_values to cache. Install peftrec's pinned range (pip install 'transformers<5.24') "
            "or a peft release that reads the new name"
        )
