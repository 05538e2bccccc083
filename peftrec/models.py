"""Load the frozen base language model and its tokenizer, in the precision the hardware runs best."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_layers import GradientCheckpointingLayer

from peftrec.attention import loaded_implementation
from peftrec.errors import PeftrecError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
QUANTIZATIONS = (None, "4bit", "8bit")


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
    """Turn ``trainer.precision`` into ``"bf16"``, ``"fp16"`` or ``"fp32"`` for this device.

    Args:
        requested: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
        device: the device the run uses.

    Returns:
        ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    Raises:
        PeftrecError: an unknown value, or a precision this device cannot compute natively (fp16 off
            CUDA: Accelerate would silently run fp32 there; bf16 without native support).
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
            + ("; on an older GPU use trainer.precision=fp16" if device.type == "cuda" else "")
        )
    if requested == "fp16" and device.type != "cuda":
        raise PeftrecError(
            f"trainer.precision=fp16 needs a CUDA GPU (with its gradient scaler); on {device.type} Accelerate "
            "would silently train in fp32. Use trainer.precision=auto (bf16 where the CPU has it) or fp32"
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
    gradient_checkpointing_every: int = 1,
    quantization: str | None = None,
    device: torch.device | str | None = None,
) -> PreTrainedModel:
    """Load the causal LM with every weight frozen.

    In bf16 (or fp16) the frozen weights are stored in that dtype (half the memory of fp32, and no
    per-step cast); the PEFT head added later keeps its own weights in fp32 (peft's
    ``autocast_adapter_dtype``), so fp16's gradient scaler can unscale them, and the training loop's
    autocast runs its matmuls in the half dtype.

    With ``quantization`` the linear layers are stored by bitsandbytes (QLoRA: NF4 with double
    quantisation, computing in the run's precision) and the model is prepared for k-bit training by
    peft (norms and embeddings in fp32, every weight frozen).

    Args:
        path: local model folder (see :func:`peftrec.assets.resolve_model`).
        precision: ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``. ``sdpa`` loads as
            :data:`peftrec.attention.SDPA_WITHOUT_HOST_READS`: the same attention, with a mask that is
            built without the host reading the batch in every forward pass.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        gradient_checkpointing_every: with ``gradient_checkpointing``, checkpoint every this many decoder layers
            (1: all of them; 4: layers 0, 4, 8, ...): memory and recomputation both scale with the share.
        quantization: ``None``, ``"4bit"`` or ``"8bit"`` (needs ``pip install "peftrec[quant]"``).
        device: where a quantised model is placed (bitsandbytes quantises as it loads); default CPU.

    Returns:
        The model in eval mode with ``requires_grad=False`` on every parameter.

    Raises:
        PeftrecError: an unknown ``quantization``, bitsandbytes is not installed, or
            ``gradient_checkpointing_every`` is below 1.
    """
    _check_every(gradient_checkpointing_every)  # before the weights load
    if gradient_checkpointing_every > 1 and not gradient_checkpointing:
        log.warning(
            "model.gradient_checkpointing_every=%d has no effect: gradient checkpointing is off "
            "(model.gradient_checkpointing=false, or a run that does not train)",
            gradient_checkpointing_every,
        )
    dtype = DTYPES[precision]
    quant_kwargs = {}
    if quantization is not None:
        quant_kwargs = {
            "quantization_config": bnb_config(quantization, compute_dtype=dtype),
            # bitsandbytes quantises while placing the weights, so the device is chosen at load time.
            "device_map": {"": str(device or "cpu")},
        }
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=loaded_implementation(attn_implementation), **quant_kwargs
    )
    model.requires_grad_(False)
    model.eval()
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        # Norms (and embeddings) to fp32 for stable training around the 4/8-bit matmuls. Checkpointing is
        # turned on below, as for any model: peft's would call transformers' deprecated name.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        enable_checkpointing(model, gradient_checkpointing_every)
        # With a frozen embedding the checkpointed blocks would see inputs that need no grad and
        # skip the backward through them; this makes the embedding output require grad.
        model.enable_input_require_grads()
    model.config.use_cache = False
    return model


