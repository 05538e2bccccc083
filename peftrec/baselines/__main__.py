"""Sanity numbers of the classical baselines on MovieLens-100K (benchmarks/README.md).

    python -m peftrec.baselines [--epochs N] [--seed S] [--threads T]

1. Rating: a seeded random 80/20 split of the ratings; test RMSE / MAE of each rating baseline, and of
   biased MF with both backends (Surprise only when installed).
2. Next item: leave-one-out per user in canonical event order (last event = test target, second-last =
   validation, the rest train); history = the up to 50 items before the target; full-catalog HR@10 /
   NDCG@10, excluding every item the user rated before the target (train items and the validation item).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from peftrec import metrics
from peftrec.assets import resolve_dataset
from peftrec.baselines.mf import fit_biased_mf, surprise_available
from peftrec.baselines.next_item import next_item_scores
from peftrec.baselines.ranking import rank_of_target
from peftrec.baselines.rating import rating_baseline_predictions
from peftrec.baselines.sasrec import SASRecConfig
from peftrec.data import load_recdata


def rating_report(events: pd.DataFrame, seed: int) -> None:
    order = np.random.default_rng(seed).permutation(len(events))
    test_rows = order[: len(events) // 5]
    train, test = events.drop(index=events.index[test_rows]), events.iloc[test_rows]
    user_history = train.groupby("user_id")["rating"].agg(list)
    test = test.assign(history_ratings=user_history.reindex(test["user_id"]).tolist())
    test["history_ratings"] = [r if isinstance(r, list) else [] for r in test["history_ratings"]]
    predictions = rating_baseline_predictions(train, test, seed=seed, mf_backend="numpy")
    del predictions["biased_mf"]  # timed per backend below
    for backend in ("numpy", "surprise") if surprise_available() else ("numpy",):
        start = time.perf_counter()
        mf = fit_biased_mf(train, seed=seed, backend=backend)
        predictions[f"biased_mf[{backend}] ({time.perf_counter() - start:.1f} s)"] = np.clip(
            mf.predict(test["user_id"], test["item_id"]), 1, 5
        )
    for name, pred in predictions.items():
        print(f"rating  {name:<40} {metrics.compute(['rmse', 'mae'], y_true=test['rating'], y_pred=pred)}")


def next_item_report(events: pd.DataFrame, item_ids: list[str], seed: int, epochs: int | None) -> None:
    position_from_end = events.groupby("user_id").cumcount(ascending=False)
    train = events[position_from_end >= 2]
    before_test = events[position_from_end >= 1].groupby("user_id")["item_id"].agg(list)
    test = events[position_from_end == 0].set_index("user_id")
    examples = pd.DataFrame(
        {
            "history_item_ids": [before_test[u][-50:] for u in test.index],
            "item_id": test["item_id"].to_numpy(),
        }
    )
    column = {item: k for k, item in enumerate(item_ids)}
    excluded = [np.array([column[i] for i in before_test[u]]) for u in test.index]
    targets = np.array([column[i] for i in examples["item_id"]])
    config = SASRecConfig() if epochs is None else SASRecConfig(epochs=epochs)
    start = time.perf_counter()
    scores = next_item_scores(train, examples, item_ids, seed=seed, sasrec=config)
    print(f"next-item: {len(examples)} users, {len(item_ids)} items, {time.perf_counter() - start:.0f} s")
    for name, matrix in scores.items():
        ranks = rank_of_target(matrix, targets, excluded)
        print(f"next-item  {name:<12} {metrics.compute(['hit@10', 'ndcg@10'], ranks=ranks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="SASRec epochs (default: SASRecConfig)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's); 1 avoids stalls on a busy CPU",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_recdata(resolve_dataset("movielens-100k"))  # interactions in canonical event order
    rating_report(data.interactions, args.seed)
    next_item_report(data.interactions, data.items["item_id"].tolist(), args.seed, args.epochs)


if __name__ == "__main__":
    main()
