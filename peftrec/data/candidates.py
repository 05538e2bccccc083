"""Fixed candidate sets for ranking (LlamaRec / LLaRA style): the target plus n-1 unseen negatives.

Every method must meet the same test, so candidates are drawn once per (data, split, seed), saved, and
reused (RecBole re-draws negatives and its runs are not comparable). A row's draw depends only on
``seed``, the row's ``(user_id, item_id)`` and the sorted catalog, never on the row order of any input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from peftrec.atomic import staged_file
from peftrec.data.schema import event_hash
from peftrec.errors import DataError

CANDIDATE_COLUMNS = ("user_id", "item_id", "candidate_item_ids", "target_position")
FINGERPRINT_KEY = b"peftrec.candidates.fingerprint"
NUM_CANDIDATES_KEY = "task.num_candidates"  # where the user sets n (named in error messages)
_SAMPLE = 5  # offending values quoted in an error message


def draw_candidates(
    examples: pd.DataFrame,
    interactions: pd.DataFrame,
    item_ids: Sequence[str],
    *,
    n: int,
    seed: int,
) -> pd.DataFrame:
    """Draw each example's candidate list: its target plus ``n - 1`` items the user never interacted with.

    Negatives are drawn uniformly without replacement from the catalog items absent from the user's
    interactions (all of them, in every split: an item the user saw later is no negative), then the
    ``n`` ids are put in a random order. Row ``i`` uses ``numpy.random.default_rng([seed, h])`` with
    ``h`` a stable hash of its ``(user_id, item_id)``, and the catalog is sorted first, so the result
    does not depend on the row order of ``interactions`` or ``item_ids`` (two examples with the same
    user and target get the same list).

    Args:
        examples: one row per example with ``user_id`` and ``item_id`` (the target).
        interactions: every interaction, with ``user_id`` and ``item_id``.
        item_ids: the catalog.
        n: list length (target included), at least 2.
        seed: draw seed.

    Returns:
        A frame with the index of ``examples`` and columns ``user_id``, ``item_id``,
        ``candidate_item_ids`` (list of ``n`` distinct str ids), ``target_position`` (int64, 0-based).

    Raises:
        DataError: ``n < 2``, missing columns, a target outside the catalog, or a user with fewer than
            ``n - 1`` unseen items.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise DataError(f"{NUM_CANDIDATES_KEY}={n!r}: a candidate list needs at least 2 items (target + 1)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"candidate seed must be a non-negative integer, got {seed!r}")
    for name, frame in (("examples", examples), ("interactions", interactions)):
        missing = [c for c in ("user_id", "item_id") if c not in frame.columns]
        if missing:
            raise DataError(f"{name} lack column(s) {missing}: pass frames in peftrec's schema")
    catalog = np.array(sorted({str(i) for i in item_ids}), dtype=object)
    position = {item: k for k, item in enumerate(catalog)}
    users = examples["user_id"].astype(str).tolist()
    targets = examples["item_id"].astype(str).tolist()

    unknown = sorted({t for t in targets if t not in position})
    if unknown:
        raise DataError(
            f"{len(unknown)} target item(s) are not in the catalog, e.g. {unknown[:_SAMPLE]}: "
            "pass every item id of the data as item_ids"
        )
    seen = _seen_by_user(interactions, set(users), position)
    none = np.empty(0, dtype=np.int64)
    target_ks = np.array([position[t] for t in targets], dtype=np.int64)
    # A target the user never interacted with is no negative either: it leaves that row's pool.
    target_unseen = np.array(
        [not _contains(seen.get(u, none), k) for u, k in zip(users, target_ks, strict=True)], dtype=bool
    )
    free = len(catalog) - np.array([len(seen.get(u, none)) for u in users], dtype=np.int64) - target_unseen
    short = np.flatnonzero(free < n - 1)
    if len(short):
        fewest = int(free[short].min())
        sample = sorted({users[i] for i in short})[:_SAMPLE]
        raise DataError(
            f"{len(short)} example(s) have fewer than n - 1 = {n - 1} items their user never interacted with "
            f"(users {sample}; fewest: {fewest}): lower {NUM_CANDIDATES_KEY} to at most {fewest + 1}, or drop "
            "those users"
        )

    hashes = event_hash(users, targets)
    rows_of: dict[str, list[int]] = {}
    for row, user in enumerate(users):
        rows_of.setdefault(user, []).append(row)
    lists: list[list[str]] = [[] for _ in users]
    positions = np.empty(len(users), dtype=np.int64)
    unseen = np.ones(len(catalog), dtype=bool)
    # One user at a time: the unseen pool is built once per user and never stored for all users (ML-1M
    # would need 6040 x ~3500 ids).
    for user, rows in rows_of.items():
        unseen[:] = True
        unseen[seen.get(user, none)] = False
        user_pool = np.flatnonzero(unseen)
        for row in rows:
            k = target_ks[row]
            pool = user_pool[user_pool != k] if target_unseen[row] else user_pool
            rng = np.random.default_rng([seed, int(hashes[row])])
            negatives = rng.choice(pool, size=n - 1, replace=False)
            order = rng.permutation(n)
            lists[row] = catalog[np.concatenate(([k], negatives))[order]].tolist()
            positions[row] = int(np.flatnonzero(order == 0)[0])
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": targets,
            "candidate_item_ids": lists,
            "target_position": positions,
        },
        index=examples.index,
    )


