"""Attach a head (peft-backed, or peftrec's bottleneck adapter) to a base model, with errors that name the fix."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel, PeftType, get_peft_model

from peftrec.atomic import swap_in
from peftrec.errors import PeftrecError
from peftrec.paths import RECIPE_FILE

# Heads whose virtual tokens reach the model as a KV cache: gradient checkpointing drops it (peft refuses).
_CACHE_HEADS = {PeftType.PREFIX_TUNING}


def apply_head(model: torch.nn.Module, config: Any) -> torch.nn.Module:
    """Wrap ``model`` with the head described by ``config``; only the head is trainable.

    Args:
        model: the frozen base causal LM (see :func:`peftrec.models.load_base_model`).
        config: a peft config (``LoraConfig``, ``AdaLoraConfig``, ``PrefixTuningConfig``, ...) or a
            ``peftrec.methods.bottleneck.BottleneckConfig``, built from ``conf/peft/*.yaml``.

    Returns:
        The wrapped model (a ``PeftModel``, or the bottleneck adapter's ``BottleneckModel``).

    Raises:
        PeftrecError: the config targets modules the model does not have (the message lists the
            linear layer names it does have), or the head cannot run with gradient checkpointing.
    """
    if not isinstance(config, PeftConfig):
        # Imported here: only bottleneck runs need it, and it is developed beside this module.
        from peftrec.methods.bottleneck import BottleneckConfig, apply_bottleneck

        if isinstance(config, BottleneckConfig):
            return apply_bottleneck(model, config)
        raise PeftrecError(
            f"peft config {type(config).__name__} is not a head peftrec knows: its _target_ must be a peft "
            "config class (e.g. peft.LoraConfig) or peftrec.methods.bottleneck.BottleneckConfig"
        )
    if config.peft_type in _CACHE_HEADS and _checkpointing(model):
        raise PeftrecError(_checkpointing_message(config))
    try:
        with _quiet_checkpointing_probe():
            return get_peft_model(model, config)
    except ValueError as err:
        text = str(err)
        if "gradient checkpointing" in text:
            raise PeftrecError(_checkpointing_message(config)) from err
        # peft's text for LoRA, AdaLoRA, IA3, ... (BaseTuner.inject_adapter), old and new wording.
        if "not found in the base model" not in text and "Target modules" not in text:
            raise
        raise PeftrecError(_target_message(model, config)) from err


@contextmanager
def _quiet_checkpointing_probe() -> Iterator[None]:
    """Silence the FutureWarning peft's wrapping sets off in every run, which a user cannot act on.

    peft (<= 0.21.2) reads ``model.is_gradient_checkpointing`` when it wraps a model; transformers 5 deprecated
    that name for ``is_activation_checkpointing`` and warns on each read. Only that message is silenced, and
    only while peft wraps; the value peft reads is the same.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def _checkpointing(model: torch.nn.Module) -> bool:
    # transformers 5 renamed is_gradient_checkpointing (deprecated, removed in v6).
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _checkpointing_message(config: PeftConfig) -> str:
    name = config.peft_type.value.lower()
    return (
        f"the {name} head cannot be combined with gradient checkpointing: its prefix reaches every layer as a "
        "key/value cache, which checkpointed layers drop. Set model.gradient_checkpointing=false, or pick a head "
        "that allows it (e.g. peft=lora)"
    )


def _target_message(model: torch.nn.Module, config: PeftConfig) -> str:
    targets = config.target_modules
    shown = targets if isinstance(targets, str) else sorted(targets or [])
    names = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
        }
    )
    return (
        f"peft.target_modules={shown} matches no layer of this model. "
        f"Its linear layers are named: {', '.join(names)}. Set e.g. peft.target_modules=[{names[0]}] "
        "or peft.target_modules=all-linear."
    )


def save_head(model: torch.nn.Module, folder: str | Path, *, recipe: str | None = None) -> Path:
    """Save the head, atomically: a crash mid-write never leaves a half adapter.

    Works for any head with ``save_pretrained(folder)``: peft models (peft's format) and the
    bottleneck adapter.

    Args:
        model: the wrapped model.
        folder: destination (replaced if it exists).
        recipe: the resolved run config as YAML text, written to ``RECIPE_FILE`` in the same swap.

    Returns:
        The folder.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if recipe is not None:
        (tmp / RECIPE_FILE).write_text(recipe)
    return swap_in(tmp, folder)


def load_head(base: torch.nn.Module, folder: str | Path, *, is_trainable: bool = False) -> torch.nn.Module:
    """Attach a saved head to a fresh base model, whichever kind it is.

    The folder's ``adapter_config.json`` says: peft heads load with ``PeftModel.from_pretrained``,
    peftrec's bottleneck adapter (``peft_type: BOTTLENECK``) with its own loader.

    Args:
        base: a freshly loaded base model of the architecture the head was trained on.
        folder: a folder written by :func:`save_head`.
        is_trainable: keep the head trainable (to continue training); by default it is frozen, in eval mode.

    Returns:
        The wrapped model, computing what the saved one computed.

    Raises:
        PeftrecError: the folder holds no adapter.
    """
    folder = Path(folder)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise PeftrecError(
            f"{folder} holds no adapter (no adapter_config.json): pass a run's adapter/ folder"
        )
    if json.loads(config_path.read_text()).get("peft_type") == "BOTTLENECK":
        from peftrec.methods.bottleneck import BottleneckModel

        return BottleneckModel.from_pretrained(base, folder, is_trainable=is_trainable)
    with _quiet_checkpointing_probe():
        return PeftModel.from_pretrained(base, folder, is_trainable=is_trainable)
