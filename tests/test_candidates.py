"""Fixed candidate sets: target once, unseen negatives, seeded and order-independent, saved and checked."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from peftrec.data.candidates import (
    CANDIDATE_COLUMNS,
    candidates_fingerprint,
    draw_candidates,
    load_candidates,
    save_candidates,
)
from peftrec.errors import DataError

N = 6


def toy(num_users: int = 12, num_items: int = 30, seed: int = 0):
    """Users with 3-15 interactions each over items i00..i29; the examples' targets are among them."""
    rng = np.random.default_rng(seed)
    item_ids = [f"i{k:02d}" for k in range(num_items)]
    rows = []
    for u in range(num_users):
        for item in rng.choice(item_ids, size=int(rng.integers(3, 16)), replace=False):
            rows.append({"user_id": f"u{u}", "item_id": str(item)})
    interactions = pd.DataFrame(rows)
    examples = interactions.groupby("user_id").tail(2).reset_index(drop=True)  # two targets per user
    return examples, interactions, item_ids


def test_each_list_holds_the_target_once_and_only_unseen_negatives():
    examples, interactions, item_ids = toy()
    frame = draw_candidates(examples, interactions, item_ids, n=N, seed=3)
    assert list(frame.columns) == list(CANDIDATE_COLUMNS)
    assert frame.index.equals(examples.index)
    assert frame["user_id"].tolist() == examples["user_id"].tolist()
    assert frame["item_id"].tolist() == examples["item_id"].tolist()
    seen = interactions.groupby("user_id")["item_id"].agg(set).to_dict()
    positions = []
    for row in frame.itertuples():
        ids = row.candidate_item_ids
        assert isinstance(ids, list) and len(ids) == N and len(set(ids)) == N
        assert set(ids) <= set(item_ids)
        assert ids.count(row.item_id) == 1
        assert ids[row.target_position] == row.item_id
        negatives = set(ids) - {row.item_id}
        assert not negatives & seen[row.user_id]
        positions.append(row.target_position)
    assert len(set(positions)) > 1  # the target is not always in the same place


def test_a_target_the_user_never_interacted_with_is_not_also_a_negative():
    # u0 saw i0 only and the target is i1: the one possible negative is i2 (n=3 is one too many)
    interactions = pd.DataFrame({"user_id": ["u0"], "item_id": ["i0"]})
    examples = pd.DataFrame({"user_id": ["u0"], "item_id": ["i1"]})
    for seed in range(20):  # without that rule, half the draws would pair i1 with itself
        frame = draw_candidates(examples, interactions, ["i2", "i1", "i0"], n=2, seed=seed)
        ids, position = frame.loc[0, "candidate_item_ids"], frame.loc[0, "target_position"]
        assert ids[position] == "i1" and ids[1 - position] == "i2"
    with pytest.raises(DataError, match="fewest: 1"):
        draw_candidates(examples, interactions, ["i2", "i1", "i0"], n=3, seed=0)


def test_draws_ignore_row_order_and_follow_the_seed():
    examples, interactions, item_ids = toy()
    first = draw_candidates(examples, interactions, item_ids, n=N, seed=7)
    again = draw_candidates(examples, interactions, item_ids, n=N, seed=7)
    shuffled = draw_candidates(
        examples,
        interactions.sample(frac=1.0, random_state=1).reset_index(drop=True),
        list(reversed(item_ids)),
        n=N,
        seed=7,
    )
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, shuffled)
    # a row's list depends on the row, not on its position among the examples
    reordered = draw_candidates(examples.iloc[::-1], interactions, item_ids, n=N, seed=7)
    pd.testing.assert_frame_equal(first, reordered.loc[first.index])
    other = draw_candidates(examples, interactions, item_ids, n=N, seed=8)
    assert first["candidate_item_ids"].tolist() != other["candidate_item_ids"].tolist()
    assert candidates_fingerprint(first) == candidates_fingerprint(shuffled) != candidates_fingerprint(other)


