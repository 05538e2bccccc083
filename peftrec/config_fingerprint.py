"""A stable hash of a run's resolved config: two runs with equal fingerprints compute the same thing.

Used to find a run's own checkpoints again (``trainer.resume``) and to group runs that differ only in
the seed (``peftrec.report``). Kept free of torch so the report stays quick to import.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Config keys that do not change what a run computes, so they may differ between a run and its resume.
NOT_FINGERPRINTED = {"trainer": ("resume", "checkpoint_every", "keep_checkpoints", "num_workers")}


def config_fingerprint(config: dict[str, Any]) -> str:
    """A stable hash of the resolved run config, without the keys that only steer checkpointing.

    Args:
        config: the resolved config as plain containers (``OmegaConf.to_container(cfg, resolve=True)``).

    Returns:
        A hex digest: equal for two runs whose training computes the same thing.
    """
    kept = {k: v for k, v in config.items() if k != "hydra"}
    for section, keys in NOT_FINGERPRINTED.items():
        if isinstance(kept.get(section), dict):
            kept[section] = {k: v for k, v in kept[section].items() if k not in keys}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
