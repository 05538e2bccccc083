"""Evaluation metrics, each declaring its direction and its inputs (numpy / scikit-learn only).

Inputs, by name (scikit-learn's; pass them to :func:`compute` as keyword arguments):

- ``y_true``: click labels (0/1), or true ratings.
- ``y_score``: click: predicted probability of the positive class (p(yes)), one per example.
- ``y_pred``: predicted ratings.
- ``ranks``: the **0-based rank of the target item** in the list recommended to each user (0 = top);
  ``None``, ``NaN`` or ``inf`` means the target was not in the list (it counts as a miss). Turn ranked
  lists into ranks with :func:`target_ranks`.
- ``valid``: per output, whether it named a real item / a legal candidate (generative tasks).

Names for :func:`compute`: ``auc``, ``logloss``, ``accuracy``, ``rmse``, ``mae``, ``mrr``,
``valid_ratio``, and cut-offs ``hit@K``, ``ndcg@K``, ``mrr@K`` for any integer K (``ndcg@10``).

Undefined values come back as NaN with a logged warning rather than an exception, so that a run
still writes its record: AUC when the labels hold one class only, and any click metric whose scores
contain NaN (a diverged model). Wrong input shapes raise ``ValueError``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from peftrec.errors import PeftrecError

logger = logging.getLogger(__name__)

LOGLOSS_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps]; float32 model outputs reach 0 and 1


@dataclass(frozen=True)
class Metric:
    """A metric and what it needs.

    Attributes:
        name: Registry name (``"ndcg@10"``).
        fn: Called with the inputs named in ``needs``, as keyword arguments; returns a float.
        higher_is_better: Direction, for early stopping and for reports.
        needs: Input names (module docstring).
    """

    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    needs: tuple[str, ...]

    def __call__(self, **inputs: Any) -> float:
        """Compute from keyword inputs; extra inputs are ignored."""
        missing = [n for n in self.needs if n not in inputs]
        if missing:
            raise ValueError(f"metric {self.name!r} needs inputs {list(self.needs)}; missing {missing}")
        return float(self.fn(**{n: inputs[n] for n in self.needs}))

    def better(self, a: float, b: float) -> bool:
        """Return True when value ``a`` is strictly better than ``b`` (NaN is never better)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.higher_is_better else a < b


# --- click ---------------------------------------------------------------------------------------


def auc(y_true: Sequence[int], y_score: Sequence[float]) -> float:
    """Area under the ROC curve: the share of (positive, negative) pairs ordered correctly by score,
    ties counting one half.

    Args:
        y_true: 0/1 per example.
        y_score: Positive-class score per example.

    Returns:
        AUC in [0, 1]; NaN (with a warning) when only one class is present or a score is NaN.
    """
    y, s = _labels_and_scores(y_true, y_score)
    if _has_nan(s, "auc"):
        return math.nan
    if len(np.unique(y)) < 2:
        logger.warning(
            "auc is undefined with a single class in the labels (%d examples): returning NaN", len(y)
        )
        return math.nan
    return float(roc_auc_score(y, s))


