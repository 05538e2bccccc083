"""Load the frozen base language model and its tokenizer, in the precision the hardware runs best."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from peftrec.errors import PeftrecError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (not by slow emulation).

    Args:
        device: the device the model will run on.

    Returns:
        True on CUDA devices with bf16 support and on CPUs with AVX512-BF16 or AMX (oneDNN).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """Turn ``trainer.precision`` into ``"bf16"`` or ``"fp32"`` for this device.

    Args:
        requested: ``auto``, ``bf16`` or ``fp32``.
        device: the device the run uses.

    Returns:
        ``"bf16"`` or ``"fp32"``.
    """
    if requested not in PRECISIONS:
        raise PeftrecError(
            f"trainer.precision={requested!r} is not one of {', '.join(PRECISIONS)}; "
            "set trainer.precision=auto to use bf16 where the hardware supports it"
        )
    if requested == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if requested == "bf16" and not bf16_supported(device):
        raise PeftrecError(
            f"trainer.precision=bf16 but {device} has no native bf16 (it would be emulated, many times slower); "
            "use trainer.precision=fp32 or auto"
        )
    return requested


def load_tokenizer(path: str | Path, max_length: int) -> PreTrainedTokenizerBase:
    """Load the tokenizer with the padding and truncation the scoring code relies on.

    Right padding: the score is read at each row's last real token. Left padding in bf16 sent the click
    loss to NaN on SmolLM2 (fully masked rows), see ARCHITECTURE.md. Left truncation: an over-long
    prompt loses its oldest history, never the answer slot at its end.

    Args:
        path: local model folder.
        max_length: the longest prompt kept, in tokens.

    Returns:
        The tokenizer, with a pad token (its EOS token when it has none).
    """
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    tokenizer.model_max_length = max_length
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    path: str | Path,
    *,
    precision: str,
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    """Load the causal LM with every weight frozen.

    In bf16 the frozen weights are stored in bf16 (half the memory of fp32, and no per-step cast);
    the PEFT head added later keeps its own weights in fp32 (peft's ``autocast_adapter_dtype``) and
    the training loop's autocast runs its matmuls in bf16.

    Args:
        path: local model folder (see :func:`peftrec.assets.resolve_model`).
        precision: ``"bf16"`` or ``"fp32"``.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        gradient_checkpointing: recompute activations in the backward pass to save memory.

    Returns:
        The model in eval mode with ``requires_grad=False`` on every parameter.
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    model.requires_grad_(False)
    model.eval()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # With a frozen embedding the checkpointed blocks would see inputs that need no grad and
        # skip the backward through them; this makes the embedding output require grad.
        model.enable_input_require_grads()
    model.config.use_cache = False
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Count trainable and total parameters (each shared tensor once).

    Returns:
        ``(trainable, total)``.
    """
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total
