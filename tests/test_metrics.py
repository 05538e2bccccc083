"""Metrics against values counted by hand."""

import logging
import math

import numpy as np
import pytest

from peftrec.errors import PeftrecError
from peftrec.metrics import (
    METRICS,
    accuracy,
    auc,
    bootstrap_interval,
    compute,
    get_metric,
    hit_at_k,
    logloss,
    mae,
    mrr,
    ndcg_at_k,
    rmse,
    target_ranks,
    valid_ratio,
)


def test_auc_counts_ordered_pairs_with_ties_as_half():
    labels = [1, 0, 1, 0, 1]
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    # Positives 0.9, 0.8, 0.1 against negatives 0.8, 0.3:
    # 0.9 beats both (2); 0.8 ties 0.8 (0.5) and beats 0.3 (1); 0.1 beats neither (0).
    # 3.5 correctly ordered pairs out of 3 * 2 = 6.
    assert auc(labels, scores) == pytest.approx(3.5 / 6)


def test_auc_perfect_and_reversed():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0


def test_auc_one_class_is_nan_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="peftrec.metrics"):
        value = auc([1, 1, 1], [0.2, 0.5, 0.9])
    assert math.isnan(value)
    assert "single class" in caplog.text


def test_nan_scores_give_nan_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="peftrec.metrics"):
        values = compute(["auc", "logloss", "accuracy"], y_true=[0, 1], y_score=[0.2, float("nan")])
    assert all(math.isnan(v) for v in values.values())
    assert "NaN" in caplog.text


def test_logloss_by_hand_and_clipped():
    # -(log 0.8 + log(1 - 0.4)) / 2
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # A certain mistake costs -log(eps), not infinity.
    assert logloss([1], [0.0], eps=1e-7) == pytest.approx(-math.log(1e-7))
    assert math.isfinite(logloss([0, 1], [1.0, 0.0]))


def test_accuracy_threshold_half():
    # 0.5 counts as a yes; 0.49 as a no.
    assert accuracy([1, 0, 1, 0], [0.5, 0.49, 0.2, 0.9]) == pytest.approx(2 / 4)


def test_rating_errors_by_hand():
    targets, predictions = [4, 2, 5], [3.5, 2, 3]
    # squared errors 0.25, 0, 4 -> mean 4.25 / 3
    assert rmse(targets, predictions) == pytest.approx(math.sqrt(4.25 / 3))
    assert mae(targets, predictions) == pytest.approx((0.5 + 0 + 2) / 3)


def test_ranking_by_hand():
    ranks = [0, 2, 5, None]  # top, third, sixth, not retrieved
    assert hit_at_k(ranks, 3) == pytest.approx(2 / 4)
    # gains 1/log2(2) = 1, 1/log2(4) = 0.5, sixth is outside k=3, missing 0
    assert ndcg_at_k(ranks, 3) == pytest.approx((1 + 0.5) / 4)
    # 1/log2(7) for rank 5 once k=10
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 0.5 + 1 / math.log2(7)) / 4)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 6 + 0) / 4)
    assert mrr(ranks, k=3) == pytest.approx((1 + 1 / 3) / 4)


def test_nan_and_inf_ranks_are_misses():
    assert hit_at_k([float("nan"), math.inf, 0], 1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="0-based"):
        hit_at_k([-1], 1)


def test_target_ranks_from_lists():
    ranks = target_ranks([["a", "b", "c"], ["x", "y"]], ["c", "z"])
    assert ranks[0] == 2 and math.isinf(ranks[1])
    assert compute(["hit@3", "ndcg@3"], ranks=ranks) == pytest.approx({"hit@3": 0.5, "ndcg@3": 0.5 * 0.5})


def test_valid_ratio():
    assert valid_ratio([True, False, True, True]) == 0.75


def test_directions_and_needs():
    assert METRICS["auc"].higher_is_better and METRICS["accuracy"].higher_is_better
    assert not METRICS["logloss"].higher_is_better
    assert not METRICS["rmse"].higher_is_better and not METRICS["mae"].higher_is_better
    assert get_metric("ndcg@10").higher_is_better and get_metric("hit@5").higher_is_better
    assert get_metric("ndcg@10").needs == ("ranks",)
    assert METRICS["auc"].needs == ("y_true", "y_score")
    assert METRICS["rmse"].needs == ("y_true", "y_pred")
    assert METRICS["rmse"].better(0.8, 0.9) and not METRICS["auc"].better(0.8, 0.9)
    assert METRICS["auc"].better(0.5, float("nan")) and not METRICS["auc"].better(float("nan"), 0.5)


def test_compute_several_and_errors():
    out = compute(["auc", "accuracy"], y_true=[0, 1], y_score=[0.3, 0.7], unused=[1])
    assert out == {"auc": 1.0, "accuracy": 1.0}
    with pytest.raises(PeftrecError, match="known"):
        get_metric("precision")
    with pytest.raises(PeftrecError):
        get_metric("ndcg@0")
    with pytest.raises(ValueError, match="missing"):
        compute(["rmse"], y_true=[1])
    with pytest.raises(ValueError, match="length"):
        auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="empty"):
        rmse([], [])
    with pytest.raises(ValueError, match="0 or 1"):
        auc([0, 4], [0.1, 0.9])


def test_bootstrap_interval_groups_and_determinism():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 10)
    labels = rng.integers(0, 2, size=300)
    scores = labels * 0.3 + rng.random(300)
    low, high = bootstrap_interval("auc", users, y_true=labels, y_score=scores, n_boot=200, seed=1)
    point = auc(labels, scores)
    assert low <= point <= high and high - low > 0
    assert (low, high) == bootstrap_interval("auc", users, y_true=labels, y_score=scores, n_boot=200, seed=1)
