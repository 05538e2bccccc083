"""The user's own interactions (and optional items) from CSV, TSV or parquet, with a column map."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from peftrec.data.schema import (
    INTERACTION_COLUMNS,
    INTERACTION_KEY,
    ITEM_COLUMNS,
    ITEM_KEY,
    RecData,
    ids_to_str,
    validate,
)
from peftrec.errors import DataError

logger = logging.getLogger(__name__)

# Separator by file extension (compression suffixes such as .gz are looked through).
_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET = {".parquet", ".pq"}
_COMPRESSION = {".gz", ".bz2", ".zip", ".xz", ".zst"}


def load_tabular(
    interactions_path: str | Path,
    items_path: str | Path | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    sep: str | None = None,
    name: str | None = None,
) -> RecData:
    """Read the user's own files into the schema.

    Args:
        interactions_path: CSV / TSV / parquet with one row per rating.
        items_path: Optional items file; without it every title is the item id (a warning says so).
        columns: Schema name -> the file's column name for ``user_id``, ``item_id``, ``rating``,
            ``timestamp``; unmapped names are expected as is. Timestamps may be numbers (seconds) or
            dates.
        item_columns: Schema name -> the items file's column name for ``item_id``, ``title`` and any
            extra text columns to keep (``{"genres": "Genre"}``); without extras, every other column of
            the items file is kept under its own name.
        sep: Field separator; ``None`` picks one by extension (.csv ",", .tsv/.tab tab, else sniffed).
        name: Dataset name; defaults to the interactions file's stem.

    Returns:
        A validated :class:`RecData`.

    Raises:
        DataError: a file is missing or unreadable, a mapped column is absent, or values do not parse.
    """
    interactions_path = Path(interactions_path)
    raw = read_table(interactions_path, sep=sep)
    interactions = _select(
        raw, columns or {}, INTERACTION_COLUMNS, key=INTERACTION_KEY, path=interactions_path
    )
    if items_path is None:
        logger.warning(
            "no items file given: every item's title is its id, which tells the model nothing; "
            "set data.items to a file with item_id and title columns"
        )
        ids = ids_to_str(interactions["item_id"], column="item_id", key=INTERACTION_KEY).unique()
        items = pd.DataFrame({"item_id": ids, "title": ids})
    else:
        items_path = Path(items_path)
        raw_items = read_table(items_path, sep=sep, role="items")
        item_map = dict(item_columns or {})
        extras = [c for c in item_map if c not in ITEM_COLUMNS]
        if not extras:
            # No extra text named: keep every other column, under its own name.
            mapped = {item_map.get(c, c) for c in ITEM_COLUMNS}
            item_map.update({str(c): str(c) for c in raw_items.columns if c not in mapped})
        wanted = (*ITEM_COLUMNS, *(c for c in item_map if c not in ITEM_COLUMNS))
        items = _select(raw_items, item_map, wanted, key=ITEM_KEY, path=items_path)
        items = items.drop_duplicates()
    stem = interactions_path.name.split(".")[0]
    return validate(RecData(name or stem, interactions, items))


def read_table(path: Path, *, sep: str | None = None, role: str = "interactions") -> pd.DataFrame:
    """Read a CSV / TSV / parquet file; delimited text is read as str (ids keep leading zeros).

    Args:
        path: The file.
        sep: Separator for delimited text; ``None`` picks one by extension or sniffs it.
        role: ``"interactions"`` or ``"items"``: names the config key in error messages.

    Returns:
        The raw frame.

    Raises:
        DataError: the file is missing or cannot be parsed.
    """
    if not path.is_file():
        raise DataError(
            f"{role} file not found: {path}: set data.{role} to an existing CSV, TSV or parquet file"
        )
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _COMPRESSION]
    ext = suffixes[-1] if suffixes else ""
    try:
        if ext in _PARQUET and sep is None:
            return pd.read_parquet(path)
        separator = sep if sep is not None else _SEPARATORS.get(ext)
        return pd.read_csv(
            path,
            sep=separator,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            engine="python" if separator is None else "c",
        )
    except (ValueError, OSError, csv.Error, pd.errors.ParserError) as err:
        raise DataError(
            f"cannot read {path}: {err}. Use CSV (.csv), TSV (.tsv) or parquet, or set data.sep to the "
            "field separator"
        ) from err


def _select(
    raw: pd.DataFrame, mapping: Mapping[str, str], wanted: tuple[str, ...], *, key: str, path: Path
) -> pd.DataFrame:
    """Pick and rename the mapped columns; a missing one is reported with the columns that exist."""
    unknown = [k for k in mapping if k not in wanted]
    if unknown:
        raise DataError(f"{key} has unknown key(s) {unknown}: the keys are schema names {list(wanted)}")
    out = {}
    for field in wanted:
        column = mapping.get(field, field)
        if column not in raw.columns:
            how = f"your map says {key}.{field}={column}" if field in mapping else f"no column {column!r}"
            raise DataError(
                f"{path} has no column for {field!r} ({how}); its columns are {list(map(str, raw.columns))}. "
                f"Set {key}.{field}=<name> to the column that holds it."
            )
        out[field] = raw[column]
    return pd.DataFrame(out)
