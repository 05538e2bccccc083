"""Next-item baselines: a score for every catalog item after each example's history."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from peftrec.baselines.sasrec import SASRecConfig, fit_sasrec

NEXT_ITEM_BASELINES = ("popularity", "sasrec")


def popularity_counts(train_events: pd.DataFrame, item_ids: Sequence[str]) -> np.ndarray:
    """Number of training interactions of each catalog item (0 when it has none), float32."""
    counts = train_events["item_id"].value_counts()
    return counts.reindex(pd.Index(item_ids, dtype=object)).fillna(0).to_numpy(dtype=np.float32)


def next_item_scores(
    train_events: pd.DataFrame,
    examples: pd.DataFrame,
    item_ids: Sequence[str],
    *,
    seed: int = 0,
    baselines: Sequence[str] = NEXT_ITEM_BASELINES,
    sasrec: SASRecConfig | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Score every catalog item for each example (higher = recommend first).

    The caller excludes the history items and ranks (:func:`peftrec.baselines.rank_of_target`).

    - ``popularity``: the item's number of training interactions, the same row for every example;
    - ``sasrec``: SASRec trained on each user's ``train_events`` in canonical event order; an example's
      scores are the dot products of the final hidden state of its own ``history_item_ids`` (the last
      ``max_len`` of them) with every item embedding; a row of zeros when the history is empty.

    Args:
        train_events: The interactions the baselines may learn from, leakage-free for ``examples``.
        examples: ``history_item_ids`` (list of item ids, oldest first) per example.
        item_ids: The catalog: one score column per item, in this order.
        seed: Seed of SASRec's training.
        baselines: Which to compute (a subset of ``NEXT_ITEM_BASELINES``).
        sasrec: SASRec hyperparameters (:class:`SASRecConfig` defaults when omitted).
        progress: Show SASRec's progress bar.

    Returns:
        Baseline name -> float32 array (len(examples), len(item_ids)).
    """
    unknown = set(baselines) - set(NEXT_ITEM_BASELINES)
    if unknown:
        raise ValueError(f"unknown next-item baselines {sorted(unknown)}; known: {list(NEXT_ITEM_BASELINES)}")
    scores = {}
    if "popularity" in baselines:
        scores["popularity"] = np.tile(popularity_counts(train_events, item_ids), (len(examples), 1))
    if "sasrec" in baselines:
        model = fit_sasrec(train_events, item_ids, config=sasrec, seed=seed, progress=progress)
        scores["sasrec"] = model.score(list(examples["history_item_ids"]), item_ids)
    return scores
