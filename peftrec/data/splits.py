"""Leakage-proof example splits shared by every task (click, rating, next item) and every baseline.

An *example* is one rating event of a user who has at least ``history_len`` earlier ratings. Its
history is the ``history_len`` most recent earlier events of that user (oldest first) with their
ratings; its label is ``rating > like_threshold`` (click), its ``rating`` the rating task's target and
its ``item_id`` the next-item task's target. "Earlier" is the canonical event order of
:func:`peftrec.data.schema.sort_events` (timestamp, then a stable hash of ``(user_id, item_id)``), so
same-second ratings are ordered the same way whatever the file's row order or the id values.

Protocols (``data.protocol``):

- ``"tallrec"``: examples in global event order, the last ``last_n`` kept, cut by ``fractions`` in
  time order (TALLRec's click protocol). Every train target precedes every validation target, which
  precedes every test target.
- ``"full"``: the same with every eligible example.
- ``"per_user"``: per user in time order, the last ``holdout`` examples are test, the ``holdout``
  before them validation, the rest train (leave-one-out when ``holdout=1``: the next-item protocol of
  SASRec, P5 and LlamaRec). Every user is in every split, but a user's train events can be later in
  wall-clock time than another user's test event (as in every leave-one-out benchmark).
- ``"random"``: a seeded random assignment by ``fractions`` (Surprise-style rating evaluation).
  Histories are still each user's earlier ratings, so a train example's history may hold a test
  event's rating: comparable to matrix factorisation's use of all other ratings, not a forecast.

Cold start (``cold_start="users"`` or ``"items"``): a seeded ``cold_fraction`` of the test split's
users (or target items) is drawn, and every train example of those users (or with one of those items
as target or in its history) is dropped, so they never occur in training. Every validation and test
example then carries ``cold``: its user (or target item) occurs in no train example, so warm and cold
metrics can be reported apart. Few-shot draws (``train_shots``) come after the cold-start removal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from peftrec.atomic import swap_in
from peftrec.data.schema import RecData, sort_events
from peftrec.errors import DataError

logger = logging.getLogger(__name__)

PROTOCOLS = ("tallrec", "full", "per_user", "random")
COLD_START = ("users", "items")
SPLIT_NAMES = ("train", "validation", "test")
EXAMPLE_COLUMNS = (
    "user_id", "item_id", "rating", "timestamp", "history_item_ids", "history_ratings", "label",
)  # fmt: skip
SUMMARY_FILE = "summary.json"
COLD_COLUMN = "cold"  # validation/test only, when the split has a cold-start protocol


@dataclass(frozen=True, eq=False)
class ExampleSplit:
    """Train / validation / test examples, one row per example (columns: EXAMPLE_COLUMNS, plus ``cold``
    on validation and test under a cold-start protocol).

    Attributes:
        train, validation, test: Example frames in time order.
        params: The arguments that built the split (dataset, protocol, history_len, ...).
        eligible: Events with at least ``history_len`` earlier ratings, before protocol selection.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)
    eligible: int = 0

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(frame)}" for name, frame in self.frames().items())
        return f"ExampleSplit({self.params.get('dataset')!r}, {self.params.get('protocol')!r}, {sizes})"

    def frames(self) -> dict[str, pd.DataFrame]:
        """Return ``{"train": ..., "validation": ..., "test": ...}``."""
        return {"train": self.train, "validation": self.validation, "test": self.test}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (hex) over every example of every split: equal fingerprints, equal splits."""
        digest = hashlib.sha256()
        for name, frame in self.frames().items():
            digest.update(f"[{name}:{len(frame)}]\n".encode())
            for column in _canonical_columns(frame):
                digest.update(column)
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Return the split's numbers: parameters, eligible events, and per split the example count,
        positive share, user count and timestamp range; plus the fingerprint."""
        return {
            "params": dict(self.params),
            "eligible_events": self.eligible,
            "fingerprint": self.fingerprint,
            "splits": {name: _split_stats(frame) for name, frame in self.frames().items()},
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``train/validation/test.parquet`` and ``summary.json`` into ``folder``, atomically.

        The files are written to a fresh sibling folder that then replaces ``folder``: a reader sees
        the old split or the new one, never a mix.

        Args:
            folder: Destination (created; an existing one is replaced).

        Returns:
            The folder.
        """
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the split is ordinary output
        try:
            for name, frame in self.frames().items():
                frame.to_parquet(staging / f"{name}.parquet", index=False)
            (staging / SUMMARY_FILE).write_text(json.dumps(self.summary(), indent=2) + "\n")
            swap_in(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ExampleSplit:
        """Read a split written by :meth:`save` and check it against its recorded fingerprint.

        Args:
            folder: Folder holding the three parquet files and ``summary.json``.

        Returns:
            The split.

        Raises:
            DataError: files missing, or content that no longer matches the recorded fingerprint.
        """
        folder = Path(folder)
        missing = [
            n for n in (*(f"{s}.parquet" for s in SPLIT_NAMES), SUMMARY_FILE) if not (folder / n).is_file()
        ]
        if missing:
            raise DataError(f"saved split in {folder} lacks {missing}: delete the folder so it is rebuilt")
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        frames = {name: _from_parquet(folder / f"{name}.parquet") for name in SPLIT_NAMES}
        split = cls(**frames, params=summary["params"], eligible=summary["eligible_events"])
        if split.fingerprint != summary["fingerprint"]:
            raise DataError(
                f"saved split in {folder} does not match its recorded fingerprint (edited or corrupt): "
                "delete the folder so it is rebuilt"
            )
        return split


def example_split(
    data: RecData,
    *,
    protocol: str = "tallrec",
    history_len: int = 10,
    like_threshold: float = 3.0,
    last_n: int = 10_000,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    holdout: int = 1,
    train_shots: int | None = None,
    cold_start: str | None = None,
    cold_fraction: float = 0.2,
    require_both_labels: bool = False,
    seed: int = 0,
) -> ExampleSplit:
    """Build a split under one of the :data:`PROTOCOLS` (module docstring).

    Args:
        data: A validated dataset.
        protocol: ``"tallrec"``, ``"full"``, ``"per_user"`` or ``"random"``.
        history_len: Earlier ratings an example shows (and needs); TALLRec: 10.
        like_threshold: Label is ``rating > like_threshold``; TALLRec: 3.
        last_n: Examples kept by ``"tallrec"`` (fewer available: all are kept, with a warning).
        fractions: Train / validation / test shares (``"tallrec"``, ``"full"``, ``"random"``); sum 1.
        holdout: Test (and validation) examples per user under ``"per_user"``.
        train_shots: Few-shot: draw this many training examples without replacement, seeded by
            ``seed`` (kept in time order); ``None`` keeps the whole train split.
        cold_start: ``None``, ``"users"`` or ``"items"`` (module docstring).
        cold_fraction: Share of the test split's users / target items made cold.
        require_both_labels: Validation and test must hold both click labels (AUC needs them).
        seed: Seeds the random protocol, the cold-start draw and the few-shot draw.

    Returns:
        The :class:`ExampleSplit`.

    Raises:
        DataError: bad arguments, no eligible event, an empty split, (with ``require_both_labels``) a
            validation or test split with a single class, or more shots than training examples.
    """
    _check_args(protocol, history_len, last_n, fractions, train_shots, holdout, cold_start, cold_fraction)
    examples = click_examples(data.interactions, history_len=history_len, like_threshold=like_threshold)
    eligible = len(examples)
    if eligible == 0:
        raise DataError(
            f"no user has more than {history_len} ratings (an example needs {history_len} earlier "
            f"ratings plus the target): lower data.history_len or use more data"
        )
    if protocol == "tallrec":
        if eligible < last_n:
            logger.warning(
                "only %d eligible examples, fewer than data.last_n=%d: keeping all", eligible, last_n
            )
        examples = examples.iloc[-last_n:]
    if protocol == "per_user":
        cut = _cut_per_user(examples, holdout)
    elif protocol == "random":
        cut = _cut_at_random(examples, fractions, seed)
    else:
        cut = _cut_in_time_order(examples, fractions)
    parts = dict(zip(SPLIT_NAMES, cut, strict=True))
    _check_nonempty(parts, eligible=eligible, protocol=protocol)
    cold_removed = 0
    if cold_start is not None:
        parts, cold_removed = _make_cold(parts, cold_start, cold_fraction, seed)
    if train_shots is not None:
        parts["train"] = _draw_shots(parts["train"], train_shots, seed)
    _check_classes(parts, require_both_labels)
    params = {
        "dataset": data.name,
        "protocol": protocol,
        "history_len": history_len,
        "like_threshold": like_threshold,
        "last_n": last_n if protocol == "tallrec" else None,
        "fractions": [float(f) for f in fractions] if protocol != "per_user" else None,
        "holdout": holdout if protocol == "per_user" else None,
        "train_shots": train_shots,
        "cold_start": cold_start,
        "cold_fraction": cold_fraction if cold_start else None,
        "cold_removed_train_examples": cold_removed if cold_start else None,
        "seed": seed if (train_shots is not None or cold_start or protocol == "random") else None,
    }
    return ExampleSplit(**parts, params=params, eligible=eligible)


def click_split(data: RecData, **kwargs: Any) -> ExampleSplit:
    """:func:`example_split` for the click task: validation and test must hold both labels (AUC)."""
    return example_split(data, require_both_labels=True, **kwargs)


# The click task's split came first; the name stays for code written against it.
ClickSplit = ExampleSplit


def click_examples(
    interactions: pd.DataFrame, *, history_len: int = 10, like_threshold: float = 3.0
) -> pd.DataFrame:
    """Turn every eligible event into an example, in canonical global event order.

    Args:
        interactions: Schema interactions (any row order).
        history_len: Earlier events per example; events with fewer are not examples.
        like_threshold: Label is ``rating > like_threshold``.

    Returns:
        Frame with :data:`EXAMPLE_COLUMNS`; histories oldest first; ``label`` int64 0/1.
    """
    events = sort_events(interactions)
    n = len(events)
    users = pd.factorize(events["user_id"])[0]
    position = events.groupby("user_id", sort=False).cumcount().to_numpy()
    # Rows grouped by user, canonical order inside each group: a user's earlier events sit just before.
    by_user = np.lexsort((np.arange(n), users))
    slot = np.empty(n, dtype=np.int64)
    slot[by_user] = np.arange(n)
    targets = np.flatnonzero(position >= history_len)
    window = slot[targets][:, None] - history_len + np.arange(history_len)
    item_ids = events["item_id"].to_numpy(dtype=object)[by_user]
    ratings = events["rating"].to_numpy(dtype="float64")[by_user]
    chosen = events.iloc[targets].reset_index(drop=True)
    return pd.DataFrame(
        {
            "user_id": chosen["user_id"],
            "item_id": chosen["item_id"],
            "rating": chosen["rating"],
            "timestamp": chosen["timestamp"],
            "history_item_ids": pd.Series(item_ids[window].tolist(), dtype=object),
            "history_ratings": pd.Series(ratings[window].tolist(), dtype=object),
            "label": (chosen["rating"] > like_threshold).astype("int64"),
        }
    )


# --- steps ----------------------------------------------------------------------------------------


def _check_args(
    protocol: str,
    history_len: int,
    last_n: int,
    fractions: Sequence[float],
    train_shots: int | None,
    holdout: int,
    cold_start: str | None,
    cold_fraction: float,
) -> None:
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown split protocol {protocol!r}: set data.protocol to one of {list(PROTOCOLS)}")
    if history_len < 1:
        raise DataError(f"data.history_len={history_len}: it must be at least 1")
    if protocol == "tallrec" and last_n < 3:
        raise DataError(f"data.last_n={last_n}: it must be at least 3 (one example per split)")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(
            f"data.fractions={list(fractions)}: give three non-negative shares (train, validation, test) "
            "that sum to 1, e.g. [0.8, 0.1, 0.1]"
        )
    if train_shots is not None and train_shots < 1:
        raise DataError(
            f"data.train_shots={train_shots}: use a positive count, or null for the whole train split"
        )
    if protocol == "per_user" and holdout < 1:
        raise DataError(f"data.holdout={holdout}: it must be at least 1 (test examples per user)")
    if cold_start is not None and cold_start not in COLD_START:
        raise DataError(f"data.cold_start={cold_start!r}: use null, {COLD_START[0]!r} or {COLD_START[1]!r}")
    if cold_start is not None and not 0 < cold_fraction <= 1:
        raise DataError(f"data.cold_fraction={cold_fraction}: give a share in (0, 1], e.g. 0.2")


def _cut_in_time_order(examples: pd.DataFrame, fractions: Sequence[float]) -> list[pd.DataFrame]:
    """Cut consecutive blocks; train and validation sizes are floored, test takes the rest."""
    n = len(examples)
    # The epsilon keeps 10000 * 0.8 from flooring to 7999 on a float rounding error.
    n_train = int(np.floor(n * fractions[0] + 1e-9))
    n_val = int(np.floor(n * fractions[1] + 1e-9))
    bounds = [0, n_train, n_train + n_val, n]
    return [examples.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:], strict=False)]


def _cut_per_user(examples: pd.DataFrame, holdout: int) -> list[pd.DataFrame]:
    """Per user: the last ``holdout`` examples test, the ``holdout`` before them validation.

    A user with at most ``2 * holdout`` examples keeps them all in train: every validation and test
    user also has training examples (unless a cold-start protocol removes them on purpose)."""
    from_end = examples.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    count = examples.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    enough = count > 2 * holdout
    test = enough & (from_end < holdout)
    validation = enough & (from_end >= holdout) & (from_end < 2 * holdout)
    train = ~(test | validation)
    return [examples[mask].reset_index(drop=True) for mask in (train, validation, test)]


def _cut_at_random(examples: pd.DataFrame, fractions: Sequence[float], seed: int) -> list[pd.DataFrame]:
    """A seeded random assignment; each part stays in global time order."""
    n = len(examples)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(np.floor(n * fractions[0] + 1e-9))
    n_val = int(np.floor(n * fractions[1] + 1e-9))
    bounds = [0, n_train, n_train + n_val, n]
    return [
        examples.iloc[np.sort(order[a:b])].reset_index(drop=True)
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]


def _make_cold(
    parts: dict[str, pd.DataFrame], kind: str, fraction: float, seed: int
) -> tuple[dict[str, pd.DataFrame], int]:
    """Drop the train examples that touch a seeded draw of the test split's users or target items,
    then mark each validation/test example whose user (or target item) no train example holds."""
    column = "user_id" if kind == "users" else "item_id"
    pool = np.sort(parts["test"][column].unique().astype(str))
    size = max(1, int(round(fraction * len(pool))))
    cold = set(np.random.default_rng(seed).choice(pool, size=size, replace=False).tolist())
    train = parts["train"]
    if kind == "users":
        touched = train["user_id"].isin(cold).to_numpy()
    else:
        in_history = np.array([not cold.isdisjoint(h) for h in train["history_item_ids"]], dtype=bool)
        touched = train["item_id"].isin(cold).to_numpy() | in_history
    parts = dict(parts, train=train[~touched].reset_index(drop=True))
    if parts["train"].empty:
        raise DataError(
            f"the cold-start draw ({kind}, data.cold_fraction={fraction}) left no train example: "
            "lower data.cold_fraction or use data.cold_start=users"
        )
    seen = set(parts["train"][column])
    if kind == "items":
        seen |= set(chain.from_iterable(parts["train"]["history_item_ids"]))
    for name in ("validation", "test"):
        frame = parts[name]
        parts[name] = frame.assign(**{COLD_COLUMN: ~frame[column].isin(seen)})
    return parts, int(touched.sum())


def _draw_shots(train: pd.DataFrame, shots: int, seed: int) -> pd.DataFrame:
    """Same (train, shots, seed) -> same examples; kept in time order."""
    if shots > len(train):
        raise DataError(
            f"data.train_shots={shots} but the train split has only {len(train)} examples: lower "
            "data.train_shots, or use data.protocol=full / more data"
        )
    rows = np.sort(np.random.default_rng(seed).choice(len(train), size=shots, replace=False))
    return train.iloc[rows].reset_index(drop=True)


def _check_nonempty(parts: dict[str, pd.DataFrame], *, eligible: int, protocol: str) -> None:
    for name, frame in parts.items():
        if frame.empty:
            raise DataError(
                f"the {name} split is empty ({eligible} eligible examples under protocol {protocol!r}): "
                "use more data, lower data.history_len, or change data.fractions"
            )


def _check_classes(parts: dict[str, pd.DataFrame], require_both_labels: bool) -> None:
    """Validation and test need both labels for AUC; a one-class train split only gets a warning
    (a small few-shot draw can be one class by chance, and training still runs)."""
    if not require_both_labels:
        return
    for name, frame in parts.items():
        classes = sorted(frame["label"].unique().tolist())
        if len(classes) > 1:
            continue
        message = f"the {name} split has only label {classes[0]} ({len(frame)} examples): AUC is undefined"
        if name == "train":
            logger.warning("%s; draw again with another seed or more data.train_shots", message)
            continue
        raise DataError(
            f"{message}. Use more data (data.protocol=full or a larger data.last_n) or change "
            "data.like_threshold"
        )


# --- persistence ----------------------------------------------------------------------------------


def _canonical_columns(frame: pd.DataFrame):
    """Each column as bytes that depend on the values only (not on dtypes or library versions):
    text joined with separators, numbers as little-endian int64 / float64."""
    yield from (_text_bytes(frame[name]) for name in ("user_id", "item_id"))
    yield frame["rating"].to_numpy(dtype="<f8").tobytes()
    yield frame["timestamp"].to_numpy(dtype="<i8").tobytes()
    yield "\x1e".join("\x1f".join(h) for h in frame["history_item_ids"]).encode()
    yield np.array([len(h) for h in frame["history_ratings"]], dtype="<i8").tobytes()
    yield np.fromiter(chain.from_iterable(frame["history_ratings"]), dtype="<f8").tobytes()
    yield frame["label"].to_numpy(dtype="<i8").tobytes()
    if COLD_COLUMN in frame.columns:
        yield frame[COLD_COLUMN].to_numpy(dtype="<i8").tobytes()


def _text_bytes(values: pd.Series) -> bytes:
    return "\x1e".join(values.astype(str)).encode()


def _split_stats(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "examples": len(frame),
        "positive_share": float(frame["label"].mean()) if len(frame) else None,
        "users": int(frame["user_id"].nunique()),
        "first_timestamp": int(frame["timestamp"].min()) if len(frame) else None,
        "last_timestamp": int(frame["timestamp"].max()) if len(frame) else None,
        **({"cold_examples": int(frame[COLD_COLUMN].sum())} if COLD_COLUMN in frame.columns else {}),
    }


def _from_parquet(path: Path) -> pd.DataFrame:
    table = pq.read_table(path)
    lists = ("history_item_ids", "history_ratings")
    frame = table.drop_columns(list(lists)).to_pandas()
    # pandas would hand list columns back as numpy arrays; examples hold plain lists.
    for name in lists:
        frame[name] = pd.Series(table.column(name).to_pylist(), dtype=object)
    return frame[[*EXAMPLE_COLUMNS, *([COLD_COLUMN] if COLD_COLUMN in frame.columns else [])]]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def training_events(interactions: pd.DataFrame, split: ExampleSplit) -> pd.DataFrame:
    """The ratings a classical baseline may learn from under the split's protocol (leakage-free).

    - ``"tallrec"`` / ``"full"``: every event before the first validation example's event (canonical
      order): what was known when the held-out period starts, as for the LM's train split.
    - ``"per_user"``: each user's events before their first validation or test example.
    - ``"random"``: every event that is not a validation or test example.
    - cold start: additionally, no event of a cold user, or of a cold item.

    Args:
        interactions: every rating (any order).
        split: the split the baseline is compared on.

    Returns:
        Interactions (schema columns) in canonical event order.
    """
    events = sort_events(interactions).reset_index(drop=True)
    # An event is (user, item, timestamp): a user may rate one item more than once in some datasets.
    key_columns = ["user_id", "item_id", "timestamp"]
    keys = pd.MultiIndex.from_frame(events[key_columns])
    held_out = pd.concat([split.validation, split.test], ignore_index=True)
    held_keys = pd.MultiIndex.from_frame(held_out[key_columns])
    position = pd.Series(np.arange(len(events)), index=keys).groupby(level=[0, 1, 2]).min()
    order = np.arange(len(events))
    protocol = split.params.get("protocol")
    if protocol in ("tallrec", "full"):
        keep = order < position.reindex(held_keys).min()
    elif protocol == "per_user":
        first_held = pd.Series(position.reindex(held_keys).to_numpy(), index=held_out["user_id"].to_numpy())
        cut = events["user_id"].map(first_held.groupby(level=0).min()).fillna(np.inf).to_numpy()
        keep = order < cut
    else:
        keep = ~keys.isin(held_keys)
    cold_kind = split.params.get("cold_start")
    if cold_kind:
        column = "user_id" if cold_kind == "users" else "item_id"
        cold = set(split.test.loc[split.test[COLD_COLUMN], column]) | set(
            split.validation.loc[split.validation[COLD_COLUMN], column]
        )
        keep &= ~events[column].isin(cold).to_numpy()
    return events[keep].reset_index(drop=True)
