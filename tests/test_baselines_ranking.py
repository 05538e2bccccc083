"""rank_of_target by hand: pessimistic ties, exclusions, NaN, excluded target."""

import numpy as np
import pytest

from peftrec import metrics
from peftrec.baselines import rank_of_target


def test_ranks_by_hand_with_ties_and_exclusions():
    scores = np.array(
        [
            [3.0, 1.0, 2.0, 2.0, 0.0],  # target col 2: one higher (3), one tie (col 3) -> 2
            [3.0, 1.0, 2.0, 2.0, 0.0],  # same, col 0 excluded -> only the tie -> 1
            [3.0, 1.0, 2.0, 2.0, 0.0],  # cols 0 and 3 excluded -> 0
            [1.0, 1.0, 1.0, 1.0, 1.0],  # all tied: pessimistic -> 4 (last)
            [np.nan, 1.0, 0.0, 5.0, 2.0],  # NaN target counts as -inf: 4 columns above it -> 4
            [0.0, 9.0, 1.0, 2.0, 3.0],  # target col 1 excluded: a miss
        ]
    )
    targets = np.array([2, 2, 2, 0, 0, 1])
    excluded = [
        np.array([], dtype=int),
        np.array([0]),
        np.array([0, 3]),
        np.array([]),
        np.array([]),
        np.array([1]),
    ]
    ranks = rank_of_target(scores, targets, excluded)
    np.testing.assert_array_equal(ranks, [2, 1, 0, 4, 4, np.inf])
    np.testing.assert_array_equal(rank_of_target(scores[:1], targets[:1], None), [2])
    assert metrics.compute(["hit@2"], ranks=ranks)["hit@2"] == pytest.approx(2 / 6)


def test_rank_input_checks():
    with pytest.raises(ValueError):
        rank_of_target(np.zeros(3), np.array([0]), None)
    with pytest.raises(ValueError):
        rank_of_target(np.zeros((2, 3)), np.array([0, 1]), [np.array([0])])