def enable_checkpointing(model: PreTrainedModel, every: int = 1) -> list[int]:
    """Turn on gradient checkpointing (non-reentrant) on every ``every``-th decoder layer.

    transformers 5.23 renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable`` (the old
    name warns, and goes in v6), which selects the layers itself (``every_n_layers``); where it is installed it
    is used. :func:`checkpoint_only_every` then checks the layers, and makes the selection on the older
    versions peftrec still supports; both keep layers 0, n, 2n, ...

    Args:
        model: a transformers model.
        every: 1 checkpoints every decoder layer.

    Returns:
        The indices of the layers checkpointed.
    """
    torch_kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs=torch_kwargs, every_n_layers=every
        )
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=torch_kwargs)
    return checkpoint_only_every(model, every)


def checkpoint_only_every(model: torch.nn.Module, every: int) -> list[int]:
    """Keep gradient checkpointing on every ``every``-th decoder layer only (0, every, 2 * every, ...).

    Layer-wise selective checkpointing (torchtitan's ``selective_ac_option``): each layer holds the same
    activations, so checkpointing a share of them saves that share of activation memory for that share of
    recomputed forward passes. Op-level selection (``torch.utils.checkpoint`` policies) decides per op in
    Python, which costs an eager step as much time as checkpointing everything; whole layers cost nothing.

    Args:
        model: a transformers model on which gradient checkpointing is enabled.
        every: 1 keeps every layer checkpointed.

    Returns:
        The indices of the layers left checkpointed.

    Raises:
        PeftrecError: ``every`` is below 1, or above 1 for a model with no layer that transformers
            checkpoints one by one.
    """
    _check_every(every)
    layers = _checkpointing_layers(model)
    if not any(layer.gradient_checkpointing for layer in layers) and every > 1:
        raise PeftrecError(
            f"{type(model).__name__} has no decoder layer with gradient checkpointing on: "
            "set model.gradient_checkpointing_every=1 for this model"
        )
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = layer.gradient_checkpointing and index % every == 0
    return checkpointed_layers(model)


def _check_every(every: int) -> None:
    if every < 1:
        raise PeftrecError(
            f"model.gradient_checkpointing_every={every}: it must be 1 (every decoder layer) or more (every n-th one)"
        )


def checkpointed_layers(model: torch.nn.Module) -> list[int]:
    """The indices of the decoder layers that recompute their forward pass in the backward pass."""
    return [index for index, layer in enumerate(_checkpointing_layers(model)) if layer.gradient_checkpointing]


def _checkpointing_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers transformers can checkpoint one by one (its decoder layers), in order."""
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def bnb_config(quantization: str, *, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """The bitsandbytes quantisation settings for ``model.quantization``.

    4bit is QLoRA's recipe (Dettmers et al., 2023): NF4 weights, double quantisation of the scales,
    matmuls in ``compute_dtype`` (bf16 where the hardware has it, else fp32: emulated bf16 on a CPU
    without it is many times slower). 8bit is LLM.int8().

    Args:
        quantization: ``"4bit"`` or ``"8bit"``.
        compute_dtype: dtype of the dequantised matmuls.

    Returns:
        A ``transformers.BitsAndBytesConfig``.

    Raises:
        PeftrecError: unknown value, or bitsandbytes is not installed.
    """
    if quantization not in QUANTIZATIONS:
        raise PeftrecError(
            f"model.quantization={quantization!r} is not one of null, 4bit, 8bit; "
            "use model.quantization=4bit for QLoRA or model.quantization=null for full-precision weights"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PeftrecError(
            f"model.quantization={quantization} needs bitsandbytes, which is not installed: "
            'run pip install "peftrec[quant]" (or set model.quantization=null)'
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Count trainable and total parameters (each shared tensor once).

    A bitsandbytes 4-bit weight is stored packed (two values per byte); it counts as its logical
    number of elements, as peft's ``get_nb_trainable_parameters`` counts it, so a quantised model
    reports the same total as its full-precision original.

    Returns:
        ``(trainable, total)``.
    """
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        n = logical_numel(param)
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def logical_numel(param: torch.Tensor) -> int:
    """Number of values a parameter holds, unpacking bitsandbytes' 4-bit storage."""
    if type(param).__name__ != "Params4bit":
        return param.numel()
    # The quantisation state keeps the original shape; before quantising, the tensor is still unpacked.
    shape = getattr(getattr(param, "quant_state", None), "shape", None)
    return math.prod(shape) if shape is not None else param.numel()
