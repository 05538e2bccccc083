"""A stable hash of a run's resolved config: two runs with equal fingerprints compute the same thing.

Used to find a run's own checkpoints again (``trainer.resume``) and to group runs that differ only in
the seed (``peftrec.report``). Kept free of torch so the report stays quick to import.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

# Config keys that do not change what a run computes, so they may differ between a run and its resume.
NOT_FINGERPRINTED = {"trainer": ("resume", "checkpoint_every", "keep_checkpoints", "num_workers")}

# Options added to the config after run records were first committed, each at the value that does
# what the code did before it existed: a record written earlier is read as holding that value, so its
# runs still group with later seeds of the same configuration (``peftrec.report``). Add an option here
# when it is introduced with such a value; one whose default changes behaviour does not belong here.
ADDED_OPTIONS: dict[tuple[str, ...], Any] = {
    ("adapter",): None,  # start from a saved adapter
    ("run_model",): True,  # False computes the classical baselines only
    ("data", "holdout"): 1,
    ("data", "cold_start"): None,
    ("data", "cold_fraction"): 0.2,  # read only with cold_start
    ("trainer", "compile"): False,
    ("trainer", "compile_mode"): "default",  # read only with compile
    ("trainer", "pad_to_multiple_of"): 8,
    ("trainer", "max_test_examples"): None,
}


def with_added_options(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` holding every :data:`ADDED_OPTIONS` key it lacks, at its listed value."""
    config = copy.deepcopy(config)
    for path, value in ADDED_OPTIONS.items():
        parent = config
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
            if not isinstance(parent, dict):
                break
        else:
            parent.setdefault(path[-1], value)
    return config


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
