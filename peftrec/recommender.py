"""Recommend with a saved head: base model + adapter(s) + the recipe that trained them.

Typical use::

    from peftrec import Recommender

    rec = Recommender.from_pretrained("outputs/lora_click/2026-11-24_03-59-41/adapter")  # or "you/repo"
    rec.recommend("196", top_k=10, max_candidates=200)          # a user of the data: their last ratings
    rec.recommend(history=["Toy Story (1995)", "Heat (1995)"])   # anyone: titles (or ids, or (item, rating))

The adapter's ``peftrec_recipe.yaml`` gives the base model, the task with its template and label words,
and the data; each request is turned into rows of the split's example schema (``user_id``, ``item_id``,
``rating``, ``timestamp``, ``history_item_ids``, ``history_ratings``, ``label``) and scored by the task
object the runner uses, so the prompt is exactly the one the head was trained on.

Scores by task:

- click: p(yes) for each candidate (one forward pass per candidate); rating: the expected rating.
  Candidates default to every catalog item the user has not rated (``max_candidates``: the most
  popular of them first, since each costs a forward pass).
- generative, catalog ranking: the trie-constrained beam search over the catalog (seen items excluded);
  the score is log p(title, eos | prompt), the quantity the search ranks by. With ``candidates`` (or
  ``max_candidates``) each candidate's title is scored by that log-probability instead.
- generative, candidate ranking: one prompt listing up to ``task.num_candidates`` lettered candidates
  (default: the most popular unseen items); the score is each letter's logit.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch
from accelerate.utils import send_to_device
from omegaconf import DictConfig, OmegaConf

from peftrec.adapters import ADAPTER_CONFIG, adapter_recipe, resolve_adapter
from peftrec.assets import resolve_model
from peftrec.batching import make_loader, tokenize_with_targets
from peftrec.data import RecData
from peftrec.errors import PeftrecError
from peftrec.methods import load_head
from peftrec.models import load_base_model, load_tokenizer, resolve_precision
from peftrec.paths import RECIPE_FILE
from peftrec.tasks.generative import NextItemTask, target_logits
from peftrec.tasks.label_task import LabelWordTask
from peftrec.tasks.rating import RatingTask

DEFAULT_ADAPTER = "default"  # peft's name for the first adapter of a PeftModel
MERGED = "MERGED"  # the kind of a head already folded into the base weights (merge_and_export's output)
BOTTLENECK = "BOTTLENECK"
OUTPUT_COLUMNS = ["item_id", "title", "score", "rank"]
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}

HistoryEntry = str | int | tuple[str | int, float]


@dataclass
class Head:
    """One saved head on the shared base model.

    Attributes:
        name: the adapter name (``"default"`` for the first; the keys of ``extra_adapters``).
        source: what the caller passed (a folder or a Hub repo id).
        folder: the local folder.
        recipe: the resolved config that trained it.
        task: the task object built from the recipe (click, rating or generative).
        kind: the head type from ``adapter_config.json`` (``LORA``, ``PREFIX_TUNING``, ``BOTTLENECK``, ...),
            or ``MERGED`` for a merged export.
    """

    name: str
    source: str
    folder: Path
    recipe: DictConfig
    task: LabelWordTask | NextItemTask
    kind: str

    @property
    def history_len(self) -> int:
        """How many of a user's latest ratings a prompt shows (as in training)."""
        return int(self.recipe.data.history_len)


@dataclass(frozen=True)
class _Request:
    """One user's request, resolved to item ids: the prompt's history and what never to recommend."""

    user_id: str | None
    history_item_ids: list[str]
    history_ratings: list[float]
    seen: frozenset[str]


