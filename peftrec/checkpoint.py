"""Resumable training checkpoints: written atomically, the last K kept, found again by ``trainer.resume``.

A checkpoint is Accelerate's ``save_state`` folder (optimizer, scaler, RNG states of every process,
and the registered objects: scheduler, loop progress, the head's own training state such as AdaLoRA's
importance scores) with one change: only the trainable head's weights are saved, not the frozen base
model (a few MB instead of the whole model). Each checkpoint is written to a hidden staging folder
and renamed into place, so a crash mid-write leaves the previous checkpoint intact.

A run whose own folder already holds an unfinished run's checkpoints of the same config continues
from them: that is a requeued SLURM job (submitit reruns it in the same folder) or a rerun with the
same ``hydra.run.dir``. ``trainer.resume=auto`` also looks beside it (``outputs/<recipe>/*``,
``multirun/*/*``) for the newest checkpoint of an unfinished run with the same config (fingerprint).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from peftrec.errors import PeftrecError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
HEAD_FILE = "head.safetensors"
INFO_FILE = "peftrec_checkpoint.json"


def register_head_only_weights(accelerator: Accelerator) -> None:
    """Make ``accelerator.save_state`` / ``load_state`` store only the trainable parameters.

    The frozen base model can be re-read from its source; storing it in every checkpoint would cost
    hundreds of MB to GBs per save. These are Accelerate's documented pre-hooks for custom model saving.
    """

    def save_hook(models: list[torch.nn.Module], weights: list[dict], output_dir: str) -> None:
        if accelerator.is_main_process:
            for index, model in enumerate(models):
                state = {
                    name: param.detach().to("cpu").contiguous()
                    for name, param in accelerator.unwrap_model(model).named_parameters()
                    if param.requires_grad
                }
                save_file(state, os.path.join(output_dir, _head_file(index)))
        weights.clear()  # nothing left for Accelerate's own full-model save

    def load_hook(models: list[torch.nn.Module], input_dir: str) -> None:
        for index, model in enumerate(list(models)):
            state = load_file(os.path.join(input_dir, _head_file(index)))
            params = dict(accelerator.unwrap_model(model).named_parameters())
            missing = sorted(set(state) - set(params))
            if missing:
                raise PeftrecError(
                    f"the checkpoint {input_dir} holds head weights this model does not have "
                    f"({', '.join(missing[:3])}...): it was written by a different head or model; "
                    "resume with the config that wrote it, or start afresh (trainer.resume=null)"
                )
            with torch.no_grad():
                for name, value in state.items():
                    params[name].copy_(value)
        models.clear()  # loaded here; Accelerate must not look for full-model files

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _head_file(index: int) -> str:
    return HEAD_FILE if index == 0 else f"head_{index}.safetensors"


def save_checkpoint(
    accelerator: Accelerator, run_dir: Path, step: int, *, keep: int, info: dict[str, Any]
) -> Path:
    """Save a resumable checkpoint of the training state at ``step`` (call on every process).

    Args:
        accelerator: holds the prepared model, optimizer and the objects registered for checkpointing.
        run_dir: the run folder; checkpoints go to ``run_dir/checkpoints/step_<step>``.
        step: optimizer steps taken.
        keep: how many checkpoints to keep (the oldest beyond that are removed; at least 1).
        info: JSON written beside the state (``fingerprint``, ``step``...), read by :func:`find_checkpoint`.

    Returns:
        The checkpoint folder.
    """
    root = run_dir / CHECKPOINTS
    final = root / f"step_{step:07d}"
    staging = root / f".staging-step_{step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))  # every process writes its own RNG state file
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / INFO_FILE).write_text(json.dumps({**info, "step": step}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(root)[: -max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("Checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints in ``root`` (a run's ``checkpoints/`` folder), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / INFO_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def find_checkpoint(resume: str | None, run_dir: Path, fingerprint: str) -> Path | None:
    """The checkpoint ``trainer.resume`` asks for.

    Args:
        resume: ``None`` (only this run folder's own checkpoints of this config: a requeued job),
            ``"auto"`` (the newest checkpoint of an unfinished run with this config, in this run folder
            or its siblings), or a path to a run folder or a checkpoint folder.
        run_dir: this run's folder.
        fingerprint: :func:`config_fingerprint` of this run's config.

    Returns:
        A checkpoint folder, or None when there is nothing to resume (start afresh).

    Raises:
        PeftrecError: an explicit path holds no checkpoint, or one written by a different config.
    """
    if resume not in (None, "auto"):
        path = Path(resume)
        found = [path] if (path / INFO_FILE).is_file() else list_checkpoints(path / CHECKPOINTS)
        if not found:
            raise PeftrecError(
                f"trainer.resume={resume}: no checkpoint there. Pass a run folder that has checkpoints/ "
                "(written every trainer.checkpoint_every steps), a checkpoints/step_* folder, or "
                "trainer.resume=auto"
            )
        checkpoint = found[-1]
        theirs = json.loads((checkpoint / INFO_FILE).read_text()).get("fingerprint")
        if theirs != fingerprint:
            raise PeftrecError(
                f"{checkpoint} was written by a different config (fingerprint {theirs}, this run {fingerprint}): "
                "resume with the same recipe and overrides (checkpoint and resume keys may differ)"
            )
        return checkpoint

    candidates = []
    for run in _runs_near(run_dir) if resume == "auto" else [run_dir]:
        if _finished(run):
            continue
        for checkpoint in list_checkpoints(run / CHECKPOINTS):
            info = json.loads((checkpoint / INFO_FILE).read_text())
            if info.get("fingerprint") == fingerprint:
                candidates.append(checkpoint)
    if not candidates:
        if resume == "auto":
            log.info(
                "trainer.resume=auto: no unfinished run of this config with a checkpoint; starting afresh"
            )
        return None
    # Newest by write time; a requeued job (same run folder) wins ties by being listed first.
    return max(candidates, key=lambda p: (p.stat().st_mtime, p == run_dir))


def _runs_near(run_dir: Path) -> list[Path]:
    """This run folder, its siblings (``outputs/<recipe>/*``) and cousins (``multirun/*/*``)."""
    runs = [run_dir]
    for pattern_root, pattern in (
        (run_dir.parent, f"*/{CHECKPOINTS}"),
        (run_dir.parent.parent, f"*/*/{CHECKPOINTS}"),
    ):
        if pattern_root.is_dir():
            runs.extend(p.parent for p in pattern_root.glob(pattern) if p.parent != run_dir)
    return list(dict.fromkeys(runs))


def _finished(run: Path) -> bool:
    result = run / "result.json"
    if not result.is_file():
        return False
    try:
        return json.loads(result.read_text()).get("status") == "completed"
    except json.JSONDecodeError:
        return False
