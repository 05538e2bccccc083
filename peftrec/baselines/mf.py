"""Biased matrix factorisation (Funk SVD as in Surprise's ``SVD``): ``mu + b_u + b_i + p_u . q_i``.

Two backends fit the same parameters, and one :meth:`BiasedMF.predict` serves both:

- ``"surprise"``: ``surprise.SVD`` (scikit-surprise 1.1.5 ships binary wheels that install and run with
  numpy 2.4; benchmarks/README.md). Optional (``pip install peftrec[baselines]``), never required.
- ``"numpy"``: a compact re-implementation with Surprise's defaults (100 factors, 20 epochs, lr 0.005,
  reg 0.02, init N(0, 0.1)). Surprise updates after every single rating in a Cython loop; pure numpy
  cannot, so this takes SGD steps on small shuffled mini-batches, summing (not averaging) the
  per-rating gradients. With 256 ratings per step, a user or an item rarely appears twice in one
  step, so each step is close to 256 sequential updates, and the RMSE matches Surprise's (README).

``"auto"`` picks Surprise when it imports, else numpy. Both are deterministic given ``seed`` and do not
depend on the input's row order (ratings are put in canonical event order first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from peftrec.data import sort_events

BACKENDS = ("auto", "surprise", "numpy")


@dataclass(frozen=True)
class MFHyper:
    """SGD hyperparameters; the defaults are Surprise's ``SVD`` defaults."""

    n_factors: int = 100
    n_epochs: int = 20
    lr: float = 0.005
    reg: float = 0.02
    init_std: float = 0.1
    batch_size: int = 256  # numpy backend only: ratings per SGD step


@dataclass(frozen=True, eq=False)
class BiasedMF:
    """A fitted biased MF model.

    Attributes:
        global_mean: Mean training rating ``mu``.
        users, items: Raw ids, in the row order of the bias and factor arrays.
        user_bias, item_bias: ``b_u``, ``b_i``.
        user_factors, item_factors: ``p_u``, ``q_i`` (one row per user / item).
        backend: ``"surprise"`` or ``"numpy"``: which one fitted it.
    """

    global_mean: float
    users: pd.Index
    items: pd.Index
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    backend: str

    def predict(self, user_ids, item_ids) -> np.ndarray:
        """Predicted ratings, unclipped; an unknown user or item contributes no bias and no factors
        (Surprise's rule), so a pair of unknowns gets the global mean.

        Args:
            user_ids, item_ids: Raw ids, one pair per prediction.

        Returns:
            float64 array of predictions.
        """
        u = self.users.get_indexer(pd.Index(user_ids, dtype=object))
        i = self.items.get_indexer(pd.Index(item_ids, dtype=object))
        known_u, known_i = u >= 0, i >= 0
        pred = np.full(len(u), self.global_mean, dtype=np.float64)
        pred[known_u] += self.user_bias[u[known_u]]
        pred[known_i] += self.item_bias[i[known_i]]
        both = known_u & known_i
        pred[both] += np.einsum("nk,nk->n", self.user_factors[u[both]], self.item_factors[i[both]])
        return pred


def surprise_available() -> bool:
    """Return True when scikit-surprise imports."""
    try:
        import surprise  # noqa: F401
    except ImportError:
        return False
    return True


def fit_biased_mf(
    train_events: pd.DataFrame, *, seed: int = 0, backend: str = "auto", hyper: MFHyper | None = None
) -> BiasedMF:
    """Fit biased MF on explicit ratings.

    Args:
        train_events: ``user_id``, ``item_id``, ``rating``, ``timestamp``.
        seed: Seed of the initialisation and of the rating order.
        backend: ``"auto"``, ``"surprise"`` or ``"numpy"`` (module docstring).
        hyper: SGD hyperparameters (Surprise's defaults when omitted).

    Returns:
        The fitted :class:`BiasedMF`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if len(train_events) == 0:
        raise ValueError("biased MF needs at least one training rating")
    hyper = hyper or MFHyper()
    events = sort_events(train_events)
    if backend == "surprise" or (backend == "auto" and surprise_available()):
        return _fit_surprise(events, seed, hyper)
    return _fit_numpy(events, seed, hyper)


def _fit_numpy(events: pd.DataFrame, seed: int, h: MFHyper) -> BiasedMF:
    u, users = pd.factorize(events["user_id"])
    i, items = pd.factorize(events["item_id"])
    r = events["rating"].to_numpy(dtype=np.float64)
    mu = float(r.mean())
    rng = np.random.default_rng(seed)
    bu, bi = np.zeros(len(users)), np.zeros(len(items))
    pu = rng.normal(0.0, h.init_std, (len(users), h.n_factors))
    qi = rng.normal(0.0, h.init_std, (len(items), h.n_factors))
    for _ in range(h.n_epochs):
        order = rng.permutation(len(r))
        for start in range(0, len(r), h.batch_size):
            rows = order[start : start + h.batch_size]
            ub, ib = u[rows], i[rows]
            pub, qib = pu[ub], qi[ib]
            err = r[rows] - (mu + bu[ub] + bi[ib] + np.einsum("nk,nk->n", pub, qib))
            bu += h.lr * np.bincount(ub, weights=err - h.reg * bu[ub], minlength=len(bu))
            bi += h.lr * np.bincount(ib, weights=err - h.reg * bi[ib], minlength=len(bi))
            _scatter_add(pu, ub, h.lr * (err[:, None] * qib - h.reg * pub))
            _scatter_add(qi, ib, h.lr * (err[:, None] * pub - h.reg * qib))
    return BiasedMF(mu, pd.Index(users, dtype=object), pd.Index(items, dtype=object), bu, bi, pu, qi, "numpy")


def _scatter_add(target: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``np.add.at(target, rows, values)`` for 2-D values, about twice as fast: sum duplicate rows first."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    target[sorted_rows[starts]] += np.add.reduceat(values[order], starts, axis=0)


def _fit_surprise(events: pd.DataFrame, seed: int, h: MFHyper) -> BiasedMF:
    from surprise import SVD, Dataset, Reader

    low, high = float(events["rating"].min()), float(events["rating"].max())
    data = Dataset.load_from_df(events[["user_id", "item_id", "rating"]], Reader(rating_scale=(low, high)))
    trainset = data.build_full_trainset()
    algo = SVD(
        n_factors=h.n_factors,
        n_epochs=h.n_epochs,
        lr_all=h.lr,
        reg_all=h.reg,
        init_std_dev=h.init_std,
        random_state=seed,
    )
    algo.fit(trainset)
    users = pd.Index([trainset.to_raw_uid(k) for k in range(trainset.n_users)], dtype=object)
    items = pd.Index([trainset.to_raw_iid(k) for k in range(trainset.n_items)], dtype=object)
    return BiasedMF(
        float(trainset.global_mean),
        users,
        items,
        np.asarray(algo.bu, dtype=np.float64),
        np.asarray(algo.bi, dtype=np.float64),
        np.asarray(algo.pu, dtype=np.float64),
        np.asarray(algo.qi, dtype=np.float64),
        "surprise",
    )
