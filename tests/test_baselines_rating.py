"""Rating baselines: trivial means by hand; biased MF learns a low-rank matrix (both backends)."""

import numpy as np
import pandas as pd
import pytest

from peftrec.baselines import MFHyper, fit_biased_mf, rating_baseline_predictions

TRAIN = pd.DataFrame(
    {
        "user_id": ["u1", "u1", "u2", "u2"],
        "item_id": ["i1", "i2", "i1", "i3"],
        "rating": [5.0, 3.0, 4.0, 1.0],
        "timestamp": [1, 2, 3, 4],
    }
)
EXAMPLES = pd.DataFrame(
    {
        "user_id": ["u1", "u3", "u2", "u1"],
        "item_id": ["i3", "i1", "i9", "i1"],
        "history_ratings": [[5.0, 3.0], [2.0], [], [5.0, 5.0]],
    }
)


def test_trivial_rating_baselines_by_hand():
    pred = rating_baseline_predictions(TRAIN, EXAMPLES, mf_backend="numpy")
    # global mean 13/4 = 3.25; item means i1 4.5, i2 3, i3 1; user means u1 4, u2 2.5.
    np.testing.assert_allclose(pred["global_mean"], [3.25] * 4)
    np.testing.assert_allclose(pred["item_mean"], [1.0, 4.5, 3.25, 4.5])  # i9 unseen -> global
    np.testing.assert_allclose(pred["user_mean"], [4.0, 3.25, 2.5, 4.0])  # u3 unseen -> global
    np.testing.assert_allclose(pred["user_history_mean"], [4.0, 2.0, 3.25, 5.0])  # empty history -> global
    # history mean + (item mean - 3.25): 4 - 2.25; 2 + 1.25; 3.25 + 0 (i9 unseen); 5 + 1.25 = 6.25 -> clipped 5
    np.testing.assert_allclose(pred["user_mean_plus_item_offset"], [1.75, 3.25, 3.25, 5.0])
    assert pred["biased_mf"].shape == (4,)
    assert ((pred["biased_mf"] >= 1) & (pred["biased_mf"] <= 5)).all()


def low_rank_ratings(seed=0, users=80, items=60, rank=2):
    rng = np.random.default_rng(seed)
    u, v = rng.normal(0, 0.9, (users, rank)), rng.normal(0, 0.9, (items, rank))
    full = 3.0 + u @ v.T
    rows, cols = np.meshgrid(np.arange(users), np.arange(items), indexing="ij")
    frame = pd.DataFrame(
        {
            "user_id": [f"u{r}" for r in rows.ravel()],
            "item_id": [f"i{c}" for c in cols.ravel()],
            "rating": full.ravel(),
            "timestamp": np.arange(full.size),
        }
    )
    held_out = rng.random(len(frame)) < 0.3
    return frame[~held_out], frame[held_out]


@pytest.mark.parametrize("backend", ["numpy", "surprise"])
def test_biased_mf_learns_a_low_rank_matrix(backend):
    if backend == "surprise":
        pytest.importorskip("surprise")
    train, test = low_rank_ratings()
    mf = fit_biased_mf(train, backend=backend, hyper=MFHyper(n_factors=4, n_epochs=150, lr=0.02, reg=0.01))
    assert mf.backend == backend
    rmse = np.sqrt(np.mean((mf.predict(test["user_id"], test["item_id"]) - test["rating"]) ** 2))
    baseline = np.sqrt(np.mean((train["rating"].mean() - test["rating"]) ** 2))
    assert rmse < 0.4 * baseline, (rmse, baseline)


def test_biased_mf_unknown_ids_fall_back_on_biases_and_is_deterministic():
    train, _ = low_rank_ratings(users=20, items=15)
    a = fit_biased_mf(train, seed=3, backend="numpy", hyper=MFHyper(n_epochs=3))
    b = fit_biased_mf(
        train.sample(frac=1.0, random_state=1), seed=3, backend="numpy", hyper=MFHyper(n_epochs=3)
    )
    np.testing.assert_array_equal(a.user_factors, b.user_factors)  # row order of the input is irrelevant
    pred = a.predict(["u1", "nobody", "u1", "nobody"], ["i1", "i1", "nothing", "nothing"])
    known_u, known_i = a.users.get_loc("u1"), a.items.get_loc("i1")
    assert pred[1] == pytest.approx(a.global_mean + a.item_bias[known_i])
    assert pred[2] == pytest.approx(a.global_mean + a.user_bias[known_u])
    assert pred[3] == pytest.approx(a.global_mean)


def test_auto_backend_falls_back_on_numpy_without_surprise(monkeypatch):
    import peftrec.baselines.mf as mf

    train, _ = low_rank_ratings(users=10, items=8)
    monkeypatch.setattr(mf, "surprise_available", lambda: False)
    assert fit_biased_mf(train, hyper=MFHyper(n_epochs=1)).backend == "numpy"
    with pytest.raises(ValueError):
        fit_biased_mf(train, backend="torch")
