"""Baselines meet the LM on the same rows: leakage-free training events per protocol, ranks by hand."""

import numpy as np
import pandas as pd
import pytest
from test_splits import HISTORY, synthetic

from peftrec.comparisons import baseline_inputs, next_item_ranks
from peftrec.data import example_split, sort_events, training_events
from peftrec.errors import PeftrecError


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=40)


def _keys(frame: pd.DataFrame) -> set:
    return set(zip(frame["user_id"], frame["item_id"], frame["timestamp"], strict=True))


@pytest.mark.parametrize("protocol", ["tallrec", "full", "per_user", "random"])
def test_training_events_never_hold_a_validation_or_test_event(data, protocol):
    split = example_split(data, protocol=protocol, history_len=HISTORY, last_n=300, seed=3)
    train = training_events(data.interactions, split)
    held = _keys(pd.concat([split.validation, split.test]))
    assert not _keys(train) & held
    assert set(split.train["user_id"]) <= set(train["user_id"])


def test_global_time_protocols_train_only_on_what_precedes_the_held_out_period(data):
    split = example_split(data, protocol="tallrec", history_len=HISTORY, last_n=300)
    events = sort_events(data.interactions).reset_index(drop=True)
    train = training_events(data.interactions, split)
    first = split.validation.iloc[0]
    position = events.index[(events["user_id"] == first["user_id"]) & (events["item_id"] == first["item_id"])][0]
    # Exactly the events before the first validation event in the canonical order (ties included correctly).
    pd.testing.assert_frame_equal(train, events.iloc[:position].reset_index(drop=True))


def test_per_user_training_events_stop_before_each_users_validation_event(data):
    split = example_split(data, protocol="per_user", history_len=HISTORY)
    train = training_events(data.interactions, split)
    events = sort_events(data.interactions).reset_index(drop=True)
    for user, frame in events.groupby("user_id", sort=False):
        val = split.validation[split.validation["user_id"] == user]
        kept = train[train["user_id"] == user]
        if val.empty:
            assert len(kept) == len(frame)  # users without held-out events keep everything
            continue
        cut = frame.index[(frame["item_id"] == val["item_id"].iloc[0])][0]
        assert len(kept) == (frame.index < cut).sum()


def test_cold_users_have_no_training_events(data):
    split = example_split(
        data, protocol="per_user", history_len=HISTORY, cold_start="users", cold_fraction=0.25
    )
    cold = set(split.test.loc[split.test["cold"], "user_id"])
    assert cold and not cold & set(training_events(data.interactions, split)["user_id"])


def test_next_item_ranks_exclude_seen_items_and_count_ties_against_the_target():
    items = ["a", "b", "c", "d"]
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    examples = pd.DataFrame({"item_id": ["c", "b"], "seen_item_ids": [["a"], []]})
    # row 0: a is seen (left out), only b is above c -> rank 1. row 1: a and c tie with b -> rank 2.
    np.testing.assert_array_equal(next_item_ranks(scores, examples, items), [1.0, 2.0])
    with_candidates = examples.assign(candidate_item_ids=[["d", "c"], ["d", "b"]], target_position=[1, 1])
    np.testing.assert_array_equal(next_item_ranks(scores, with_candidates, items), [0.0, 0.0])


def test_unknown_baseline_is_named(data):
    split = example_split(data, protocol="per_user", history_len=HISTORY)
    with pytest.raises(PeftrecError, match=r"unknown baseline\(s\) \['svd\+\+'\].*task\.baselines takes"):
        baseline_inputs("rating", ["svd++"], data, split, split.test)


def test_rating_baselines_on_the_test_rows(data):
    split = example_split(data, protocol="per_user", history_len=HISTORY)
    inputs = baseline_inputs(
        "rating", ["global_mean", "user_history_mean", "biased_mf"], data, split, split.test
    )
    assert list(inputs) == ["global_mean", "user_history_mean", "biased_mf"]
    np.testing.assert_array_equal(inputs["global_mean"]["y_true"], split.test["rating"].to_numpy())
    expected = np.clip([np.mean(h) for h in split.test["history_ratings"]], 1, 5)
    np.testing.assert_allclose(inputs["user_history_mean"]["y_pred"], expected)
    # The global mean is the mean of the training events, the same for every row.
    train_mean = training_events(data.interactions, split)["rating"].mean()
    np.testing.assert_allclose(inputs["global_mean"]["y_pred"], train_mean)
