"""Rating task: predict the user's rating of the target item from one forward pass.

The label words are the rating values' digits. The loss is the cross-entropy over their logits at the
last position; the prediction is the expectation of the rating under their softmax (a calibrated
point estimate, better in RMSE than the arg-max digit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from peftrec.errors import DataError, PeftrecError
from peftrec.tasks.label_scoring import constant_on
from peftrec.tasks.label_task import LabelWordTask
from peftrec.tasks.prompts import Prompt


class RatingTask(LabelWordTask):
    """Rating prediction over a fixed scale (MovieLens: 1..5).

    Args:
        tokenizer: the model's tokenizer.
        prompt: how examples become text (the prompt must end where the digit goes).
        values: the rating scale, ascending.
        label_words: one word per value, for chat prompts (``"1"``..``"5"``).
        plain_label_words: the same for plain prompts.
        max_length: longest prompt in tokens.
    """

    name = "rating"

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt: Prompt,
        *,
        values: Sequence[float] = (1, 2, 3, 4, 5),
        label_words: Sequence[str] = ("1", "2", "3", "4", "5"),
        plain_label_words: Sequence[str] = ("1", "2", "3", "4", "5"),
        max_length: int = 512,
    ):
        chosen = label_words if prompt.uses_chat(tokenizer) else plain_label_words
        if len(chosen) != len(values):
            raise PeftrecError(
                f"the rating task needs one label word per rating value: task.values={list(values)} but "
                f"the label words are {list(chosen)}"
            )
        if list(values) != sorted(values) or len(set(values)) != len(values):
            raise PeftrecError(f"task.values={list(values)}: give distinct rating values in ascending order")
        super().__init__(
            tokenizer,
            prompt,
            label_words=label_words,
            plain_label_words=plain_label_words,
            max_length=max_length,
        )
        self.values = np.asarray(values, dtype=np.float64)

    def targets(self, examples: pd.DataFrame) -> list[int]:
        """The index of each rating in ``values``.

        Raises:
            DataError: a rating that is not on the scale (e.g. half stars with a 1..5 scale).
        """
        ratings = examples["rating"].to_numpy(dtype=np.float64)
        index = np.searchsorted(self.values, ratings)
        index = np.clip(index, 0, len(self.values) - 1)
        off_scale = self.values[index] != ratings
        if off_scale.any():
            bad = sorted(set(ratings[off_scale].tolist()))[:5]
            raise DataError(
                f"ratings {bad} are not on the rating scale task.values={self.values.tolist()}: set task.values "
                "(and task.label_words) to the dataset's scale"
            )
        return index.tolist()

    def from_label_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The expected rating under the softmax over the value words."""
        probabilities = logits.softmax(dim=-1)
        return probabilities @ constant_on(
            probabilities.device, tuple(self.values.tolist()), probabilities.dtype
        )

    def metric_inputs(self, examples: pd.DataFrame, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """``y_true`` = the rating, ``y_pred`` = the expected rating."""
        return {"y_true": examples["rating"].to_numpy(dtype=np.float64), "y_pred": outputs}

    def prediction_frame(self, examples: pd.DataFrame, outputs: np.ndarray) -> pd.DataFrame:
        """user, item, time, true rating and predicted rating per example."""
        return examples[["user_id", "item_id", "timestamp", "rating"]].assign(prediction=outputs)