def candidates_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 (hex) over a candidate frame's values: equal fingerprints, equal candidate sets.

    Args:
        frame: a frame from :func:`draw_candidates`.

    Returns:
        The hex digest (row order matters, the index does not).
    """
    digest = hashlib.sha256()
    digest.update(f"[candidates:{len(frame)}]\n".encode())
    for column in ("user_id", "item_id"):
        digest.update("\x1e".join(frame[column].astype(str)).encode())
        digest.update(b"\x1d")
    digest.update("\x1e".join("\x1f".join(map(str, ids)) for ids in frame["candidate_item_ids"]).encode())
    digest.update(b"\x1d")
    digest.update(frame["target_position"].to_numpy(dtype="<i8").tobytes())
    return digest.hexdigest()


def save_candidates(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write candidates to parquet atomically, with their fingerprint in the schema metadata.

    The file is written beside ``path`` and renamed over it: a reader sees the old file or the new
    one, never half of one.

    Args:
        frame: a frame from :func:`draw_candidates` (the index is not kept).
        path: destination ``.parquet`` file (its folder is created).

    Returns:
        The path.
    """
    missing = [c for c in CANDIDATE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"candidate frame lacks {missing}: save a frame from draw_candidates")
    path = Path(path)
    table = pa.table(
        {
            "user_id": pa.array(frame["user_id"].astype(str).tolist(), type=pa.string()),
            "item_id": pa.array(frame["item_id"].astype(str).tolist(), type=pa.string()),
            "candidate_item_ids": pa.array(
                [[str(i) for i in ids] for ids in frame["candidate_item_ids"]], type=pa.list_(pa.string())
            ),
            "target_position": pa.array(frame["target_position"].to_numpy(dtype=np.int64), type=pa.int64()),
        }
    )
    table = table.replace_schema_metadata({FINGERPRINT_KEY: candidates_fingerprint(frame).encode()})
    with staged_file(path) as staging:
        pq.write_table(table, staging)
    return path


def load_candidates(path: str | Path) -> pd.DataFrame:
    """Read candidates written by :func:`save_candidates` and check them against their fingerprint.

    Args:
        path: the parquet file.

    Returns:
        The frame (fresh RangeIndex; ``candidate_item_ids`` as lists of str).

    Raises:
        DataError: the file is missing, lacks a fingerprint, or no longer matches it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"no candidate file at {path}: draw the candidates (draw_candidates + save_candidates)"
        )
    table = pq.read_table(path)
    recorded = (table.schema.metadata or {}).get(FINGERPRINT_KEY)
    if recorded is None or any(c not in table.column_names for c in CANDIDATE_COLUMNS):
        raise DataError(f"{path} is not a peftrec candidate file: delete it so the candidates are redrawn")
    frame = table.drop_columns(["candidate_item_ids"]).to_pandas()
    # pandas would hand the lists back as numpy arrays; rows hold plain lists.
    frame["candidate_item_ids"] = pd.Series(table.column("candidate_item_ids").to_pylist(), dtype=object)
    frame = frame[list(CANDIDATE_COLUMNS)]
    if candidates_fingerprint(frame) != recorded.decode():
        raise DataError(
            f"{path} does not match its recorded fingerprint (edited or corrupt): delete it so the "
            "candidates are redrawn"
        )
    return frame


def _seen_by_user(
    interactions: pd.DataFrame, users: set[str], position: dict[str, int]
) -> dict[str, np.ndarray]:
    """Per user among ``users``: sorted distinct catalog positions of the items they interacted with."""
    relevant = interactions[interactions["user_id"].astype(str).isin(users)]
    positions = relevant["item_id"].astype(str).map(position)
    # Interactions with items outside the catalog cannot be drawn anyway.
    keep = positions.notna().to_numpy()
    codes, names = pd.factorize(relevant["user_id"].astype(str).to_numpy()[keep])
    items = positions.to_numpy()[keep].astype(np.int64)
    order = np.lexsort((items, codes))
    codes, items = codes[order], items[order]
    distinct = np.ones(len(items), dtype=bool)
    distinct[1:] = (codes[1:] != codes[:-1]) | (items[1:] != items[:-1])
    codes, items = codes[distinct], items[distinct]
    bounds = np.searchsorted(codes, np.arange(len(names) + 1))
    return {str(name): items[bounds[c] : bounds[c + 1]] for c, name in enumerate(names)}


def _contains(sorted_ids: np.ndarray, k: int) -> bool:
    at = int(np.searchsorted(sorted_ids, k))
    return at < len(sorted_ids) and sorted_ids[at] == k
