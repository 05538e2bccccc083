"""Baselines computed on the very splits the LM sees, in the same result format.

- :mod:`~peftrec.baselines.earlier`: trivial click baselines from strictly earlier ratings
  (``click_baseline_scores``, used by the runner);
- :mod:`~peftrec.baselines.rating`: rating predictions (means, biased MF);
- :mod:`~peftrec.baselines.click`: learned click scores (biased MF, logistic regression);
- :mod:`~peftrec.baselines.next_item`: full-catalog next-item scores (popularity, SASRec);
- :mod:`~peftrec.baselines.ranking`: the target's rank among allowed catalog columns.

The classical models learn only from ``train_events``, which the caller computes leakage-free from the
split. Sanity numbers on MovieLens-100K: ``python -m peftrec.baselines`` (benchmarks/README.md).
"""

from peftrec.baselines.click import click_model_scores, logistic_regression_scores
from peftrec.baselines.earlier import click_baseline_scores, earlier_means
from peftrec.baselines.mf import BiasedMF, MFHyper, fit_biased_mf, surprise_available
from peftrec.baselines.next_item import NEXT_ITEM_BASELINES, next_item_scores, popularity_counts
from peftrec.baselines.ranking import rank_of_target
from peftrec.baselines.rating import rating_baseline_predictions
from peftrec.baselines.sasrec import FittedSASRec, SASRec, SASRecConfig, fit_sasrec

__all__ = [
    "NEXT_ITEM_BASELINES",
    "BiasedMF",
    "FittedSASRec",
    "MFHyper",
    "SASRec",
    "SASRecConfig",
    "click_baseline_scores",
    "click_model_scores",
    "earlier_means",
    "fit_biased_mf",
    "fit_sasrec",
    "logistic_regression_scores",
    "next_item_scores",
    "popularity_counts",
    "rank_of_target",
    "rating_baseline_predictions",
    "surprise_available",
]
