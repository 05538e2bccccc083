"""Click task: will the user like the target item? Yes/No from one forward pass, scored by AUC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import datasets
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from peftrec.batching import tokenize_prompts
from peftrec.errors import PeftrecError
from peftrec.tasks.label_scoring import label_logits, resolve_label_ids

NO_TITLES = "none"


@dataclass(frozen=True)
class ClickPrompt:
    """How an example becomes text.

    Attributes:
        template: format string with ``{liked}``, ``{disliked}`` and ``{target}``.
        like_threshold: history ratings above it are listed as liked, the rest as disliked.
        chat_template: wrap the text as a user turn in the tokenizer's chat template (if it has one).
        answer_cue: appended to plain (non-chat) prompts, e.g. ``"\\nAnswer:"``.
    """

    template: str
    like_threshold: float
    chat_template: bool
    answer_cue: str = "\nAnswer:"

    def text(self, history_titles: Sequence[str], history_ratings: Sequence[float], target_title: str) -> str:
        """The user-turn text for one example (before any chat template)."""
        liked = [t for t, r in zip(history_titles, history_ratings, strict=True) if r > self.like_threshold]
        disliked = [t for t, r in zip(history_titles, history_ratings, strict=True) if r <= self.like_threshold]
        try:
            return self.template.format(
                liked=", ".join(liked) or NO_TITLES,
                disliked=", ".join(disliked) or NO_TITLES,
                target=target_title,
            )
        except KeyError as err:
            raise PeftrecError(
                f"task.template uses the placeholder {{{err.args[0]}}}, which the click task does not fill: "
                "use {liked}, {disliked} and {target} (write {{ and }} for literal braces)"
            ) from None

    def uses_chat(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether prompts go through the chat template (asked for and available)."""
        return self.chat_template and bool(getattr(tokenizer, "chat_template", None))

    def render(self, text: str, tokenizer: PreTrainedTokenizerBase) -> str:
        """The full prompt as the model sees it; it ends exactly where the label word goes."""
        if self.uses_chat(tokenizer):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text + self.answer_cue


class ClickTask:
    """Builds click examples and scores them with the label words' logits at the last position.

    Args:
        tokenizer: the model's tokenizer (right padding, left truncation; see :mod:`peftrec.models`).
        prompt: how examples become text.
        label_words: ``[negative, positive]`` for chat prompts.
        plain_label_words: ``[negative, positive]`` for plain prompts (usually with a leading space).
        max_length: longest prompt in tokens.
    """

    name = "click"

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt: ClickPrompt,
        *,
        label_words: Sequence[str] = ("No", "Yes"),
        plain_label_words: Sequence[str] = (" No", " Yes"),
        max_length: int = 512,
    ):
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.chat = prompt.uses_chat(tokenizer)
        self.label_words = list(label_words if self.chat else plain_label_words)
        if len(self.label_words) != 2:
            raise PeftrecError(f"the click task needs two label words [negative, positive], got {self.label_words}")
        self.max_length = max_length
        sample = prompt.render(prompt.text(["A"], [5.0], "B"), tokenizer)
        self.label_ids = resolve_label_ids(tokenizer, self.label_words, sample)

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

    def dataset(self, examples: pd.DataFrame, titles: Mapping[str, str]) -> datasets.Dataset:
        """Tokenize a split: prompts plus integer labels (1 = liked)."""
        return tokenize_prompts(
            self.prompts(examples, titles),
            self.tokenizer,
            labels=examples["label"].tolist(),
            # A chat template writes its own special tokens; adding them again would double the BOS.
            add_special_tokens=not self.chat,
            max_length=self.max_length,
        )

    def loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Two-way cross-entropy over the [negative, positive] logits at the last position."""
        logits = label_logits(model, batch["input_ids"], batch["attention_mask"], self.label_ids)
        return F.cross_entropy(logits, batch["labels"])

    def scores(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """p(positive): the softmax over the two label logits."""
        logits = label_logits(model, batch["input_ids"], batch["attention_mask"], self.label_ids)
        return logits.softmax(dim=-1)[:, 1]
