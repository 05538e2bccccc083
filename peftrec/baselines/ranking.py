"""Rank of the target among a catalog's scores, with excluded columns (the user's history)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROW_CHUNK = 1024  # rows per step: bounds the (rows x catalog) boolean temporaries


def rank_of_target(
    scores: np.ndarray, target_columns: np.ndarray, excluded: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """0-based rank of each row's target column among the row's allowed columns (0 = top).

    Ties are counted **pessimistically**: every other allowed column whose score equals the
    target's ranks above it, so rank = #(allowed columns scoring higher) + #(other allowed columns
    scoring the same). A model that scores everything alike therefore gets the worst rank, not
    the best. Excluded columns neither rank above the target nor count. NaN scores count as -inf.

    Args:
        scores: (rows, columns) scores, higher = better.
        target_columns: (rows,) column index of each row's target.
        excluded: Per row, column indices to leave out (e.g. the user's history), or None.

    Returns:
        float64 (rows,) ranks; ``inf`` (a miss for :mod:`peftrec.metrics`) where the target itself is
        excluded.
    """
    scores = np.asarray(scores)
    targets = np.asarray(target_columns, dtype=np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"scores must be (rows, columns) and targets (rows,); got {scores.shape}, {targets.shape}"
        )
    if excluded is not None and len(excluded) != len(targets):
        raise ValueError(f"excluded has {len(excluded)} rows; scores have {len(targets)}")
    ranks = np.empty(len(targets), dtype=np.float64)
    for start in range(0, len(targets), ROW_CHUNK):
        stop = min(start + ROW_CHUNK, len(targets))
        block = np.nan_to_num(scores[start:stop].astype(np.float64), nan=-np.inf)
        rows = np.arange(stop - start)
        allowed = np.ones(block.shape, dtype=bool)
        if excluded is not None:
            for row, columns in enumerate(excluded[start:stop]):
                allowed[row, np.asarray(columns, dtype=np.int64)] = False
        target = block[rows, targets[start:stop]][:, None]
        higher = ((block > target) & allowed).sum(axis=1)
        tied = ((block == target) & allowed).sum(axis=1) - 1  # minus the target itself
        ranks[start:stop] = np.where(allowed[rows, targets[start:stop]], higher + tied, np.inf)
    return ranks
