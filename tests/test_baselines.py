"""The trivial click baselines use only earlier ratings; values computed by hand."""

import numpy as np
import pandas as pd

from peftrec.baselines import click_baseline_scores, earlier_means

INTERACTIONS = pd.DataFrame(
    {
        "user_id": ["a", "b", "c", "a", "b"],
        "item_id": ["x", "x", "y", "y", "y"],
        "rating": [5.0, 1.0, 4.0, 1.0, 3.0],
        "timestamp": [10, 20, 30, 40, 50],
    }
)


def test_means_use_only_strictly_earlier_events():
    examples = pd.DataFrame({"user_id": ["a", "b", "c", "b"], "item_id": ["x", "x", "y", "y"]})
    shuffled = INTERACTIONS.sample(frac=1.0, random_state=3)  # input order is irrelevant
    means = earlier_means(shuffled, examples)
    # (a,x) is the first event: nothing before it. (b,x): item x had 5. (c,y): y unseen, global (5+1)/2.
    # (b,y): y had 4 and 1 -> 2.5; global before it: (5+1+4+1)/4 = 2.75.
    np.testing.assert_allclose(means["item_mean"], [np.nan, 5.0, np.nan, 2.5])
    np.testing.assert_allclose(means["global_mean"], [np.nan, 5.0, 3.0, 2.75])


def test_baseline_scores_by_hand():
    examples = pd.DataFrame(
        {
            "user_id": ["b", "c", "b"],
            "item_id": ["x", "y", "y"],
            "history_ratings": [[4.0, 2.0], [5.0, 5.0, 2.0], [1.0]],
        }
    )
    scores = click_baseline_scores(INTERACTIONS, examples)
    np.testing.assert_allclose(scores["item_mean_before"], [5.0, 3.0, 2.5])  # (c,y): no earlier y -> global 3
    np.testing.assert_allclose(scores["user_history_mean"], [3.0, 4.0, 1.0])
    # offset: (b,x) item 5 - global 5 = 0; (c,y) no item mean -> 0; (b,y) 2.5 - 2.75 = -0.25
    np.testing.assert_allclose(scores["user_mean_plus_item_offset"], [3.0, 4.0, 0.75])
