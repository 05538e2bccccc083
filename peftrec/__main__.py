"""Command-line entry: ``python -m peftrec recipe=<name> [overrides ...]``.

Recipes live in ``recipes/*.yaml`` (shipped inside the package by a wheel install). Each file is
registered as an option of the ``recipe`` config group, so ``recipe=lora_click`` selects it and Hydra
lists the available recipes when a name is unknown. A user adds recipes of their own with
``--config-dir DIR`` (or ``hydra.searchpath=[file://DIR]``), where ``DIR/recipe/<name>.yaml`` exists.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from peftrec.errors import PeftrecError
from peftrec.paths import CONF_DIR, RECIPES_DIR


def register_recipes() -> list[str]:
    """Register every ``recipes/*.yaml`` as an option of the ``recipe`` config group.

    Returns:
        The recipe names, sorted.
    """
    store = ConfigStore.instance()
    names = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        name = path.stem
        node = OmegaConf.load(path)
        # The files start with `# @package _global_`; a ConfigStore node states its package here.
        store.store(group="recipe", name=name, node=node, package="_global_")
        names.append(name)
    return names


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    return run_or_exit(cfg)


def run_or_exit(cfg: DictConfig, runner: Callable[[DictConfig], Any] | None = None) -> Any:
    """Run a composed config; an input error prints ``peftrec: error: ...`` and exits with status 2.

    Shared by the entry points that compose a run config (``peftrec``, ``peftrec.evaluate``,
    ``peftrec.fastpaths``); ``runner`` defaults to :func:`peftrec.run.run`.
    """
    if runner is None:
        # Imported here so `--help` and config errors answer without loading torch.
        from peftrec.run import run as runner

    try:
        return runner(cfg)
    except PeftrecError as err:
        # The input is at fault, not the code: the message names the fix; a traceback would bury it.
        print(f"peftrec: error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        close_process_group()


def launched_processes() -> int:
    """How many processes torchrun / ``accelerate launch`` started for this run (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def share_run_folder_time() -> None:
    """Make every process of a multi-process launch resolve ``${now:...}`` to the main process's time.

    Each process composes the Hydra config itself, and run folders are named by the time: processes
    starting a second apart would write to different folders. Hydra registers ``now`` at import; this
    replaces it with one whose clock is the main process's start time, broadcast to the others.
    """
    from datetime import datetime

    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from peftrec.run import use_cpu

    PartialState(cpu=use_cpu())  # starts the process group (gloo on CPU, nccl on GPU)
    started = broadcast_object_list([datetime.now()], from_process=0)[0]
    OmegaConf.register_new_resolver(
        "now", lambda pattern: started.strftime(pattern), use_cache=True, replace=True
    )


def close_process_group() -> None:
    """Tear a multi-process run down cleanly (gloo on CPU can abort at exit otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def optimisation_direction(metric: str) -> str:
    """``maximize`` or ``minimize`` for a metric name: the Optuna sweeper's direction for
    ``task.select_metric`` (``conf/hydra/sweeper/lora_search.yaml``)."""
    from peftrec.metrics import get_metric

    return "maximize" if get_metric(metric).higher_is_better else "minimize"


def main() -> None:
    """Console-script entry point (``peftrec recipe=...``)."""
    register_recipes()
    OmegaConf.register_new_resolver("peftrec_direction", optimisation_direction, replace=True)
    prepare_multiprocess_launch()
    _hydra_main()


def prepare_multiprocess_launch() -> None:
    """Under torchrun / ``accelerate launch`` with several processes: one run folder for all, and only
    the main process writes Hydra's ``.hydra/`` files and log file into it (call before Hydra starts)."""
    if launched_processes() > 1:
        share_run_folder_time()
        if int(os.environ.get("RANK", "0")) != 0:
            sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]


if __name__ == "__main__":
    main()
