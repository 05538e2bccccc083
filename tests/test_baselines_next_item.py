"""Next-item baselines: popularity = counts; SASRec learns 'k is followed by k + 1'; determinism."""

import numpy as np
import pandas as pd
import pytest
import torch

from peftrec.baselines import SASRecConfig, fit_sasrec, next_item_scores, popularity_counts, rank_of_target
from peftrec.baselines.sasrec import pad_right, training_windows

N_ITEMS = 20
ITEMS = [f"i{k}" for k in range(N_ITEMS)]
SMALL = SASRecConfig(hidden=32, max_len=8, epochs=20, batch_size=32, dropout=0.1, lr=5e-3)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: with 2 threads on a shared 2-core machine, each step stalls ~100x waiting for a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cyclic_sequences(users=60, length=12, seed=0):
    """Each user walks the item cycle: item k is always followed by item k + 1 (mod N_ITEMS)."""
    rng = np.random.default_rng(seed)
    rows, examples = [], []
    for u in range(users):
        start = int(rng.integers(N_ITEMS))
        walk = [ITEMS[(start + t) % N_ITEMS] for t in range(length + 1)]
        rows += [(f"u{u}", item, 4.0, 100 * u + t) for t, item in enumerate(walk[:-1])]
        examples.append((f"u{u}", walk[-1], walk[-6:-1]))
    train = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return train, pd.DataFrame(examples, columns=["user_id", "item_id", "history_item_ids"])


def test_popularity_scores_are_training_counts():
    train = pd.DataFrame(
        {"user_id": list("abcab"), "item_id": ["x", "x", "y", "x", "z"], "rating": 3.0, "timestamp": 0}
    )
    examples = pd.DataFrame({"history_item_ids": [["x"], []]})
    scores = next_item_scores(train, examples, ["y", "x", "w", "z"], baselines=["popularity"])
    assert scores["popularity"].dtype == np.float32
    np.testing.assert_array_equal(scores["popularity"], [[1, 3, 0, 1], [1, 3, 0, 1]])
    np.testing.assert_array_equal(popularity_counts(train, ["w"]), [0])


def test_windows_and_right_padding_count_positions_from_the_end():
    windows, owner = training_windows([np.arange(1, 8), np.array([9])], max_len=3)
    assert [w.tolist() for w in windows] == [[4, 5, 6, 7], [1, 2, 3, 4]]  # from the end; one-item user: none
    np.testing.assert_array_equal(owner, [0, 0])
    items, positions, lengths = pad_right([np.array([5, 6]), np.array([1, 2, 3])], max_len=3)
    np.testing.assert_array_equal(items, [[5, 6, 0], [1, 2, 3]])
    np.testing.assert_array_equal(positions, [[1, 2, 0], [0, 1, 2]])  # the last item is always at max_len - 1
    np.testing.assert_array_equal(lengths, [2, 3])


def test_sasrec_learns_the_successor_and_is_deterministic():
    train, examples = cyclic_sequences()
    scores = next_item_scores(train, examples, ITEMS, seed=0, sasrec=SMALL, progress=False)["sasrec"]
    assert scores.shape == (len(examples), N_ITEMS) and scores.dtype == np.float32
    targets = np.array([ITEMS.index(i) for i in examples["item_id"]])
    excluded = [np.array([ITEMS.index(i) for i in h]) for h in examples["history_item_ids"]]
    ranks = rank_of_target(scores, targets, excluded)
    assert np.mean(ranks < 3) > 0.8, ranks
    again = next_item_scores(train, examples, ITEMS, seed=0, sasrec=SMALL, progress=False)["sasrec"]
    np.testing.assert_array_equal(scores, again)


def test_sasrec_scoring_edge_cases():
    train, _ = cyclic_sequences(users=4)
    config = SASRecConfig(hidden=8, max_len=4, epochs=1)
    state = torch.random.get_rng_state()
    model = fit_sasrec(train, [*ITEMS, "never_seen"], config=config, progress=False)
    assert torch.random.get_rng_state().equal(state)  # the global torch RNG is left alone
    scores = model.score([[], ["unknown"], ["i3", "i4"]], ["i5", "never_seen"])
    np.testing.assert_array_equal(scores[:2], 0.0)  # no known history item: no information
    assert np.isfinite(scores[2]).all()
    with pytest.raises(ValueError):
        model.score([["i1"]], ["not_in_vocab"])
    with pytest.raises(ValueError):
        next_item_scores(train, pd.DataFrame({"history_item_ids": [[]]}), ITEMS, baselines=["bpr"])