def logloss(y_true: Sequence[int], y_score: Sequence[float], eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to ``[eps, 1 - eps]``.

    Args:
        y_true: 0/1 per example.
        y_score: Positive-class probability per example.
        eps: Clipping bound, so that a confident mistake costs ``-log(eps)`` instead of infinity.

    Returns:
        Mean log loss; NaN (with a warning) when a score is NaN.
    """
    y, p = _labels_and_scores(y_true, y_score)
    if _has_nan(p, "logloss"):
        return math.nan
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def accuracy(y_true: Sequence[int], y_score: Sequence[float], threshold: float = 0.5) -> float:
    """Share of examples where ``y_score >= threshold`` matches ``y_true == 1``.

    Returns:
        Accuracy in [0, 1]; NaN (with a warning) when a score is NaN.
    """
    y, s = _labels_and_scores(y_true, y_score)
    if _has_nan(s, "accuracy"):
        return math.nan
    return float(np.mean((s >= threshold) == (y == 1)))


# --- rating --------------------------------------------------------------------------------------


def rmse(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Root mean squared error between true and predicted ratings."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Mean absolute error between true and predicted ratings."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


# --- ranking -------------------------------------------------------------------------------------


def hit_at_k(ranks: Sequence[float | None], k: int) -> float:
    """Share of users whose target is in the top ``k`` (0-based rank < k)."""
    r = _ranks(ranks)
    return float(np.mean(r < k))


def ndcg_at_k(ranks: Sequence[float | None], k: int) -> float:
    """NDCG@k with one relevant item per user: ``1 / log2(rank + 2)`` if ``rank < k`` else 0
    (the ideal DCG is 1: the target at rank 0)."""
    r = _ranks(ranks)
    gains = np.zeros_like(r)
    hit = r < k
    gains[hit] = 1.0 / np.log2(r[hit] + 2.0)
    return float(np.mean(gains))


def mrr(ranks: Sequence[float | None], k: int | None = None) -> float:
    """Mean reciprocal rank ``1 / (rank + 1)``; a missing target (or one at rank >= k) counts 0."""
    r = _ranks(ranks)
    recip = np.where(np.isfinite(r), 1.0 / (r + 1.0), 0.0)
    if k is not None:
        recip[r >= k] = 0.0
    return float(np.mean(recip))


def valid_ratio(valid: Sequence[bool]) -> float:
    """Share of outputs that are legal (a real item, or one of the offered candidates)."""
    v = np.asarray(valid, dtype=bool)
    _require_nonempty(v)
    return float(np.mean(v))


def target_ranks(ranked: Iterable[Sequence[Any]], targets: Iterable[Any]) -> np.ndarray:
    """Turn ranked lists into the ``ranks`` input: the target's 0-based position, ``inf`` if absent.

    Args:
        ranked: Per user, recommended items best first.
        targets: Per user, the held-out item.

    Returns:
        float array of ranks.
    """
    out = []
    for items, target in zip(ranked, targets, strict=True):
        items = list(items)
        out.append(float(items.index(target)) if target in items else math.inf)
    return np.asarray(out, dtype=float)


# --- registry ------------------------------------------------------------------------------------

METRICS: dict[str, Metric] = {
    "auc": Metric("auc", auc, True, ("y_true", "y_score")),
    "logloss": Metric("logloss", logloss, False, ("y_true", "y_score")),
    "accuracy": Metric("accuracy", accuracy, True, ("y_true", "y_score")),
    "rmse": Metric("rmse", rmse, False, ("y_true", "y_pred")),
    "mae": Metric("mae", mae, False, ("y_true", "y_pred")),
    "mrr": Metric("mrr", mrr, True, ("ranks",)),
    "valid_ratio": Metric("valid_ratio", valid_ratio, True, ("valid",)),
}

# name@K metrics, built on demand by get_metric.
_AT_K: dict[str, tuple[Callable[..., float], bool]] = {
    "hit": (hit_at_k, True),
    "ndcg": (ndcg_at_k, True),
    "mrr": (mrr, True),
}
_AT_K_NAME = re.compile(r"^(\w+)@(\d+)$")


def get_metric(name: str) -> Metric:
    """Return the metric called ``name`` (``"auc"``, ``"ndcg@10"``, ...).

    Raises:
        PeftrecError: unknown name; the message lists the known ones.
    """
    if name in METRICS:
        return METRICS[name]
    match = _AT_K_NAME.match(name)
    if match and match.group(1) in _AT_K and int(match.group(2)) > 0:
        fn, higher = _AT_K[match.group(1)]
        return Metric(name, partial(fn, k=int(match.group(2))), higher, ("ranks",))
    known = [*METRICS, *(f"{n}@K" for n in _AT_K)]
    raise PeftrecError(
        f"unknown metric {name!r} (task.metrics / task.select_metric); known: {known} (K a positive integer)"
    )


def compute(names: Iterable[str], **inputs: Any) -> dict[str, float]:
    """Compute several metrics from shared inputs.

    Args:
        names: Metric names (:func:`get_metric`).
        **inputs: The inputs they need (module docstring), e.g. ``y_true=..., y_score=...``.

    Returns:
        ``{name: value}`` in the order given.
    """
    return {name: get_metric(name)(**inputs) for name in names}


def bootstrap_interval(
    name: str,
    groups: Sequence[Any],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    **inputs: Any,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric, resampling whole groups (users) with replacement.

    Resampling users, not examples, because examples of one user are correlated: on TALLRec's
    ML-100K test set 5 of 34 users make 68% of the examples (REFERENCES.md).

    Args:
        name: Metric name.
        groups: Group key (user id) per example, aligned with the inputs.
        n_boot: Bootstrap replicates.
        level: Coverage of the interval.
        seed: RNG seed (same seed, same interval).
        **inputs: The metric's inputs, one value per example.

    Returns:
        ``(low, high)``; replicates where the metric is NaN (one class drawn) are left out.
    """
    metric = get_metric(name)
    arrays = {n: np.asarray(inputs[n]) for n in metric.needs}
    keys, codes = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(len(keys))]
    rng = np.random.default_rng(seed)
    values = []
    with _quiet():  # one-class replicates would each log a warning
        for _ in range(n_boot):
            rows = np.concatenate([members[g] for g in rng.integers(0, len(keys), len(keys))])
            values.append(metric(**{n: a[rows] for n, a in arrays.items()}))
    finite = np.asarray(values)[~np.isnan(values)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


@contextmanager
def _quiet():
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


# --- input checks --------------------------------------------------------------------------------


def _pair(a: Sequence, b: Sequence) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"inputs differ in length: {x.size} vs {y.size}")
    _require_nonempty(x)
    return x, y


def _labels_and_scores(labels: Sequence, scores: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y, s = _pair(labels, scores)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"click labels must be 0 or 1; got values {np.unique(y)[:5].tolist()}")
    return y, s


def _ranks(ranks: Sequence[float | None]) -> np.ndarray:
    r = np.array([math.inf if v is None else v for v in ranks], dtype=float)
    _require_nonempty(r)
    r[np.isnan(r)] = math.inf
    if (r < 0).any():
        raise ValueError("ranks are 0-based positions (0 = top); got a negative rank")
    return r


def _require_nonempty(x: np.ndarray) -> None:
    if x.size == 0:
        raise ValueError("metric inputs are empty")


def _has_nan(scores: np.ndarray, name: str) -> bool:
    bad = int(np.isnan(scores).sum())
    if bad:
        logger.warning(
            "%s: %d of %d scores are NaN (did training diverge?): returning NaN", name, bad, scores.size
        )
    return bool(bad)