def test_negatives_are_spread_over_the_unseen_items():
    # 1000 users who each saw i00 only, one negative each from the 29 unseen items: all show up
    users = [f"u{k}" for k in range(1000)]
    interactions = pd.DataFrame({"user_id": users, "item_id": ["i00"] * 1000})
    item_ids = [f"i{k:02d}" for k in range(30)]
    frame = draw_candidates(interactions, interactions, item_ids, n=2, seed=0)
    pairs = zip(frame["candidate_item_ids"], frame["target_position"], strict=True)
    negatives = [ids[1 - pos] for ids, pos in pairs]
    counts = pd.Series(negatives).value_counts()
    assert set(counts.index) == set(item_ids) - {"i00"}
    assert counts.max() < 70  # uniform expectation 34.5; a skewed draw would exceed this
    assert 350 < int((frame["target_position"] == 0).sum()) < 650  # the target's place is a coin flip


def test_save_load_round_trip_and_an_edited_file_is_refused(tmp_path):
    examples, interactions, item_ids = toy()
    frame = draw_candidates(examples, interactions, item_ids, n=N, seed=0)
    path = save_candidates(frame, tmp_path / "cands" / "test.parquet")
    assert path == tmp_path / "cands" / "test.parquet"
    assert [p.name for p in path.parent.iterdir()] == ["test.parquet"]  # no temp file left behind
    loaded = load_candidates(path)
    pd.testing.assert_frame_equal(loaded, frame.reset_index(drop=True))
    assert all(isinstance(ids, list) for ids in loaded["candidate_item_ids"])

    # move the target one place along in the first row, keeping the schema metadata
    table = pq.read_table(path)
    edited = table.to_pandas()
    edited.loc[0, "target_position"] = (edited.loc[0, "target_position"] + 1) % N
    tampered = pa.Table.from_pandas(edited, preserve_index=False).replace_schema_metadata(
        table.schema.metadata
    )
    pq.write_table(tampered, path)
    with pytest.raises(DataError, match="does not match its recorded fingerprint.*delete it"):
        load_candidates(path)

    pq.write_table(pa.Table.from_pandas(edited, preserve_index=False).replace_schema_metadata({}), path)
    with pytest.raises(DataError, match="not a peftrec candidate file"):
        load_candidates(path)
    with pytest.raises(DataError, match="no candidate file"):
        load_candidates(tmp_path / "missing.parquet")


def test_too_few_unseen_items_names_the_fix():
    # u0 saw 10 of 30 items (20 unseen), u1 saw 3 (27 unseen): n=21 works, n=22 fails for u0 only
    item_ids = [f"i{k:02d}" for k in range(30)]
    interactions = pd.DataFrame(
        {"user_id": ["u0"] * 10 + ["u1"] * 3, "item_id": item_ids[:10] + item_ids[5:8]}
    )
    examples = interactions.iloc[[9, 12]]
    assert len(draw_candidates(examples, interactions, item_ids, n=21, seed=0)) == 2
    with pytest.raises(DataError) as err:
        draw_candidates(examples, interactions, item_ids, n=22, seed=0)
    message = str(err.value)
    assert message.startswith("1 example(s) have fewer than n - 1 = 21 items")
    assert "users ['u0']; fewest: 20" in message
    assert "lower task.num_candidates to at most 21" in message


@pytest.mark.parametrize("n", [1, 0, 2.5, True])
def test_lists_shorter_than_two_are_refused(n):
    examples, interactions, item_ids = toy()
    with pytest.raises(DataError, match="task.num_candidates"):
        draw_candidates(examples, interactions, item_ids, n=n, seed=0)


def test_a_target_outside_the_catalog_is_refused():
    examples, interactions, item_ids = toy()
    unknown = pd.DataFrame({"user_id": ["u0"], "item_id": ["i99"]})
    with pytest.raises(DataError, match=r"1 target item\(s\) are not in the catalog, e.g. \['i99'\]"):
        draw_candidates(unknown, interactions, item_ids, n=N, seed=0)
