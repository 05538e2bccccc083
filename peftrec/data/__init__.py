"""Data: one schema for interactions and items, readers per source, chronological splits.

Typical use::

    from peftrec.assets import resolve_dataset
    from peftrec.data import click_split, load_recdata

    data = load_recdata(resolve_dataset("movielens-100k"))
    split = click_split(data, protocol="tallrec", history_len=10)
    split.save("cache/splits/ml-100k-tallrec")
"""

from peftrec.data.movielens import (
    LAYOUTS,
    load_recdata,
    read_grouplens_1m,
    read_grouplens_100k,
    read_recbole,
    year_from_title,
)
from peftrec.data.schema import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    RecData,
    event_hash,
    sort_events,
    validate,
)
from peftrec.data.seen import items_before
from peftrec.data.splits import (
    COLD_COLUMN,
    COLD_START,
    EXAMPLE_COLUMNS,
    PROTOCOLS,
    SPLIT_NAMES,
    ClickSplit,
    ExampleSplit,
    click_examples,
    click_split,
    example_split,
    training_events,
)
from peftrec.data.tabular import load_tabular

__all__ = [
    "COLD_COLUMN",
    "COLD_START",
    "EXAMPLE_COLUMNS",
    "ExampleSplit",
    "example_split",
    "training_events",
    "INTERACTION_COLUMNS",
    "ITEM_COLUMNS",
    "LAYOUTS",
    "PROTOCOLS",
    "SPLIT_NAMES",
    "ClickSplit",
    "RecData",
    "click_examples",
    "click_split",
    "event_hash",
    "items_before",
    "load_recdata",
    "load_tabular",
    "read_grouplens_100k",
    "read_grouplens_1m",
    "read_recbole",
    "sort_events",
    "validate",
    "year_from_title",
]
