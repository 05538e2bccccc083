"""The one data schema every later stage reads, and its checks.

Interactions: ``user_id`` (str), ``item_id`` (str), ``rating`` (float64), ``timestamp`` (int64 seconds).
Items: ``item_id`` (str), ``title`` (str), plus optional text columns (``year``, ``genres``, ...; str,
missing values are ``""`` so that a prompt never shows ``nan``).

:func:`validate` coerces frames to that schema and checks them; every reader ends with it. Its
interactions come back in *canonical event order* (:func:`sort_events`): by timestamp, ties broken by
a seed-free stable hash of ``(user_id, item_id)``. Ties are never broken by item id (that leaks the
test item where item ids follow catalogue order, see REFERENCES.md "Known protocol traps") nor by the
source file's row order (two copies of the same data would give different splits).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from peftrec.errors import DataError

logger = logging.getLogger(__name__)

INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title")

# Shown in error messages: where the user maps their own column names (conf/data/*.yaml).
INTERACTION_KEY = "data.columns"
ITEM_KEY = "data.item_columns"

_SAMPLE = 5  # offending values quoted in an error message


@dataclass(frozen=True, eq=False)
class RecData:
    """A dataset in peftrec's schema.

    Attributes:
        name: Short dataset name (``"ml-100k"``, ``"ml-1m"``, or the user's file stem).
        interactions: ``user_id``, ``item_id``, ``rating``, ``timestamp``, in canonical event order.
        items: ``item_id``, ``title`` and optional text columns; one row per item id.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame

    def __repr__(self) -> str:
        return f"RecData({self.name!r}, {self.stats()})"

    def equals(self, other: RecData) -> bool:
        """Return True when name, interactions and items are identical (values, dtypes, order)."""
        return (
            self.name == other.name
            and self.interactions.reset_index(drop=True).equals(other.interactions.reset_index(drop=True))
            and self.items.reset_index(drop=True).equals(other.items.reset_index(drop=True))
        )

    def item_titles(self) -> dict[str, str]:
        """Return ``{item_id: title}`` for every item."""
        return dict(zip(self.items["item_id"], self.items["title"], strict=True))

    def stats(self) -> dict[str, int]:
        """Return counts: ratings, users, rated items, catalogue items."""
        return {
            "ratings": len(self.interactions),
            "users": int(self.interactions["user_id"].nunique()),
            "rated_items": int(self.interactions["item_id"].nunique()),
            "items": len(self.items),
        }


def validate(data: RecData) -> RecData:
    """Coerce a :class:`RecData` to the schema and check it.

    Every interacted item must have a title. An item missing from the items table (or with an empty
    title) gets its item id as title and a warning is logged, rather than an error: users' own files
    often lack an items table, and an id is still a usable, if poor, prompt text.

    Args:
        data: Frames with at least the schema's columns (any dtypes that convert).

    Returns:
        A new :class:`RecData`: typed columns, interactions in canonical event order, items sorted
        as given with fallback rows appended.

    Raises:
        DataError: a required column is missing, a rating or timestamp does not parse, an id is
            missing, a table is empty, or an item id appears twice in the items table.
    """
    interactions = coerce_interactions(data.interactions)
    items = coerce_items(data.items)
    items = _fill_missing_titles(items, interactions["item_id"])
    return RecData(name=data.name, interactions=sort_events(interactions), items=items)


def require_columns(df: pd.DataFrame, required: Iterable[str], *, table: str, key: str) -> None:
    """Raise :class:`DataError` naming the missing columns, the columns found and the keys to set.

    Args:
        df: The frame to check.
        required: Schema column names it must have.
        table: ``"interactions"`` or ``"items"`` (for the message).
        key: Config prefix where the user maps column names (``data.columns``).
    """
    missing = [c for c in required if c not in df.columns]
    if missing:
        fixes = ", ".join(f"{key}.{c}=<your column>" for c in missing)
        raise DataError(
            f"{table} table has no column {missing}; columns found: {list(map(str, df.columns))}. "
            f"Map your column names with {fixes}."
        )


def coerce_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Return the four interaction columns with schema dtypes.

    Args:
        df: Frame with ``user_id``, ``item_id``, ``rating``, ``timestamp`` (extra columns dropped).

    Returns:
        A new frame: ids str, rating float64, timestamp int64 seconds.

    Raises:
        DataError: missing column, empty table, missing id, non-numeric rating, unparseable timestamp.
    """
    require_columns(df, INTERACTION_COLUMNS, table="interactions", key=INTERACTION_KEY)
    if df.empty:
        raise DataError("interactions table is empty: point data.interactions at a file with rows")
    return pd.DataFrame(
        {
            "user_id": ids_to_str(df["user_id"], column="user_id", key=INTERACTION_KEY),
            "item_id": ids_to_str(df["item_id"], column="item_id", key=INTERACTION_KEY),
            "rating": ratings_to_float(df["rating"]),
            "timestamp": timestamps_to_seconds(df["timestamp"]),
        }
    )


def coerce_items(df: pd.DataFrame) -> pd.DataFrame:
    """Return the items table with str columns, ``item_id`` and ``title`` first.

    Args:
        df: Frame with ``item_id``, ``title`` and any extra text columns.

    Returns:
        A new frame; missing text becomes ``""``; titles are stripped of surrounding whitespace.

    Raises:
        DataError: missing column, missing item id, or an item id listed twice.
    """
    require_columns(df, ITEM_COLUMNS, table="items", key=ITEM_KEY)
    out = pd.DataFrame({"item_id": ids_to_str(df["item_id"], column="item_id", key=ITEM_KEY)})
    for col in ["title", *(c for c in df.columns if c not in ITEM_COLUMNS)]:
        out[str(col)] = text_to_str(df[col])
    out["title"] = out["title"].str.strip()
    duplicated = out["item_id"][out["item_id"].duplicated()]
    if len(duplicated):
        raise DataError(
            f"items table lists {duplicated.nunique()} item id(s) more than once, e.g. "
            f"{_sample(duplicated.unique())}: keep one row per item id in the items file"
        )
    return out.reset_index(drop=True)


def ids_to_str(values: pd.Series, *, column: str, key: str) -> pd.Series:
    """Return ids as str; integral floats (``196.0``, from a column with gaps) lose the ``.0``.

    Raises:
        DataError: an id is missing.
    """
    if values.isna().any():
        rows = np.flatnonzero(values.isna().to_numpy())
        raise DataError(
            f"column {column!r} has {len(rows)} empty value(s) (first rows {rows[:_SAMPLE].tolist()}): "
            f"every row needs an id; drop those rows or set {key}.{column} to another column"
        )
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(dtype=float), 1) == 0):
        values = values.astype("int64")
    return values.astype(str).str.strip().astype(str)


def text_to_str(values: pd.Series) -> pd.Series:
    """Return a text column as str with missing values as ``""``."""
    return values.astype(object).where(values.notna(), "").astype(str)


def ratings_to_float(values: pd.Series) -> pd.Series:
    """Return ratings as float64.

    Raises:
        DataError: some rating is missing or not a number (quotes a sample of them).
    """
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() | ~np.isfinite(parsed.astype(float))
    if bad.any():
        raise DataError(
            f"column 'rating' has {int(bad.sum())} value(s) that are not numbers, e.g. "
            f"{_sample(values[bad].unique())}: ratings must be numeric (e.g. 1-5); clean those rows "
            f"or set {INTERACTION_KEY}.rating to the numeric rating column"
        )
    return parsed.astype("float64")


def timestamps_to_seconds(values: pd.Series) -> pd.Series:
    """Return timestamps as int64 seconds since the epoch.

    Numbers (or numeric strings) are taken as seconds (milliseconds would keep their order, which is
    all a split uses, but not their unit); datetimes and date strings are parsed (naive ones read as
    UTC) and converted.

    Raises:
        DataError: some timestamp is missing or parses neither as a number nor as a date.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return _datetimes_to_seconds(values)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        # Seconds stay exact in float64 (2**53 s is far away); fractional seconds are floored.
        return np.floor(numeric.astype("float64")).astype("int64")
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna()
    if bad.any():
        raise DataError(
            f"column 'timestamp' has {int(bad.sum())} value(s) that are neither numbers (seconds) nor "
            f"dates, e.g. {_sample(values[bad].unique())}: fix those rows or set "
            f"{INTERACTION_KEY}.timestamp to another column"
        )
    return _datetimes_to_seconds(parsed)


def event_hash(user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    """Return a stable 64-bit hash of each ``(user_id, item_id)`` pair.

    blake2b, not Python's ``hash`` (salted per process): the order it induces must be the same in
    every run and on every machine, and unrelated to the order of the item ids.

    Returns:
        uint64 array, one value per pair.
    """
    digests = (
        hashlib.blake2b(f"{u}\x1f{i}".encode(), digest_size=8, person=b"peftrec-ties").digest()
        for u, i in zip(user_ids, item_ids, strict=True)
    )
    return np.fromiter((int.from_bytes(d, "little") for d in digests), dtype=np.uint64, count=len(user_ids))


def sort_events(interactions: pd.DataFrame) -> pd.DataFrame:
    """Return interactions in canonical event order.

    Order: timestamp, then :func:`event_hash` of ``(user_id, item_id)``, then rating (only a user who
    rated the same item twice in the same second needs it). Restricted to one user this is that
    user's history order; the result does not depend on the input's row order or on the id values.

    Args:
        interactions: Frame with the schema's interaction columns.

    Returns:
        A sorted copy with a fresh RangeIndex.
    """
    ties = event_hash(interactions["user_id"].tolist(), interactions["item_id"].tolist())
    order = np.lexsort((interactions["rating"].to_numpy(), ties, interactions["timestamp"].to_numpy()))
    return interactions.iloc[order].reset_index(drop=True)


def _fill_missing_titles(items: pd.DataFrame, interacted: pd.Series) -> pd.DataFrame:
    """Give every interacted item a title, falling back to its id (logged as a warning)."""
    empty = items["title"] == ""
    if empty.any():
        logger.warning(
            "%d item(s) have an empty title, e.g. %s: using the item id as title",
            int(empty.sum()),
            _sample(items.loc[empty, "item_id"]),
        )
        items = items.assign(title=items["title"].where(~empty, items["item_id"]))
    missing = pd.Index(interacted.unique()).difference(pd.Index(items["item_id"]))
    if len(missing) == 0:
        return items
    logger.warning(
        "%d interacted item(s) are not in the items table, e.g. %s: using the item id as title",
        len(missing),
        _sample(missing),
    )
    extra = pd.DataFrame({c: "" for c in items.columns}, index=range(len(missing)))
    extra["item_id"] = list(missing)
    extra["title"] = list(missing)
    return pd.concat([items, extra.astype(items.dtypes.to_dict())], ignore_index=True)


def _datetimes_to_seconds(values: pd.Series) -> pd.Series:
    if values.dt.tz is None:
        values = values.dt.tz_localize("UTC")
    seconds = (values - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.astype("int64")


def _sample(values: Iterable) -> list:
    return list(itertools.islice(values, _SAMPLE))
