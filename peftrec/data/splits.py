"""Chronological, leakage-proof click splits (TALLRec's protocol by default).

An *example* is one rating event of a user who has at least ``history_len`` earlier ratings. Its
history is the ``history_len`` most recent earlier events of that user (oldest first) with their
ratings; its label is ``rating > like_threshold``. "Earlier" is the canonical event order of
:func:`peftrec.data.schema.sort_events` (timestamp, then a stable hash of ``(user_id, item_id)``), so
same-second ratings are ordered the same way whatever the file's row order or the id values.

Examples are put in that global order; protocol ``"tallrec"`` keeps the last ``last_n``, ``"full"``
keeps all; both cut them 8:1:1 in time order (train, validation, test). Every train target precedes
every validation target, which precedes every test target.
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

PROTOCOLS = ("tallrec", "full")
SPLIT_NAMES = ("train", "validation", "test")
EXAMPLE_COLUMNS = (
    "user_id", "item_id", "rating", "timestamp", "history_item_ids", "history_ratings", "label",
)  # fmt: skip
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True, eq=False)
class ClickSplit:
    """Train / validation / test click examples, one row per example (columns: EXAMPLE_COLUMNS).

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
        return f"ClickSplit({self.params.get('dataset')!r}, {self.params.get('protocol')!r}, {sizes})"

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
    def load(cls, folder: str | Path) -> ClickSplit:
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


def click_split(
    data: RecData,
    *,
    protocol: str = "tallrec",
    history_len: int = 10,
    like_threshold: float = 3.0,
    last_n: int = 10_000,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    train_shots: int | None = None,
    seed: int = 0,
) -> ClickSplit:
    """Build the chronological click split.

    Args:
        data: A validated dataset.
        protocol: ``"tallrec"`` (last ``last_n`` examples) or ``"full"`` (every eligible example).
        history_len: Earlier ratings an example shows (and needs); TALLRec: 10.
        like_threshold: Label is ``rating > like_threshold``; TALLRec: 3.
        last_n: Examples kept by ``"tallrec"`` (fewer available: all are kept, with a warning).
        fractions: Train / validation / test shares, cut in time order; they must sum to 1.
        train_shots: Few-shot: draw this many training examples without replacement, seeded by
            ``seed`` (kept in time order); ``None`` keeps the whole train split.
        seed: Seeds the few-shot draw only; the split itself has no randomness.

    Returns:
        The :class:`ClickSplit`.

    Raises:
        DataError: bad arguments, no eligible event, an empty split, a validation or test split
            with a single class (AUC undefined), or more shots than training examples.
    """
    _check_args(protocol, history_len, last_n, fractions, train_shots)
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
    parts = dict(zip(SPLIT_NAMES, _cut_in_time_order(examples, fractions), strict=True))
    _check_nonempty(parts, eligible=eligible, protocol=protocol)
    if train_shots is not None:
        parts["train"] = _draw_shots(parts["train"], train_shots, seed)
    _check_classes(parts)
    params = {
        "dataset": data.name,
        "protocol": protocol,
        "history_len": history_len,
        "like_threshold": like_threshold,
        "last_n": last_n if protocol == "tallrec" else None,
        "fractions": [float(f) for f in fractions],
        "train_shots": train_shots,
        "seed": seed if train_shots is not None else None,
    }
    return ClickSplit(**parts, params=params, eligible=eligible)


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
    protocol: str, history_len: int, last_n: int, fractions: Sequence[float], train_shots: int | None
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


def _cut_in_time_order(examples: pd.DataFrame, fractions: Sequence[float]) -> list[pd.DataFrame]:
    """Cut consecutive blocks; train and validation sizes are floored, test takes the rest."""
    n = len(examples)
    # The epsilon keeps 10000 * 0.8 from flooring to 7999 on a float rounding error.
    n_train = int(np.floor(n * fractions[0] + 1e-9))
    n_val = int(np.floor(n * fractions[1] + 1e-9))
    bounds = [0, n_train, n_train + n_val, n]
    return [examples.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:], strict=False)]


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


def _check_classes(parts: dict[str, pd.DataFrame]) -> None:
    """Validation and test need both labels for AUC; a one-class train split only gets a warning
    (a small few-shot draw can be one class by chance, and training still runs)."""
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


def _text_bytes(values: pd.Series) -> bytes:
    return "\x1e".join(values.astype(str)).encode()


def _split_stats(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "examples": len(frame),
        "positive_share": float(frame["label"].mean()) if len(frame) else None,
        "users": int(frame["user_id"].nunique()),
        "first_timestamp": int(frame["timestamp"].min()) if len(frame) else None,
        "last_timestamp": int(frame["timestamp"].max()) if len(frame) else None,
    }


def _from_parquet(path: Path) -> pd.DataFrame:
    table = pq.read_table(path)
    lists = ("history_item_ids", "history_ratings")
    frame = table.drop_columns(list(lists)).to_pandas()
    # pandas would hand list columns back as numpy arrays; examples hold plain lists.
    for name in lists:
        frame[name] = pd.Series(table.column(name).to_pylist(), dtype=object)
    return frame[list(EXAMPLE_COLUMNS)]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
