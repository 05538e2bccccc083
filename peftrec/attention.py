"""PyTorch SDPA attention whose mask is built without asking the device whether the batch is padded.

transformers' SDPA mask (``masking_utils.sdpa_mask``) first checks whether a batch has any padding
(``_ignore_causal_mask_sdpa``: up to two reads of the attention mask), so that an unpadded batch can use
SDPA's ``is_causal`` flag instead of a mask. On a GPU each read makes the host wait for all the work
queued before it, in the middle of every forward pass: the host can no longer queue the next kernels
while the GPU runs. peftrec's batches are padded (length-grouped, to a multiple of
``trainer.pad_to_multiple_of``), so the check almost always answers "build the mask", after the wait.

``sdpa`` in a model config therefore loads as :data:`SDPA_WITHOUT_HOST_READS`: the same attention function
(transformers' ``sdpa_attention_forward``), with a mask that is always built when there is an attention
mask, and transformers' own shortcut when there is none (then there is nothing to read). Outputs are the
same; an unpadded batch runs SDPA with an all-true mask instead of ``is_causal``.

This is transformers' documented extension point (``AttentionInterface`` / ``AttentionMaskInterface``),
not a patch: models loaded by other code in the same process keep plain ``sdpa``.
"""

from __future__ import annotations

from typing import Any

from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

SDPA_WITHOUT_HOST_READS = "peftrec_sdpa"


def _sdpa_mask_without_host_reads(
    *args: Any, attention_mask: Any = None, allow_is_causal_skip: bool = True, **kwargs: Any
):
    """transformers' SDPA mask, which skips the mask only when no attention mask was given."""
    return ALL_MASK_ATTENTION_FUNCTIONS["sdpa"](
        *args,
        attention_mask=attention_mask,
        # Deciding to skip a given mask means reading it on the host (see the module docstring).
        allow_is_causal_skip=allow_is_causal_skip and attention_mask is None,
        **kwargs,
    )


def register_sdpa_without_host_reads() -> str:
    """Register :data:`SDPA_WITHOUT_HOST_READS` with transformers (idempotent) and return its name."""
    if SDPA_WITHOUT_HOST_READS not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(SDPA_WITHOUT_HOST_READS, ALL_ATTENTION_FUNCTIONS["sdpa"])
        AttentionMaskInterface.register(SDPA_WITHOUT_HOST_READS, _sdpa_mask_without_host_reads)
    return SDPA_WITHOUT_HOST_READS


def loaded_implementation(attn_implementation: str) -> str:
    """The attention implementation a model is loaded with for the configured ``attn_implementation``.

    Args:
        attn_implementation: ``model.attn_implementation`` (``sdpa``, ``eager``, ``flash_attention_2``...).

    Returns:
        :data:`SDPA_WITHOUT_HOST_READS` (registered) for ``sdpa``; any other name unchanged.
    """
    if attn_implementation == "sdpa":
        return register_sdpa_without_host_reads()
    return attn_implementation
