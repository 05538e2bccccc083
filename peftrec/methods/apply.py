"""Attach a peft-backed head to a base model, with errors that name the fix."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel, get_peft_model

from peftrec.errors import PeftrecError


def apply_head(model: torch.nn.Module, config: PeftConfig) -> PeftModel:
    """Wrap ``model`` with the head described by ``config``; only the head is trainable.

    Args:
        model: the frozen base causal LM.
        config: a peft config (e.g. ``LoraConfig``), built from ``conf/peft/*.yaml``.

    Returns:
        The peft model.

    Raises:
        PeftrecError: the config targets modules the model does not have (the message lists the
            linear layer names it does have).
    """
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        if "not found in the base model" not in str(err) and "Target modules" not in str(err):
            raise
        names = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)})
        raise PeftrecError(
            f"peft.target_modules={list(config.target_modules or [])} matches no layer of this model. "
            f"Its linear layers are named: {', '.join(names)}. Set e.g. peft.target_modules=[{names[0]}] "
            "or peft.target_modules=all-linear."
        ) from err


def save_head(model: PeftModel, folder: str | Path) -> Path:
    """Save the head in peft's format, atomically: a crash mid-write never leaves a half adapter.

    Args:
        model: the peft model.
        folder: destination (replaced if it exists).

    Returns:
        The folder.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
