"""Tasks answered by one label word at the prompt's end (click: No/Yes; rating: 1..5).

The prompt is scored in one forward pass: the loss is the cross-entropy over the label words' logits
at the last position, and the prediction is read from their softmax. No full-vocabulary logits for
every position, no generation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import datasets
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from peftrec.batching import tokenize_prompts
from peftrec.tasks.label_scoring import label_logits, resolve_label_ids
from peftrec.tasks.prompts import Prompt

ScoreFn = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


class LabelWordTask:
    """Shared machinery; subclasses say what the label is and how the softmax becomes a prediction.

    Args:
        tokenizer: the model's tokenizer (right padding, left truncation; see :mod:`peftrec.models`).
        prompt: how examples become text.
        label_words: label words for chat prompts, in label order.
        plain_label_words: label words for plain prompts (often with a leading space).
        max_length: longest prompt in tokens.
    """

    name = "label"
    # Scoring is one forward pass per row (see NextItemTask: a catalog beam search is not).
    scores_by_search = False

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt: Prompt,
        *,
        label_words: Sequence[str],
        plain_label_words: Sequence[str],
        max_length: int = 512,
    ):
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.chat = prompt.uses_chat(tokenizer)
        self.label_words = list(label_words if self.chat else plain_label_words)
        self.max_length = max_length
        sample = prompt.render(prompt.text(["A"], [5.0], "B"), tokenizer)
        self.label_ids = resolve_label_ids(tokenizer, self.label_words, sample)

    # --- what subclasses define -----------------------------------------------------------------

    def targets(self, examples: pd.DataFrame) -> list[int]:
        """The index of each example's label word."""
        raise NotImplementedError

    def from_label_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """One prediction per row from its ``(rows, label words)`` logits."""
        raise NotImplementedError

    def metric_inputs(self, examples: pd.DataFrame, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Keyword inputs for :func:`peftrec.metrics.compute`."""
        raise NotImplementedError

    def prediction_frame(self, examples: pd.DataFrame, outputs: np.ndarray) -> pd.DataFrame:
        """One row per example: who, what, the truth and the prediction."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------------

    def prompts(self, examples: pd.DataFrame, titles: Mapping[str, str]) -> list[str]:
        """Render every example of a split as a full prompt.

        Args:
            examples: rows with ``history_item_ids``, ``history_ratings`` and ``item_id``.
            titles: item id -> title.

        Returns:
            One prompt per row, in row order.
        """
        return [
            self.prompt.render(
                self.prompt.text([titles[i] for i in hist], ratings, titles[target]), self.tokenizer
            )
            for hist, ratings, target in zip(
                examples["history_item_ids"], examples["history_ratings"], examples["item_id"], strict=True
            )
        ]

    def dataset(
        self, examples: pd.DataFrame, titles: Mapping[str, str], *, train: bool = False
    ) -> datasets.Dataset:
        """Tokenize a split: prompts plus the label word index (the same for training and evaluation)."""
        del train  # one forward pass serves both
        return tokenize_prompts(
            self.prompts(examples, titles),
            self.tokenizer,
            labels=self.targets(examples),
            # A chat template writes its own special tokens; adding them again would double the BOS.
            add_special_tokens=not self.chat,
            max_length=self.max_length,
        )

    def logits(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(batch, len(label_words))`` logits at each row's last real position."""
        return label_logits(model, batch["input_ids"], batch["attention_mask"], self.label_ids)

    def scores(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One prediction per row, from one forward pass."""
        return self.from_label_logits(self.logits(model, batch))

    def loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy over the label words' logits at the last position."""
        return F.cross_entropy(self.logits(model, batch), batch["labels"])

    def scorer(self, examples: pd.DataFrame) -> ScoreFn:
        """The score function for one split (label-word tasks need nothing split-specific)."""
        del examples
        return self.scores
