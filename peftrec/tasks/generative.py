"""Generative next item: from the user's history, produce the next item, ranked over the real catalog.

Two ways to rank, both batched (``task.ranking``):

- ``catalog``: the LM writes the next item's title. Training is the LM loss on the title tokens (and
  the closing eos) only; evaluation is beam search constrained by a prefix trie over the catalog's
  titles (:mod:`peftrec.tasks.catalog_trie`), so every output is a real item; the K best distinct
  titles, the user's earlier items excluded, give HR@K / NDCG@K / MRR.
- ``candidates``: the prompt offers a fixed list of N candidates (the target and N-1 unseen items,
  drawn once per seed and saved), labelled with letters; one forward pass scores every letter at the
  last position (LlamaRec) and the candidates are ranked by their letter's logit. Training is the
  cross-entropy over the letters.

Items with the same title are one output for the LM (it cannot tell them apart): a title counts as a
hit when it is the target's title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import datasets
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from peftrec.batching import TARGET_START, tokenize_prompts, tokenize_with_targets
from peftrec.errors import PeftrecError
from peftrec.tasks.catalog_trie import CatalogTrie, constrained_beam_search
from peftrec.tasks.label_scoring import label_logits, resolve_label_ids
from peftrec.tasks.label_task import ScoreFn
from peftrec.tasks.prompts import Prompt

RANKINGS = ("catalog", "candidates")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MISSING = -1  # an unfilled slot of a top-K list (fewer distinct titles than K survived the exclusions)


class NextItemTask:
    """Next-item recommendation by title generation or candidate ranking.

    Args:
        tokenizer: the model's tokenizer (right padding, left truncation).
        prompt: how examples become text (``{history}``, ``{rated_history}``; ``{candidates}`` for
            candidate ranking).
        items: the catalog: ``item_id`` and ``title``.
        ranking: ``"catalog"`` or ``"candidates"``.
        top_k: length of the ranked list (the largest K of the metrics).
        num_beams: beams of the constrained search (at least ``top_k``).
        num_candidates: list length of candidate ranking (one letter each).
        max_length: longest prompt (plus title) in tokens.

    Split frames may carry two extra columns, added by the runner: ``seen_item_ids`` (items excluded
    from the user's ranked list: what the user rated before) and, for candidate ranking,
    ``candidate_item_ids`` / ``target_position`` (:func:`peftrec.data.candidates.draw_candidates`).
    """

    name = "generative"

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt: Prompt,
        items: pd.DataFrame,
        *,
        ranking: str = "catalog",
        top_k: int = 20,
        num_beams: int | None = None,
        num_candidates: int = 20,
        max_length: int = 512,
    ):
        if ranking not in RANKINGS:
            raise PeftrecError(f"task.ranking={ranking!r}: use one of {list(RANKINGS)}")
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.chat = prompt.uses_chat(tokenizer)
        self.ranking = ranking
        # A catalog is ranked by beam search (many forward passes per row); candidates by one forward pass.
        self.scores_by_search = ranking == "catalog"
        self.top_k = top_k
        self.num_beams = num_beams or top_k
        if self.num_beams < top_k:
            raise PeftrecError(
                f"task.num_beams={self.num_beams} is below task.top_k={top_k}: beam search returns at most "
                "num_beams titles; raise task.num_beams"
            )
        self.max_length = max_length
        self.item_ids = items["item_id"].astype(str).tolist()
        self.titles = dict(zip(self.item_ids, items["title"], strict=True))
        self.entry_of = {item: k for k, item in enumerate(self.item_ids)}
        self.trie: CatalogTrie | None = None
        self.title_group: np.ndarray | None = None
        self.label_ids: list[int] = []
        if ranking == "candidates":
            if not 2 <= num_candidates <= len(LETTERS):
                raise PeftrecError(
                    f"task.num_candidates={num_candidates}: use 2 to {len(LETTERS)} (one letter each)"
                )
            words = [("" if self.chat else " ") + letter for letter in LETTERS[:num_candidates]]
            sample = prompt.render(
                prompt.text(["A"], [5.0], candidates=self._candidate_text(["B"])), tokenizer
            )
            self.label_ids = resolve_label_ids(tokenizer, words, sample)
        else:
            # Tokenized once: the trie holds every title's token ids; training targets reuse them, so the
            # model learns exactly the sequences the search can produce.
            self.trie = CatalogTrie.from_titles([self.titles[i] for i in self.item_ids], tokenizer)
            self.title_group = self._title_groups()

    # --- datasets ---------------------------------------------------------------------------------

    def prompts(self, examples: pd.DataFrame) -> list[str]:
        """Render every example of a split (with its candidate list when ranking candidates)."""
        candidates = examples["candidate_item_ids"] if self.ranking == "candidates" else None
        rows = []
        for k, (hist, ratings) in enumerate(
            zip(examples["history_item_ids"], examples["history_ratings"], strict=True)
        ):
            extra = {}
            if candidates is not None:
                extra["candidates"] = self._candidate_text([self.titles[i] for i in candidates.iloc[k]])
            rows.append(
                self.prompt.render(
                    self.prompt.text([self.titles[i] for i in hist], ratings, **extra), self.tokenizer
                )
            )
        return rows

    def dataset(
        self, examples: pd.DataFrame, titles: Mapping[str, str] | None = None, *, train: bool = False
    ) -> datasets.Dataset:
        """Tokenize a split. Catalog training rows carry the title (+ eos) with ``labels`` on it only;
        catalog evaluation rows are prompts; candidate rows carry the target letter's index."""
        del titles  # the task holds the catalog
        prompts = self.prompts(examples)
        special = not self.chat  # a chat template writes its own special tokens
        if self.ranking == "candidates":
            return tokenize_prompts(
                prompts,
                self.tokenizer,
                labels=examples["target_position"].tolist(),
                add_special_tokens=special,
                max_length=self.max_length,
            )
        if not train:
            return tokenize_prompts(
                prompts, self.tokenizer, add_special_tokens=special, max_length=self.max_length
            )
        targets = [self.trie.target(self.entry_of[str(i)]) for i in examples["item_id"]]
        return tokenize_with_targets(
            prompts, targets, self.tokenizer, add_special_tokens=special, max_length=self.max_length
        )

    # --- loss and scores --------------------------------------------------------------------------

    def loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Catalog: mean cross-entropy over the title tokens; candidates: over the letters."""
        if self.ranking == "candidates":
            return F.cross_entropy(
                label_logits(model, batch["input_ids"], batch["attention_mask"], self.label_ids),
                batch["labels"],
            )
        return title_loss(model, batch)

    def scorer(self, examples: pd.DataFrame) -> ScoreFn:
        """The score function for one split: the top-K titles, each as an unseen catalog entry of that title
        (catalog), or the letter logits (candidates)."""
        if self.ranking == "candidates":
            return lambda model, batch: label_logits(
                model, batch["input_ids"], batch["attention_mask"], self.label_ids
            )
        excluded = None
        if "seen_item_ids" in examples.columns:
            excluded = [
                frozenset(self.entry_of[i] for i in seen if i in self.entry_of)
                for seen in examples["seen_item_ids"]
            ]

        def top_titles(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
            rows = batch["index"].tolist()
            ranked = constrained_beam_search(
                getattr(model, "module", model),  # DDP wraps the model; generate lives on the inner one
                batch["input_ids"],
                batch["attention_mask"],
                self.trie,
                num_beams=self.num_beams,
                num_return=self.top_k,
                pad_token_id=self.tokenizer.pad_token_id,
                excluded=[excluded[r] for r in rows] if excluded is not None else None,
            )
            out = np.full((len(rows), self.top_k), MISSING, dtype=np.int64)
            for r, titles in enumerate(ranked):
                # A title's first entry the user has not seen names it (items sharing a title rank as one).
                groups = [int(entries[0]) for entries in titles[: self.top_k]]
                out[r, : len(groups)] = groups
            # Filled on the host and copied once: a copy per row would wait for the device each time.
            return torch.from_numpy(out).to(batch["input_ids"].device)

        return top_titles

    # --- metrics and predictions ------------------------------------------------------------------

    def target_ranks(self, examples: pd.DataFrame, outputs: np.ndarray) -> np.ndarray:
        """0-based rank of each example's target in its ranked list (``inf`` when absent)."""
        if self.ranking == "candidates":
            return candidate_ranks(outputs, examples["target_position"].to_numpy())
        targets = self.title_group[[self.entry_of[str(i)] for i in examples["item_id"]]]
        entries = outputs.astype(np.int64)
        produced = np.where(entries >= 0, self.title_group[np.maximum(entries, 0)], MISSING)
        hits = produced == targets[:, None]
        return np.where(hits.any(axis=1), hits.argmax(axis=1), np.inf).astype(np.float64)

    def metric_inputs(self, examples: pd.DataFrame, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """``ranks`` (0-based, ``inf`` = not in the list) and ``valid`` (every slot of the list is a real
        item: a full list for the catalog, by construction for candidate letters)."""
        if self.ranking == "candidates":
            valid = np.ones(len(examples), dtype=bool)
        else:
            valid = (outputs >= 0).all(axis=1) & (outputs < len(self.item_ids)).all(axis=1)
        return {"ranks": self.target_ranks(examples, outputs), "valid": valid}

    def prediction_frame(self, examples: pd.DataFrame, outputs: np.ndarray) -> pd.DataFrame:
        """user, target, its rank, and the recommended item ids (best first) per example."""
        if self.ranking == "candidates":
            order = np.argsort(-outputs, axis=1, kind="stable")
            lists = examples["candidate_item_ids"]
            ranked = [[lists.iloc[r][c] for c in order[r]] for r in range(len(examples))]
        else:
            ranked = [[self.item_ids[g] for g in row if g >= 0] for row in outputs.astype(np.int64)]
        return examples[["user_id", "item_id", "timestamp"]].assign(
            rank=self.target_ranks(examples, outputs), recommended=ranked
        )

    # --- helpers ----------------------------------------------------------------------------------

    def _candidate_text(self, titles: Sequence[str]) -> str:
        return "\n".join(f"({LETTERS[k]}) {title}" for k, title in enumerate(titles))

    def _title_groups(self) -> np.ndarray:
        """Entry -> id of its title group (entries with one title share one id: the first entry's)."""
        first: dict[str, int] = {}
        return np.array(
            [first.setdefault(self.titles[i], k) for k, i in enumerate(self.item_ids)], dtype=np.int64
        )


def target_logits(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor | int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM's float logits at the positions that predict labelled tokens, and the labels they predict.

    Only the positions from the one before the earliest target on go through the LM head (an integer
    ``logits_to_keep`` keeps the last N positions; virtual tokens of prompt tuning sit at the front, so
    the last N positions are still the input's own). The earliest target comes from the collator's host
    integer (``target_start``); a batch built another way has it found from the labels, which on a GPU
    makes the host wait for the device.

    Returns:
        ``(logits, targets)``: ``(batch, n, vocab)`` and ``(batch, n)``, -100 where nothing is predicted.
    """
    labels = batch["labels"]
    first = batch.get(TARGET_START)
    if first is None:
        first = int((labels != -100).float().argmax(dim=1).min())
    keep = labels.shape[1] - first + 1  # the logit at position p predicts the token at p + 1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    return out.logits[:, -keep:-1].float(), labels[:, -keep + 1 :]


def title_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor | int]) -> torch.Tensor:
    """Token-level cross-entropy on the positions whose ``labels`` are not -100 (the title and its eos),
    computed on :func:`target_logits` only."""
    logits, targets = target_logits(model, batch)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def candidate_ranks(logits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target column among its candidates, ties counted against the target
    (a model that scores every candidate alike ranks the target last, not first)."""
    target = logits[np.arange(len(logits)), positions]
    above = (logits > target[:, None]).sum(axis=1)
    ties = (logits == target[:, None]).sum(axis=1) - 1
    return (above + ties).astype(np.float64)
