"""Click task: will the user like the target item? Yes/No from one forward pass, scored by AUC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from peftrec.errors import PeftrecError
from peftrec.tasks.label_task import LabelWordTask
from peftrec.tasks.prompts import Prompt

# The click task's prompt came first; the name stays for code written against it.
ClickPrompt = Prompt


class ClickTask(LabelWordTask):
    """Click: p(positive) is the softmax over the [negative, positive] label words at the last position.

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
        prompt: Prompt,
        *,
        label_words: Sequence[str] = ("No", "Yes"),
        plain_label_words: Sequence[str] = (" No", " Yes"),
        max_length: int = 512,
    ):
        chosen = label_words if prompt.uses_chat(tokenizer) else plain_label_words
        if len(chosen) != 2:
            raise PeftrecError(
                f"the click task needs two label words [negative, positive], got {list(chosen)}"
            )
        super().__init__(
            tokenizer,
            prompt,
            label_words=label_words,
            plain_label_words=plain_label_words,
            max_length=max_length,
        )

    def targets(self, examples: pd.DataFrame) -> list[int]:
        """1 = liked (rating above the like threshold)."""
        return examples["label"].astype(int).tolist()

    def from_label_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """p(positive): the softmax over the two label logits."""
        return logits.softmax(dim=-1)[:, 1]

    def metric_inputs(self, examples: pd.DataFrame, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """``y_true`` = the click label, ``y_score`` = p(positive)."""
        return {"y_true": examples["label"].to_numpy(), "y_score": outputs}

    def prediction_frame(self, examples: pd.DataFrame, outputs: np.ndarray) -> pd.DataFrame:
        """user, item, time, label and p(positive) (``score``) per example."""
        return examples[["user_id", "item_id", "timestamp", "label"]].assign(score=outputs)
