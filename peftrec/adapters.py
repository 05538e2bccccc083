"""Find a saved head: a local adapter folder, or a Hugging Face Hub repo id, and the recipe that trained it.

A run writes ``<run>/adapter/`` (the best-step head, with ``peftrec_recipe.yaml`` beside its files);
``python -m peftrec.publish`` uploads that folder to a Hub repo. :func:`resolve_adapter` turns either
back into a local folder, the way :func:`peftrec.assets.resolve_model` does for base models: the Hub
first with short timeouts (``HF_ENDPOINT`` honoured; ``HF_HUB_OFFLINE=1`` / ``PEFTREC_OFFLINE=1`` skip
the network), then the local Hugging Face cache, so an adapter downloaded once keeps working offline.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from peftrec.assets import HUB_TIMEOUT_S, hub_error_reason, offline, offline_reason, remember_as_main
from peftrec.errors import PeftrecError
from peftrec.paths import RECIPE_FILE

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"  # peft's file name; peftrec's bottleneck adapter writes it too
# What an adapter repo holds: the head (config + weights), its recipe, and the card/record publish adds.
# Anything else (checkpoints, a merged model) is not needed to use the head and is not fetched.
ADAPTER_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.yaml", "*.md"]
_REPO_ID = re.compile(r"[\w][\w.-]*/[\w][\w.-]*")


def resolve_adapter(name: str | Path) -> Path:
    """Return the local folder of a saved head.

    Args:
        name: a folder holding ``adapter_config.json`` (a run's ``adapter/``; the run folder itself is
            accepted too), or a Hugging Face Hub repo id ``owner/name`` made by ``python -m peftrec.publish``.

    Returns:
        The folder (for a Hub id: its snapshot in the Hugging Face cache).

    Raises:
        PeftrecError: not a folder and not a repo id; a folder or repo without ``adapter_config.json``;
            the Hub unreachable (or the repo missing) and no copy in the local cache.
    """
    text = str(name)
    path = Path(text).expanduser()
    if path.exists():
        return _local_adapter(path.resolve())
    if not _REPO_ID.fullmatch(text):
        raise PeftrecError(
            f"adapter {text!r} is not an existing folder ({path.resolve()} does not exist) and not a Hugging "
            "Face Hub repo id (owner/name): pass a run's adapter folder (outputs/<recipe>/<time>/adapter) "
            "or a Hub repo id such as you/peftrec-lora-click"
        )
    folder = _hub_adapter(text)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise PeftrecError(
            f"the Hub repo {text} has no {ADAPTER_CONFIG}: it is not a peft or peftrec adapter repo. Pass the "
            "repo that `python -m peftrec.publish` uploaded, or a local adapter folder"
        )
    return folder


def adapter_recipe(folder: str | Path) -> DictConfig:
    """Read the resolved run config saved beside a head (``peftrec_recipe.yaml``).

    Args:
        folder: an adapter folder (see :func:`resolve_adapter`).

    Returns:
        The config that trained the head: ``model``, ``data``, ``task``, ``peft``, ``trainer``, ``seed``.

    Raises:
        PeftrecError: the folder has no recipe file (a head not trained by peftrec).
    """
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        raise PeftrecError(
            f"{Path(folder)} has no {RECIPE_FILE}: this adapter was not made by peftrec: pass a recipe that "
            "matches how it was trained (its base model, task and prompt are unknown), e.g. python -m peftrec "
            f"recipe=lora_click adapter={Path(folder)} trainer.max_steps=0"
        )
    recipe = OmegaConf.load(path)
    if not isinstance(recipe, DictConfig) or "model" not in recipe or "task" not in recipe:
        raise PeftrecError(
            f"{path} is not a peftrec run config (no model or task section): replace it with the "
            "config.yaml of the run that trained this head"
        )
    return recipe


def _local_adapter(path: Path) -> Path:
    if path.is_file():
        raise PeftrecError(f"adapter {path} is a file: pass the folder that holds {ADAPTER_CONFIG}")
    if (path / ADAPTER_CONFIG).is_file():
        return path
    if (path / "adapter" / ADAPTER_CONFIG).is_file():
        return path / "adapter"  # a run folder: its best-step head
    raise PeftrecError(
        f"{path} holds no adapter (no {ADAPTER_CONFIG}): pass a run's adapter/ folder, e.g. "
        "outputs/<recipe>/<time>/adapter. A run with trainer.max_steps=0 saves no adapter"
    )


def _hub_adapter(repo_id: str) -> Path:
    """Download the repo's files (or find them in the local Hugging Face cache)."""
    from huggingface_hub import HfApi, snapshot_download

    # Read now: huggingface_hub reads its environment once, at import.
    endpoint = os.environ.get("HF_ENDPOINT") or None
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    if offline():
        log.info("Adapter %s: offline mode, looking in the Hugging Face cache", repo_id)
        return _cached(repo_id, offline_reason(), cache_dir)
    try:
        # snapshot_download's first request has no timeout of its own; asking for the commit with one
        # and passing it on makes a dead network fail in seconds (as for models, peftrec.assets).
        revision = HfApi(endpoint=endpoint).repo_info(repo_id, timeout=HUB_TIMEOUT_S).sha
    except Exception as error:  # unreachable, not found, gated: a cached copy may still serve
        log.info("The Hub did not answer for %s: %s", repo_id, error)
        return _cached(repo_id, hub_error_reason(repo_id, error), cache_dir)
    log.info("Adapter %s: downloading revision %s from the Hub", repo_id, revision)
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=ADAPTER_ALLOW_PATTERNS,
                etag_timeout=HUB_TIMEOUT_S,
                endpoint=endpoint,
                cache_dir=cache_dir,
            )
        )
    except Exception as error:  # a connection dropped mid-download
        return _cached(repo_id, hub_error_reason(repo_id, error), cache_dir)
    remember_as_main(folder, revision)
    return folder


def _cached(repo_id: str, why: str, cache_dir: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(
                repo_id, allow_patterns=ADAPTER_ALLOW_PATTERNS, local_files_only=True, cache_dir=cache_dir
            )
        )
    except Exception as error:  # typically LocalEntryNotFoundError: never downloaded here
        raise PeftrecError(
            f"cannot get the adapter {repo_id}: {why}; it is not in the local Hugging Face cache either. "
            "Connect to the Hub (set HF_ENDPOINT for a mirror, log in with `hf auth login` for a private repo), "
            "or download the adapter folder and pass its path"
        ) from error
    log.info("Adapter %s: using the cached copy %s (%s)", repo_id, folder, why)
    return folder
