"""peftrec: parameter-efficient fine-tuning of pretrained language models as recommenders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Recommender", "__version__"]

if TYPE_CHECKING:
    from peftrec.recommender import Recommender


def __getattr__(name: str) -> Any:
    # `import peftrec` stays light (no torch): the recommender loads on first use of peftrec.Recommender.
    if name == "Recommender":
        from peftrec.recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'peftrec' has no attribute {name!r}")
