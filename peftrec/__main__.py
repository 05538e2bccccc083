"""Command-line entry: ``python -m peftrec recipe=<name> [overrides ...]``.

Recipes live in ``recipes/*.yaml`` (shipped inside the package by a wheel install). Each file is
registered as an option of the ``recipe`` config group, so ``recipe=lora_click`` selects it and Hydra
lists the available recipes when a name is unknown. A user adds recipes of their own with
``--config-dir DIR`` (or ``hydra.searchpath=[file://DIR]``), where ``DIR/recipe/<name>.yaml`` exists.
"""

from __future__ import annotations

import sys

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
    # Imported here so `--help` and config errors answer without loading torch.
    from peftrec.run import run

    try:
        return run(cfg)
    except PeftrecError as err:
        # The input is at fault, not the code: the message names the fix; a traceback would bury it.
        print(f"peftrec: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console-script entry point (``peftrec recipe=...``)."""
    register_recipes()
    _hydra_main()


if __name__ == "__main__":
    main()
