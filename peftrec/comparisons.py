"""Classical baselines on the very split and rows an LM run is tested on, as metric inputs.

Each task's baselines answer in that task's terms (click scores, rating predictions, ranks of the
target), so :func:`peftrec.metrics.compute` scores them exactly like the LM. Models that learn
(matrix factorisation, logistic regression, SASRec) learn from :func:`peftrec.data.training_events`:
what the protocol lets a model know before the test period, never a held-out event.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from peftrec.baselines import (
    NEXT_ITEM_BASELINES,
    click_baseline_scores,
    click_model_scores,
    next_item_scores,
    rank_of_target,
    rating_baseline_predictions,
)
from peftrec.data import ExampleSplit, RecData, training_events
from peftrec.data.seen import sequences_before
from peftrec.errors import PeftrecError
from peftrec.tasks.generative import candidate_ranks

RATING_SCALE = (1.0, 5.0)
# The numpy matrix factorisation, installed everywhere: the same numbers whether or not the optional
# scikit-surprise is present (it matches Surprise's published RMSE, benchmarks/README.md).
MF_BACKEND = "numpy"


def baseline_inputs(
    task_name: str,
    names: Sequence[str],
    data: RecData,
    split: ExampleSplit,
    examples: pd.DataFrame,
    *,
    like_threshold: float = 3.0,
    top_k: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Metric inputs of each requested baseline on ``examples`` (rows of ``split``'s test).

    Args:
        task_name: ``"click"``, ``"rating"`` or ``"generative"``.
        names: baselines to run (``task.baselines``); an unknown name is an error listing the known ones.
        data: the dataset (all interactions: the online "earlier mean" baselines use what precedes
            each event; the learned ones use only :func:`training_events`).
        split: the split the run uses.
        examples: the rows to score (test, with ``seen_item_ids`` / ``candidate_item_ids`` for ranking).
        like_threshold: click label threshold.
        top_k: catalog ranking only: the LM's list length; a baseline's rank at or past it counts as a
            miss, so that MRR means the same (MRR over a top-K list) for both.
        seed: seeds the learned baselines.

    Returns:
        Baseline name -> keyword inputs for :func:`peftrec.metrics.compute`.
    """
    if not names:
        return {}
    train = training_events(data.interactions, split)
    if task_name == "click":
        outputs = {**click_baseline_scores(data.interactions, examples)}
        if set(names) & {"biased_mf", "logistic_regression"}:
            outputs.update(
                click_model_scores(
                    train, examples, like_threshold=like_threshold, seed=seed, mf_backend=MF_BACKEND
                )
            )
        inputs = {name: {"y_true": examples["label"].to_numpy(), "y_score": v} for name, v in outputs.items()}
    elif task_name == "rating":
        online = {
            k: np.clip(v, *RATING_SCALE)
            for k, v in click_baseline_scores(data.interactions, examples).items()
        }
        # Online earlier-rating means (REFERENCES.md's trivial baselines) beside models learned from the
        # training events; the learned history mean is the same number as the online one.
        learned = rating_baseline_predictions(train, examples, seed=seed, mf_backend=MF_BACKEND)
        learned["user_mean_plus_train_item_offset"] = learned.pop("user_mean_plus_item_offset")
        truth = examples["rating"].to_numpy(dtype=np.float64)
        inputs = {name: {"y_true": truth, "y_pred": v} for name, v in {**learned, **online}.items()}
    elif task_name == "generative":
        item_ids = data.items["item_id"].astype(str).tolist()
        # Sequential models read the user's whole earlier sequence (SASRec: its last 50), not only the
        # history_len items the LM's prompt shows.
        full_history = examples.assign(history_item_ids=sequences_before(data.interactions, examples))
        wanted = [n for n in names if n in NEXT_ITEM_BASELINES]
        scores = next_item_scores(train, full_history, item_ids, seed=seed, baselines=wanted)
        inputs = {}
        for name, matrix in scores.items():
            ranks = next_item_ranks(matrix, examples, item_ids)
            if top_k is not None and "candidate_item_ids" not in examples.columns:
                ranks[ranks >= top_k] = np.inf
            inputs[name] = {"ranks": ranks}
    else:
        raise PeftrecError(f"no baselines for task {task_name!r}")
    unknown = sorted(set(names) - set(inputs))
    if unknown:
        raise PeftrecError(
            f"unknown baseline(s) {unknown} for the {task_name} task: task.baselines takes {sorted(inputs)}"
        )
    return {name: inputs[name] for name in names}


def next_item_ranks(scores: np.ndarray, examples: pd.DataFrame, item_ids: Sequence[str]) -> np.ndarray:
    """0-based rank of each example's target under a baseline's catalog scores.

    With candidate lists the target is ranked among its candidates; otherwise over the whole catalog
    with the user's earlier items (``seen_item_ids``) left out. Ties count against the target, as for
    the LM.
    """
    column = {item: k for k, item in enumerate(item_ids)}
    targets = np.array([column[str(i)] for i in examples["item_id"]], dtype=np.int64)
    if "candidate_item_ids" in examples.columns:
        columns = np.array([[column[i] for i in c] for c in examples["candidate_item_ids"]])
        rows = np.arange(len(examples))[:, None]
        return candidate_ranks(scores[rows, columns], examples["target_position"].to_numpy())
    excluded = None
    if "seen_item_ids" in examples.columns:
        excluded = [
            np.array([column[i] for i in seen if i in column], dtype=np.int64)
            for seen in examples["seen_item_ids"]
        ]
    return rank_of_target(scores, targets, excluded)