class Recommender:
    """A base model with one or more saved heads, the catalog, and each head's task.

    Build it with :meth:`from_pretrained`.

    Args:
        model: the base model with its head(s) attached (a ``PeftModel``, a ``BottleneckModel``, or a
            merged plain model), in eval mode on ``device``.
        tokenizer: the base model's tokenizer (:func:`peftrec.models.load_tokenizer`).
        data: the catalog and interactions.
        heads: the heads by adapter name; the first is active by default.
        model_path: the base model's local folder (to reload it for :meth:`merge_and_export`).
        device: where the model runs.
        precision: ``"bf16"``, ``"fp16"`` or ``"fp32"`` (half: frozen weights in that dtype and autocast,
            as in training).
        batch_size: rows per forward pass.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        data: RecData,
        heads: Mapping[str, Head],
        *,
        model_path: Path,
        device: torch.device,
        precision: str,
        batch_size: int = 32,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.data = data
        self.heads = dict(heads)
        self.model_path = Path(model_path)
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self._active = next(iter(self.heads))
        self.titles = data.item_titles()
        self.item_ids = list(self.titles)
        self._id_of_title: dict[str, str] = {}
        for item, title in self.titles.items():
            self._id_of_title.setdefault(title, item)  # shared titles: the first catalog entry
        self._id_of_folded_title: dict[str, list[str]] = {}
        for title, item in self._id_of_title.items():
            self._id_of_folded_title.setdefault(title.casefold(), []).append(item)
        events = data.interactions
        # Interactions are in canonical event order (peftrec.data.schema): a user's rows are oldest first.
        self._user_rows = events.groupby("user_id", sort=False).indices
        self._event_items = events["item_id"].astype(str).to_numpy()
        self._event_ratings = events["rating"].to_numpy(dtype=np.float64)
        counts = events["item_id"].astype(str).value_counts()
        # Most popular first; ties in catalog order, so the draw is the same on every run.
        popularity = pd.Series([counts.get(i, 0) for i in self.item_ids], index=self.item_ids)
        self._by_popularity = popularity.sort_values(ascending=False, kind="stable").index.tolist()
        # A history given without ratings counts as liked: each item gets the data's top rating.
        self.default_rating = float(events["rating"].max()) if len(events) else 5.0

    # --- loading ------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        adapter: str | Path,
        *,
        data: RecData | Mapping[str, Any] | DictConfig | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        extra_adapters: Mapping[str, str | Path] | None = None,
        batch_size: int | None = None,
    ) -> Recommender:
        """Load the base model, attach the head(s), build each head's task and load the data.

        Args:
            adapter: an adapter folder (a run's ``adapter/``, or the run folder), a Hub repo id
                (``owner/name``), or a folder written by :meth:`merge_and_export`.
            data: the catalog and interactions: None for the recipe's ``data`` section; a mapping merged
                over that section (e.g. ``{"interactions": "ratings.csv", "items": "items.csv"}``); or a
                :class:`peftrec.data.RecData`. Prompts keep the head's ``history_len`` and ``like_threshold``.
            device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
            precision: ``"auto"`` (bf16 where the hardware computes it natively), ``"bf16"``, ``"fp16"`` (CUDA)
                or ``"fp32"``.
            extra_adapters: more heads for the same base model, by name (``{"rating": "you/repo"}``);
                choose one per request with ``adapter_name=``. Each keeps its own recipe and task.
            batch_size: rows per forward pass (default: the recipe's ``trainer.eval_batch_size``).

        Returns:
            The recommender, with the first head active.

        Raises:
            PeftrecError: an unusable adapter, heads trained on different base models, heads that peft
                cannot hold together (the bottleneck adapter, or different head types).
        """
        merged = _merged_folder(adapter)
        folder = merged or resolve_adapter(adapter)
        recipe = adapter_recipe(folder)
        extras = dict(extra_adapters or {})
        if merged is not None and extras:
            raise PeftrecError(
                f"{folder} is a merged model: it takes no extra adapters. Load the heads on the original base "
                "model instead (Recommender.from_pretrained(<adapter folder>, extra_adapters=...))"
            )
        if DEFAULT_ADAPTER in extras:
            raise PeftrecError(
                f"the first adapter is named {DEFAULT_ADAPTER!r}: give the extra adapters other names"
            )
        extra_folders = {name: resolve_adapter(source) for name, source in extras.items()}
        extra_recipes = {name: adapter_recipe(f) for name, f in extra_folders.items()}
        kinds = {DEFAULT_ADAPTER: MERGED if merged is not None else _head_kind(folder)}
        kinds.update({name: _head_kind(f) for name, f in extra_folders.items()})
        if extras and BOTTLENECK in kinds.values():
            raise PeftrecError(
                "the bottleneck adapter (peftrec's own) cannot share a base model with other adapters: peft's "
                "multi-adapter switching does not know it. Use one Recommender per bottleneck adapter"
            )

        for name in extras:
            _check_adapter_name(name, kinds[name])
        model_path = merged or resolve_model(recipe.model.name)
        for name, other in extra_recipes.items():
            _check_same_base(recipe, other, name, model_path)
        if data is None or isinstance(data, Mapping | DictConfig):
            from peftrec.run import load_data  # the runner's loader: the same data as training

            data_cfg = (
                recipe.data if data is None else OmegaConf.merge(recipe.data, OmegaConf.create(dict(data)))
            )
            data = load_data(data_cfg)  # before the model: a bad path fails in a second, not after loading
        dev = torch.device(device) if device is not None else _default_device()
        precision = resolve_precision(precision, dev)
        tokenizer = load_tokenizer(model_path, max_length=recipe.task.max_length)
        quantization = recipe.model.get("quantization")
        model = load_base_model(
            model_path,
            precision=precision,
            attn_implementation=recipe.model.attn_implementation,
            quantization=quantization,
            device=dev,
        )
        if quantization is None:
            model = model.to(dev)
        if merged is None:
            model = load_head(model, folder)
        for name, extra in extra_folders.items():
            try:
                model.load_adapter(str(extra), adapter_name=name)
            except ValueError as err:  # peft: "Cannot combine adapters with different peft types"
                raise PeftrecError(
                    f"adapter {name!r} ({kinds[name]}) cannot share the base model with a {kinds[DEFAULT_ADAPTER]} "
                    f"head: peft holds several adapters of one type only ({err}). Use one Recommender per type"
                ) from err
        model.eval()

        heads = {DEFAULT_ADAPTER: _head(DEFAULT_ADAPTER, adapter, folder, recipe, kinds, tokenizer, data)}
        for name in extras:
            heads[name] = _head(
                name, extras[name], extra_folders[name], extra_recipes[name], kinds, tokenizer, data
            )
        return cls(
            model,
            tokenizer,
            data,
            heads,
            model_path=model_path,
            device=dev,
            precision=precision,
            batch_size=batch_size or int(recipe.trainer.get("eval_batch_size", 32)),
        )

    @property
    def adapter_names(self) -> list[str]:
        """The heads' names, the first one (active by default) first."""
        return list(self.heads)

    # --- recommending -------------------------------------------------------------------------------

    def recommend(
        self,
        user_id: str | int | None = None,
        *,
        history: Sequence[HistoryEntry] | Mapping[str | int, float] | None = None,
        top_k: int = 10,
        candidates: Sequence[str | int] | None = None,
        max_candidates: int | None = None,
        exclude: Iterable[str | int] = (),
        exclude_seen: bool = True,
        adapter_name: str | None = None,
    ) -> pd.DataFrame:
        """The top-K items for one user, or for a history given directly.

        Args:
            user_id: a user of the data: the prompt shows their latest ``history_len`` ratings and
                nothing they rated is recommended.
            history: instead of (or to replace) the user's: items oldest first, as titles or item ids,
                each alone (counted as liked: the data's top rating) or as an ``(item, rating)`` pair, or
                a ``{item: rating}`` mapping. The latest ``history_len`` are shown; none is recommended.
            top_k: how many items to return.
            candidates: rank only these items (titles or ids); seen ones are dropped.
            max_candidates: without ``candidates``, rank only the this-many most popular unseen items
                (click and rating score one forward pass per candidate).
            exclude: more items never to recommend (titles or ids).
            exclude_seen: drop the user's rated items and the history from the ranking (set False to
                score an item the user has seen, e.g. ``candidates=[it]`` for "would they like it again").
            adapter_name: which head answers (default: the first).

        Returns:
            ``item_id``, ``title``, ``score``, ``rank`` (1 = best), at most ``top_k`` rows, best first.

        Raises:
            PeftrecError: neither a user nor a history, an unknown user or item (close titles are named),
                an unknown adapter name.
        """
        request = self._request(
            user_id, history, exclude, self._head(adapter_name), exclude_seen=exclude_seen
        )
        return self._score([request], top_k, candidates, max_candidates, adapter_name)[0]

    def recommend_batch(
        self,
        users: Iterable[str | int],
        *,
        top_k: int = 10,
        candidates: Sequence[str | int] | None = None,
        max_candidates: int | None = None,
        adapter_name: str | None = None,
    ) -> pd.DataFrame:
        """The top-K items of many users of the data (see :meth:`recommend`).

        Returns:
            ``user_id`` plus :meth:`recommend`'s columns, ``top_k`` rows per user, users in the given order.
        """
        frames = list(
            self.iter_recommendations(
                users,
                top_k=top_k,
                candidates=candidates,
                max_candidates=max_candidates,
                adapter_name=adapter_name,
            )
        )
        if not frames:
            return pd.DataFrame(columns=["user_id", *OUTPUT_COLUMNS])
        return pd.concat(frames, ignore_index=True)

    def iter_recommendations(
        self,
        users: Iterable[str | int],
        *,
        top_k: int = 10,
        candidates: Sequence[str | int] | None = None,
        max_candidates: int | None = None,
        adapter_name: str | None = None,
    ) -> Iterator[pd.DataFrame]:
        """:meth:`recommend_batch` one user at a time (for progress bars and streaming writes); users are
        scored together in groups, so batches stay full.

        Yields:
            One frame per user: ``user_id`` plus :meth:`recommend`'s columns.
        """
        head = self._head(adapter_name)
        # Every user checked before any is scored: an unknown id fails at once, not halfway through a file.
        requests = [self._request(user, None, (), head) for user in users]
        # Candidate scoring makes many rows per user; beam search and letter ranking one row per user.
        per_call = 1 if isinstance(head.task, LabelWordTask) else self.batch_size
        for start in range(0, len(requests), per_call):
            group = requests[start : start + per_call]
            frames = self._score(group, top_k, candidates, max_candidates, adapter_name)
            for request, frame in zip(group, frames, strict=True):
                yield frame.assign(user_id=request.user_id)[["user_id", *OUTPUT_COLUMNS]]

    # --- merged export -----------------------------------------------------------------------------

    def merge_and_export(self, output_dir: str | Path, *, adapter_name: str | None = None) -> Path:
        """Fold a LoRA-family head (LoRA, rsLoRA, DoRA, AdaLoRA, IA3) into a copy of the base model and
        save it as a standalone model folder, with the tokenizer and the head's recipe.

        The recommender itself is left as it is (a fresh copy of the base is merged). The folder loads
        with ``transformers.AutoModelForCausalLM``, with ``Recommender.from_pretrained(folder)``, or as a
        run's base model (``model.name=<folder>``). Weights keep the recommender's precision.

        Args:
            output_dir: the folder to write (replaced atomically if it exists).
            adapter_name: which head (default: the first).

        Returns:
            The folder.

        Raises:
            PeftrecError: a prompt/prefix tuning or bottleneck head (no weight update to fold in), or a
                head that is merged already.
        """
        head = self._head(adapter_name)
        if head.kind == MERGED:
            raise PeftrecError(f"{head.folder} is merged already: copy that folder instead")
        from peftrec.export import merge_adapter

        return merge_adapter(head.folder, output_dir, precision=self.precision, device=str(self.device))

    # --- requests -----------------------------------------------------------------------------------

    def item_id(self, item: str | int) -> str:
        """The catalog id of an item given by id or title (exact, else a unique case-insensitive title).

        Raises:
            PeftrecError: no such item; the message lists the closest titles.
        """
        key = str(item)
        if key in self.titles:
            return key
        if key in self._id_of_title:
            return self._id_of_title[key]
        folded = self._id_of_folded_title.get(key.casefold(), [])
        if len(folded) == 1:
            return folded[0]
        close = difflib.get_close_matches(key, list(self._id_of_title), n=5, cutoff=0.5)
        hint = f" Close titles: {'; '.join(close)}." if close else ""
        raise PeftrecError(
            f"unknown item {key!r}: it is neither an item id nor a title of the catalog ({len(self.titles)} "
            f"items).{hint} Pass the exact title (with its year, e.g. 'Toy Story (1995)') or the item id"
        )

    def user_history(
        self, user_id: str | int, history_len: int | None = None
    ) -> tuple[list[str], list[float]]:
        """A user's latest ratings, oldest first: ``(item ids, ratings)``.

        Args:
            user_id: a user of the data.
            history_len: how many (default: the first head's ``history_len``).

        Raises:
            PeftrecError: the user has no ratings in the data.
        """
        rows = self._rows_of(str(user_id))
        n = history_len if history_len is not None else self.heads[self._first].history_len
        last = rows[-n:] if n > 0 else rows[:0]
        return self._event_items[last].tolist(), self._event_ratings[last].tolist()

    @property
    def _first(self) -> str:
        return next(iter(self.heads))

    def _rows_of(self, user: str) -> np.ndarray:
        rows = self._user_rows.get(user)
        if rows is None:
            sample = ", ".join(list(self._user_rows)[:5])
            raise PeftrecError(
                f"user {user!r} has no ratings in the data ({len(self._user_rows)} users, e.g. {sample}): pass a "
                "user id of the data, or the user's history (history=[titles or item ids])"
            )
        return rows

    def _request(
        self,
        user_id: str | int | None,
        history: Sequence[HistoryEntry] | Mapping[str | int, float] | None,
        exclude: Iterable[str | int],
        head: Head,
        *,
        exclude_seen: bool = True,
    ) -> _Request:
        if user_id is None and history is None:
            raise PeftrecError("say whose recommendations: pass user_id=<id of the data> or history=[items]")
        excluded = {self.item_id(item) for item in exclude}
        seen: set[str] = set()
        user = None if user_id is None else str(user_id)
        if user is not None:
            seen.update(self._event_items[self._rows_of(user)].tolist())
        if history is None:
            items, ratings = self.user_history(user, head.history_len)
        else:
            items, ratings = self._history(history)
            seen.update(items)  # all of it, also the part older than the prompt shows
            start = max(0, len(items) - head.history_len)
            items, ratings = items[start:], ratings[start:]
        return _Request(user, items, ratings, frozenset(excluded | seen if exclude_seen else excluded))

    def _history(
        self, history: Sequence[HistoryEntry] | Mapping[str | int, float]
    ) -> tuple[list[str], list[float]]:
        entries = list(history.items()) if isinstance(history, Mapping) else list(history)
        if isinstance(history, str):
            raise PeftrecError("history must be a list of items (titles or ids), not one string")
        items, ratings = [], []
        for entry in entries:
            if isinstance(entry, list | tuple):
                if len(entry) != 2:
                    raise PeftrecError(f"history entry {entry!r}: give an item or an (item, rating) pair")
                item, rating = entry
            else:
                item, rating = entry, self.default_rating
            items.append(self.item_id(item))
            ratings.append(float(rating))
        return items, ratings

    def _head(self, adapter_name: str | None) -> Head:
        name = adapter_name or self._first
        if name not in self.heads:
            raise PeftrecError(f"no adapter named {name!r}: this recommender has {', '.join(self.heads)}")
        return self.heads[name]

    def _activate(self, head: Head) -> None:
        if head.name != self._active:
            self.model.set_adapter(head.name)
            self._active = head.name

    # --- scoring ------------------------------------------------------------------------------------

    def _score(
        self,
        requests: list[_Request],
        top_k: int,
        candidates: Sequence[str | int] | None,
        max_candidates: int | None,
        adapter_name: str | None,
    ) -> list[pd.DataFrame]:
        """Top-K frames, one per request."""
        if top_k < 1:
            raise PeftrecError(f"top_k={top_k}: ask for at least one item")
        head = self._head(adapter_name)
        self._activate(head)
        task = head.task
        explicit = None if candidates is None else list(dict.fromkeys(self.item_id(c) for c in candidates))
        with quiet_datasets():
            if isinstance(task, NextItemTask) and task.ranking == "candidates":
                pools = [self._letter_pool(r, explicit, max_candidates, task) for r in requests]
                return self._letter_ranking(task, requests, pools, top_k)
            if isinstance(task, NextItemTask) and explicit is None and max_candidates is None:
                return self._beam_ranking(task, requests, top_k)
            pools = [self._pool(r, explicit, max_candidates) for r in requests]
            return self._candidate_ranking(task, requests, pools, top_k)

    def _candidate_ranking(
        self, task: LabelWordTask | NextItemTask, requests: list[_Request], pools: list[list[str]], top_k: int
    ) -> list[pd.DataFrame]:
        """Score every (request, candidate) pair: p(yes), the expected rating, or the title's log-probability."""
        rows = [(r, item) for r, pool in zip(requests, pools, strict=True) for item in pool]
        if not rows:  # every candidate was seen: nothing to score
            return [self._frame([], []) for _ in requests]
        frame = self._examples([r for r, _ in rows], [item for _, item in rows], task)
        if isinstance(task, NextItemTask):
            scores = self._title_log_probs(task, frame)
        else:
            scores = self._run(task.dataset(frame, self.titles), task.scorer(frame))
        out, start = [], 0
        for pool in pools:
            out.append(self._top(pool, scores[start : start + len(pool)], top_k))
            start += len(pool)
        return out

    def _pool(self, request: _Request, explicit: list[str] | None, max_candidates: int | None) -> list[str]:
        """The items a request ranks: the given candidates, else the unseen catalog (most popular first)."""
        source = explicit if explicit is not None else self._by_popularity
        pool = [item for item in source if item not in request.seen]
        return pool[:max_candidates] if max_candidates is not None else pool

    def _letter_pool(
        self, request: _Request, explicit: list[str] | None, max_candidates: int | None, task: NextItemTask
    ) -> list[str]:
        letters = len(task.label_ids)
        if explicit is None:
            return self._pool(request, None, min(max_candidates or letters, letters))
        pool = self._pool(request, explicit, max_candidates)
        if len(pool) > letters:
            raise PeftrecError(
                f"this head ranks lists of at most {letters} lettered candidates (task.num_candidates), got "
                f"{len(pool)}: pass at most {letters} candidates, or max_candidates<={letters}"
            )
        return pool

    def _top(self, pool: list[str], scores: np.ndarray, top_k: int) -> pd.DataFrame:
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:top_k]
        items = [pool[k] for k in order]
        return self._frame(items, [float(scores[k]) for k in order])

    def _frame(self, items: list[str], scores: list[float]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "item_id": items,
                "title": [self.titles[i] for i in items],
                "score": np.asarray(scores, dtype=np.float64),
                "rank": np.arange(1, len(items) + 1),
            },
            columns=OUTPUT_COLUMNS,
        )

    def _examples(self, requests: list[_Request], targets: list[str], task: Any) -> pd.DataFrame:
        """Rows in the split's example schema (peftrec.data.splits.EXAMPLE_COLUMNS): what prompts read.

        The label columns are placeholders (the scorers never read them); the rating placeholder is on the
        rating task's scale because its dataset checks every rating is.
        """
        rating = float(task.values[0]) if isinstance(task, RatingTask) else float("nan")
        return pd.DataFrame(
            {
                "user_id": [r.user_id for r in requests],
                "item_id": targets,
                "rating": [rating] * len(requests),
                "timestamp": np.zeros(len(requests), dtype=np.int64),
                "history_item_ids": pd.Series([list(r.history_item_ids) for r in requests], dtype=object),
                "history_ratings": pd.Series([list(r.history_ratings) for r in requests], dtype=object),
                "label": np.zeros(len(requests), dtype=np.int64),
            }
        )

    def _beam_ranking(self, task: NextItemTask, requests: list[_Request], top_k: int) -> list[pd.DataFrame]:
        """Constrained beam search over the catalog; scores are the found titles' log-probabilities."""
        if top_k != task.top_k or task.num_beams < top_k:
            task = copy.copy(task)  # the same catalog and trie, another list length
            task.top_k, task.num_beams = top_k, max(task.num_beams, top_k)
        frame = self._examples(requests, [self.item_ids[0]] * len(requests), task)
        frame["seen_item_ids"] = pd.Series([sorted(r.seen) for r in requests], dtype=object)
        entries = self._run(task.dataset(frame), task.scorer(frame)).astype(np.int64)
        found = [[task.item_ids[e] for e in row if e >= 0] for row in entries]
        pairs = [(r, item) for r, items in zip(requests, found, strict=True) for item in items]
        scores = self._title_log_probs(
            task, self._examples([r for r, _ in pairs], [i for _, i in pairs], task)
        )
        out, start = [], 0
        for items in found:
            out.append(self._frame(items, scores[start : start + len(items)].tolist()))
            start += len(items)
        return out

    def _letter_ranking(
        self, task: NextItemTask, requests: list[_Request], pools: list[list[str]], top_k: int
    ) -> list[pd.DataFrame]:
        """One prompt per request listing its candidates as (A), (B), ...; ranked by the letters' logits."""
        frame = self._examples(requests, [pool[0] if pool else self.item_ids[0] for pool in pools], task)
        frame["candidate_item_ids"] = pd.Series([list(p) for p in pools], dtype=object)
        frame["target_position"] = 0
        logits = self._run(task.dataset(frame), task.scorer(frame))
        return [self._top(pool, logits[k, : len(pool)], top_k) for k, pool in enumerate(pools)]

    def _title_log_probs(self, task: NextItemTask, frame: pd.DataFrame) -> np.ndarray:
        """log p(title, eos | prompt) of each row's ``item_id``: the score beam search ranks titles by."""
        if frame.empty:
            return np.zeros(0)
        targets = [task.trie.target(task.entry_of[str(i)]) for i in frame["item_id"]]
        dataset = tokenize_with_targets(
            task.prompts(frame),
            targets,
            self.tokenizer,
            add_special_tokens=not task.chat,
            max_length=task.max_length,
        )
        return self._run(dataset, _sequence_log_prob)

    def _run(self, dataset: datasets.Dataset, score_fn: Any) -> np.ndarray:
        """Score every row of a tokenized dataset; outputs in the dataset's row order."""
        loader = make_loader(dataset, self.tokenizer, batch_size=self.batch_size, train=False)
        outputs: np.ndarray | None = None
        # The training run scores under Accelerate's autocast (bf16/fp16); doing the same gives the same numbers.
        dtype = AUTOCAST.get(self.precision)
        autocast = torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
        with torch.inference_mode(), autocast:
            for batch in loader:
                batch = send_to_device(batch, self.device)  # tensors move; the collator's host integer stays
                values = score_fn(self.model, batch)
                values = (values.double() if values.is_floating_point() else values.long()).cpu().numpy()
                if outputs is None:
                    outputs = np.empty((len(dataset), *values.shape[1:]), dtype=values.dtype)
                outputs[batch["index"].cpu().numpy()] = values
        return outputs if outputs is not None else np.zeros(0)


