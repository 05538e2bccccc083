"""Evaluate a saved head without its recipe: ``python -m peftrec.evaluate adapter=<folder or owner/name>``.

The head's folder carries the resolved config that trained it (``peftrec_recipe.yaml``: base model, task
with its template and label words, data and split settings). That config becomes the run's starting
point and the normal runner evaluates the head on it (``trainer.max_steps=0``), so the run folder and
``result.json`` are the usual ones, under ``outputs/evaluate/<time>/``.

Overrides work as for ``python -m peftrec``, and beat the saved config::

    python -m peftrec.evaluate adapter=outputs/lora_click/2026-11-24_03-59-41/adapter
    python -m peftrec.evaluate adapter=you/peftrec-lora-click data=movielens_1m      # another dataset
    python -m peftrec.evaluate adapter=you/peftrec-lora-click data.protocol=full     # another split
    python -m peftrec.evaluate adapter=... --cfg job                                 # print the config

How: each section of the saved config (``model``, ``data``, ``task``, ``peft``, ``trainer``) is
registered as the option ``adapter_recipe`` of its config group and chosen before the command line's
overrides, so ``data=movielens_1m`` on the command line replaces the saved data section with
``conf/data/movielens_1m.yaml`` while ``data.protocol=full`` edits the saved one.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from peftrec.__main__ import prepare_multiprocess_launch, run_or_exit
from peftrec.adapters import adapter_recipe, resolve_adapter
from peftrec.errors import PeftrecError
from peftrec.paths import CONF_DIR

# The option name under which the saved config's sections are registered (not `adapter`: that is the
# bottleneck head's option of the peft group). The run-wide values are the recipe `evaluate`, the name
# result.json records as the run's recipe.
OPTION = "adapter_recipe"
RECIPE = "evaluate"
RUN_DIR = "hydra.run.dir=outputs/evaluate/${now:%Y-%m-%d_%H-%M-%S}"
USAGE = "python -m peftrec.evaluate adapter=<adapter folder or Hub repo owner/name> [overrides ...]"


def register_recipe(recipe: DictConfig) -> list[str]:
    """Register a saved run config as Hydra options, for :func:`main` to select.

    Each section that is a config group of ``conf/`` becomes the option :data:`OPTION` of that group;
    the remaining top-level values (``seed``, ``run_model``, ...) become the ``recipe`` option
    :data:`RECIPE`, with an ``adapter`` key so ``adapter=...`` can be set whether or not the base
    config has one.

    Args:
        recipe: the config from :func:`peftrec.adapters.adapter_recipe`.

    Returns:
        The overrides that select them (``model=adapter_recipe``, ..., ``recipe=evaluate``), to go
        before the user's own.
    """
    store = ConfigStore.instance()
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    top: dict = {"adapter": None}
    selects = []
    for key, value in recipe.items():
        if key in groups and isinstance(value, DictConfig):
            store.store(group=str(key), name=OPTION, node=value)
            selects.append(f"{key}={OPTION}")
        elif key != "adapter":
            top[str(key)] = value
    store.store(group="recipe", name=RECIPE, node=OmegaConf.create(top), package="_global_")
    return [*selects, f"recipe={RECIPE}"]


def evaluation_argv(argv: list[str]) -> list[str]:
    """The command line Hydra gets: the saved config's options, then the user's overrides, then
    ``trainer.max_steps=0`` (evaluation only), then the user's flags (``--cfg job``, ``-m``, ...).

    Args:
        argv: the user's arguments (``sys.argv[1:]``), holding ``adapter=...``.

    Returns:
        The arguments for the Hydra app, without the program name.

    Raises:
        PeftrecError: no ``adapter=``, a nonzero ``trainer.max_steps``, an unusable adapter.
    """
    overrides = get_args_parser().parse_args(argv).overrides
    parsed = OverridesParser.create().parse_overrides(overrides)
    sources = [o.value() for o in parsed if o.key_or_group == "adapter"]
    if not sources or sources[-1] in (None, ""):
        raise PeftrecError(f"name the head to evaluate: {USAGE}")
    steps = [o.value() for o in parsed if o.key_or_group == "trainer.max_steps"]
    if steps and steps[-1] != 0:
        raise PeftrecError(
            f"evaluate does not train (trainer.max_steps={steps[-1]}): drop trainer.max_steps. To train a "
            "saved head further, run python -m peftrec recipe=<name> adapter=<folder or owner/name>"
        )
    recipe = adapter_recipe(resolve_adapter(str(sources[-1])))
    flags = _without(argv, overrides)
    return [*register_recipe(recipe), RUN_DIR, *overrides, "trainer.max_steps=0", *flags]


def _without(argv: list[str], overrides: list[str]) -> list[str]:
    """``argv`` minus the contiguous run of overrides argparse took from it (the rest are flags)."""
    n = len(overrides)
    for start in range(len(argv) - n + 1):
        if argv[start : start + n] == overrides:
            return argv[:start] + argv[start + n :]
    return [a for a in argv if a not in overrides]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    return run_or_exit(cfg)


def _fail(err: PeftrecError) -> NoReturn:
    # The input is at fault, not the code: the message names the fix; a traceback would bury it.
    print(f"peftrec: error: {err}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    """Console entry point: ``python -m peftrec.evaluate adapter=... [overrides ...]``."""
    argv = sys.argv[1:]
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    try:
        arguments = evaluation_argv(argv)
    except PeftrecError as err:
        _fail(err)
    # hydra.main reads the command line from sys.argv.
    sys.argv = [sys.argv[0], *arguments]
    prepare_multiprocess_launch()
    _hydra_main()


if __name__ == "__main__":
    main()
