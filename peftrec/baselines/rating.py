"""Rating baselines: means over the training ratings and biased MF, one prediction per example.

Every prediction is clipped to the 1-5 star scale, as the LM's expected digit is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from peftrec.baselines.mf import fit_biased_mf

RATING_RANGE = (1.0, 5.0)


def history_means(examples: pd.DataFrame, fallback: float) -> np.ndarray:
    """Mean of each example's ``history_ratings``; ``fallback`` for an empty history."""
    return np.array(
        [float(np.mean(r)) if len(r) else fallback for r in examples["history_ratings"]], dtype=np.float64
    )


def mean_by(train_events: pd.DataFrame, key: str, ids: pd.Series, fallback: float) -> np.ndarray:
    """Mean training rating per ``key`` value (user or item) for each of ``ids``; ``fallback`` when unseen."""
    means = train_events.groupby(key, sort=False)["rating"].mean()
    return means.reindex(pd.Index(ids, dtype=object)).fillna(fallback).to_numpy(dtype=np.float64)


def rating_baseline_predictions(
    train_events: pd.DataFrame, examples: pd.DataFrame, *, seed: int = 0, mf_backend: str = "auto"
) -> dict[str, np.ndarray]:
    """Predict each example's rating with the classical rating baselines.

    - ``global_mean``: mean of all training ratings;
    - ``item_mean``: the target item's mean training rating (global mean when unseen);
    - ``user_mean``: the user's mean training rating (global mean when unseen);
    - ``user_history_mean``: mean of the example's ``history_ratings`` (global mean when empty);
    - ``user_mean_plus_item_offset``: history mean + (item mean - global mean), offset 0 for an unseen item;
    - ``biased_mf``: SVD-style biased MF (:mod:`peftrec.baselines.mf`, Surprise's defaults).

    Args:
        train_events: The ratings the baselines may learn from (``user_id``, ``item_id``, ``rating``,
            ``timestamp``), leakage-free for ``examples``.
        examples: ``user_id``, ``item_id`` (the target), ``history_ratings`` (list of floats).
        seed: Seed of the MF.
        mf_backend: ``"auto"`` (Surprise when installed), ``"surprise"`` or ``"numpy"``.

    Returns:
        Baseline name -> float64 array, one prediction per example, clipped to [1, 5].
    """
    global_mean = float(train_events["rating"].mean())
    item_mean = mean_by(train_events, "item_id", examples["item_id"], np.nan)
    history_mean = history_means(examples, global_mean)
    mf = fit_biased_mf(train_events, seed=seed, backend=mf_backend)
    predictions = {
        "global_mean": np.full(len(examples), global_mean),
        "item_mean": np.where(np.isnan(item_mean), global_mean, item_mean),
        "user_mean": mean_by(train_events, "user_id", examples["user_id"], global_mean),
        "user_history_mean": history_mean,
        "user_mean_plus_item_offset": history_mean + np.nan_to_num(item_mean - global_mean, nan=0.0),
        "biased_mf": mf.predict(examples["user_id"], examples["item_id"]),
    }
    return {name: np.clip(p, *RATING_RANGE) for name, p in predictions.items()}