def _sequence_log_prob(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per row, the summed log-probability of the tokens whose ``labels`` are not -100.

    Only positions from the earliest target on go through the LM head, as in the title loss.
    """
    logits, targets = target_logits(model, batch)
    log_probs = logits.log_softmax(dim=-1)
    mask = targets != -100
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1)


def _head(
    name: str,
    source: str | Path,
    folder: Path,
    recipe: DictConfig,
    kinds: Mapping[str, str],
    tokenizer: Any,
    data: RecData,
) -> Head:
    from peftrec.run import build_task  # the runner's task factory: the prompt the head was trained on

    task = build_task(
        recipe.task,
        tokenizer,
        data,
        like_threshold=recipe.data.like_threshold,
        chat_template=recipe.model.chat_template,
    )
    return Head(name=name, source=str(source), folder=folder, recipe=recipe, task=task, kind=kinds[name])


def _head_kind(folder: Path) -> str:
    return str(json.loads((folder / ADAPTER_CONFIG).read_text()).get("peft_type", "")).upper()


def _merged_folder(adapter: str | Path) -> Path | None:
    """The folder, when ``adapter`` is a local merged export (a model folder with a recipe, no adapter)."""
    path = Path(adapter).expanduser()
    if (
        path.is_dir()
        and (path / "config.json").is_file()
        and (path / RECIPE_FILE).is_file()
        and not (path / ADAPTER_CONFIG).is_file()
    ):
        return path.resolve()
    return None


def _check_adapter_name(name: str, kind: str) -> None:
    """peft finds an adapter's weights by its name inside the parameter names (``lora_A.<name>``); a name
    that is part of the type's own prefix (``lora`` in ``lora_``) can match the wrong tensors."""
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(PeftType(kind)) if kind in PeftType.__members__ else None
    if not name or (prefix and name in prefix):
        raise PeftrecError(
            f"adapter name {name!r} is part of peft's parameter prefix {prefix!r} for {kind} heads, which can "
            f"load the wrong weights: choose another name, e.g. {name or 'extra'}_head"
        )


def _check_same_base(first: DictConfig, other: DictConfig, name: str, model_path: Path) -> None:
    same = str(other.model.name) == str(first.model.name) or resolve_model(other.model.name) == model_path
    if not same or other.model.get("quantization") != first.model.get("quantization"):
        raise PeftrecError(
            f"adapter {name!r} was trained on {other.model.name} (quantization {other.model.get('quantization')}), "
            f"the first adapter on {first.model.name} (quantization {first.model.get('quantization')}): heads "
            "share one base model only when they were trained on the same one. Use one Recommender per base"
        )


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence ``datasets``' per-call progress bars (every request tokenizes a few rows) for a block."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
