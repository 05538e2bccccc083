"""Where the shipped configs live, whichever way peftrec was installed."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """Return the folder of shipped files ``conf`` or ``recipes``.

    A wheel (``pip install .``) carries them inside the package (``peftrec/conf``); a source checkout
    (``pip install -e .``, or running from the repo) keeps them at the top of the repo.

    Args:
        name: ``"conf"`` or ``"recipes"``.

    Returns:
        The existing folder.
    """
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"peftrec's {name}/ folder is missing next to {_PACKAGE_DIR}: reinstall peftrec")


CONF_DIR = shipped_dir("conf")
RECIPES_DIR = shipped_dir("recipes")
# Beside a saved head's own files: the resolved recipe that trained it (base model, task, prompt, label
# words, protocol), so an adapter folder or Hub repo is usable without the recipe that made it.
RECIPE_FILE = "peftrec_recipe.yaml"
