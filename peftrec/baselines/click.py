"""Click baselines learned from the training ratings: biased MF and a logistic regression.

Both return a score per example, higher = more likely liked (for AUC; the LR's is a probability).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

from peftrec.baselines.mf import fit_biased_mf
from peftrec.baselines.rating import history_means, mean_by
from peftrec.data import sort_events


def click_model_scores(
    train_events: pd.DataFrame,
    examples: pd.DataFrame,
    *,
    like_threshold: float = 3.0,
    seed: int = 0,
    mf_backend: str = "auto",
) -> dict[str, np.ndarray]:
    """Score each example with the learned click baselines.

    - ``biased_mf``: the MF's predicted rating, unclipped (clipping would tie every prediction above
      5 and blur the ranking that AUC measures);
    - ``logistic_regression``: p(rating > like_threshold) from :func:`logistic_regression_scores`.

    Args:
        train_events: The ratings the baselines may learn from, leakage-free for ``examples``.
        examples: ``user_id``, ``item_id`` (the target), ``history_ratings``.
        like_threshold: A rating above it is a like (TALLRec: > 3).
        seed: Seed of the MF and of the LR's solver.
        mf_backend: ``"auto"``, ``"surprise"`` or ``"numpy"`` (:func:`peftrec.baselines.mf.fit_biased_mf`).

    Returns:
        Baseline name -> float64 array, one score per example.
    """
    mf = fit_biased_mf(train_events, seed=seed, backend=mf_backend)
    return {
        "biased_mf": mf.predict(examples["user_id"], examples["item_id"]),
        "logistic_regression": logistic_regression_scores(
            train_events, examples, like_threshold=like_threshold, seed=seed
        ),
    }


def logistic_regression_scores(
    train_events: pd.DataFrame, examples: pd.DataFrame, *, like_threshold: float = 3.0, seed: int = 0
) -> np.ndarray:
    """p(like) from an L2 logistic regression on one-hot user + one-hot item + two mean-rating features.

    Features, the same for a training rating and an example, and never containing the rating to predict:

    - one-hot user id and one-hot item id (all zero for an id not in ``train_events``, so unknown users
      and items fall back on the two numeric features and the intercept);
    - the user's history mean: for an example the mean of its ``history_ratings``; for a training
      rating the mean of the user's earlier training ratings (canonical order), i.e. what its history
      would have been. Global mean when there is none;
    - the item's mean training rating: for a training rating leave-one-out (without its own rating,
      which would leak the label); global mean for an item with no other rating.

    The numeric features are centred on the global mean (ratings are already on a unit scale). The
    default ``C=1`` ridge keeps the one-hot weights of users and items with few ratings small.

    Args:
        train_events: Training ratings; label = ``rating > like_threshold``.
        examples: ``user_id``, ``item_id``, ``history_ratings``.
        like_threshold: Like threshold.
        seed: ``random_state`` of the solver (lbfgs is deterministic anyway).

    Returns:
        p(like) per example; the training like rate when the training labels hold one class only.
    """
    events = sort_events(train_events)
    labels = (events["rating"].to_numpy() > like_threshold).astype(int)
    global_mean = float(events["rating"].mean())
    if labels.min() == labels.max():
        return np.full(len(examples), float(labels[0]))

    ratings = events["rating"]
    by_user = ratings.groupby(events["user_id"], sort=False)
    earlier_n = by_user.cumcount().to_numpy()
    earlier_sum = (by_user.cumsum() - ratings).to_numpy()
    by_item = ratings.groupby(events["item_id"], sort=False)
    item_n = by_item.transform("count").to_numpy()
    others_sum = (by_item.transform("sum") - ratings).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        train_history = np.where(earlier_n > 0, earlier_sum / earlier_n, global_mean)
        train_item = np.where(item_n > 1, others_sum / (item_n - 1), global_mean)

    encoder = OneHotEncoder(handle_unknown="ignore")
    encoder.fit(events[["user_id", "item_id"]].astype(str))

    def design(frame: pd.DataFrame, history: np.ndarray, item: np.ndarray) -> sp.csr_matrix:
        numeric = np.column_stack([history, item]) - global_mean
        one_hot = encoder.transform(frame[["user_id", "item_id"]].astype(str))
        return sp.hstack([one_hot, sp.csr_matrix(numeric)], format="csr")

    model = LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
    model.fit(design(events, train_history, train_item), labels)
    example_history = history_means(examples, global_mean)
    example_item = mean_by(events, "item_id", examples["item_id"], global_mean)
    return model.predict_proba(design(examples, example_history, example_item))[:, 1]
