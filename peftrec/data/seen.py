"""What a user had already interacted with before an example's event (for excluding it from rankings)."""

from __future__ import annotations

import pandas as pd

from peftrec.data.schema import sort_events


def items_before(interactions: pd.DataFrame, examples: pd.DataFrame) -> list[frozenset[str]]:
    """For each example, the set of items its user rated strictly before the example's own event
    (see :func:`sequences_before`)."""
    return [frozenset(s) for s in sequences_before(interactions, examples)]


def sequences_before(interactions: pd.DataFrame, examples: pd.DataFrame) -> list[list[str]]:
    """For each example, the items its user rated strictly before the example's own event, oldest first.

    "Before" is the canonical event order (:func:`peftrec.data.schema.sort_events`), the one the splits
    use, so a same-second tie is resolved the same way here as in the example's history.

    Args:
        interactions: every rating (any order).
        examples: rows with ``user_id`` and ``item_id`` (the target event; one rating per user and item).

    Returns:
        One list of item ids per example, in row order (all of the user's earlier items, not only the
        ``history_len`` shown in the prompt).
    """
    events = sort_events(interactions)
    sequences: dict[str, list[str]] = {}
    for user, item in zip(events["user_id"], events["item_id"], strict=True):
        sequences.setdefault(user, []).append(item)
    positions = {user: {item: k for k, item in enumerate(items)} for user, items in sequences.items()}
    result = []
    for user, item in zip(examples["user_id"], examples["item_id"], strict=True):
        items = sequences.get(user, [])
        cut = positions.get(user, {}).get(item, len(items))
        result.append(items[:cut])
    return result
