"""Values a head's config takes from the run rather than from its conf file, and what a saved head reports."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def runtime_head_values(head: Mapping[str, Any], *, model_path: str | Path) -> dict[str, Any]:
    """Run-time keyword arguments for building the head config (``instantiate(cfg.peft, **values)``).

    Prompt tuning initialised from text tokenises that text with the base model's tokenizer; its
    folder is known only once the model is resolved, so the runner fills it (unless the conf names one).
    ``total_step`` (AdaLoRA) needs nothing here: the conf interpolates ``${trainer.max_steps}``.

    Args:
        head: the ``peft`` config node as a plain mapping.
        model_path: local folder of the base model (with its tokenizer).

    Returns:
        Keyword arguments to add; empty for most heads.
    """
    target = str(head.get("_target_", ""))
    text_init = str(head.get("prompt_tuning_init", "")).upper() == "TEXT"
    if target.endswith("PromptTuningConfig") and text_init and not head.get("tokenizer_name_or_path"):
        return {"tokenizer_name_or_path": str(model_path)}
    return {}


def saved_head_summary(folder: str | Path) -> dict[str, Any] | None:
    """What a saved peft head reports in result.json: its type, and AdaLoRA's final ranks per module.

    Read from the adapter folder, so it describes exactly the head that was saved (the best step).

    Args:
        folder: an adapter folder written by :func:`peftrec.methods.save_head`.

    Returns:
        ``{"peft_type": ..., ["rank_pattern": {module: rank}, "total_rank": n, "init_r": r0, "target_r": r1]}``,
        or None when the folder holds no peft config (no training, or a non-peft head).
    """
    config_file = Path(folder) / "adapter_config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    summary: dict[str, Any] = {"peft_type": config.get("peft_type")}
    if config.get("peft_type") == "ADALORA":
        pattern = config.get("rank_pattern")
        # peft keeps one boolean per initial rank (kept or pruned), keyed by the module's lora_E parameter.
        ranks = (
            {name.removesuffix(".lora_E"): int(sum(mask)) for name, mask in sorted(pattern.items())}
            if pattern
            else None
        )
        summary.update(
            rank_pattern=ranks,
            total_rank=sum(ranks.values()) if ranks else None,
            init_r=config.get("init_r"),
            target_r=config.get("target_r"),
        )
    return summary
