"""Prompts -> tokenized datasets -> padded batches, with as little padding computed as possible."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

# Columns the collator turns into tensors; everything else stays in the dataset for bookkeeping.
MODEL_COLUMNS = ["input_ids", "attention_mask", "labels", "index"]
# The collator's host integer beside token-level labels: the earliest labelled position in the batch.
TARGET_START = "target_start"


def tokenize_prompts(
    prompts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    labels: Sequence[int] | None = None,
    add_special_tokens: bool = True,
    max_length: int | None = None,
) -> datasets.Dataset:
    """Tokenize prompts into a ``datasets.Dataset`` with ``input_ids``, ``attention_mask``, ``length``.

    Args:
        prompts: fully rendered prompts (chat template applied if any); each must end at the answer slot.
        tokenizer: truncation side ``left`` so an over-long prompt loses its oldest text, not its end.
        labels: optional integer label per prompt (stored as ``labels``).
        add_special_tokens: False when the chat template already wrote the special tokens.
        max_length: truncate to this many tokens (default: ``tokenizer.model_max_length``).

    Returns:
        The dataset, with an ``index`` column giving each row's position in ``prompts``.
    """
    columns: dict[str, list] = {"prompt": list(prompts), "index": list(range(len(prompts)))}
    if labels is not None:
        columns["labels"] = [int(x) for x in labels]
    dataset = datasets.Dataset.from_dict(columns)

    def encode(batch: Mapping[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch["prompt"],
            add_special_tokens=add_special_tokens,
            truncation=True,
            max_length=max_length or tokenizer.model_max_length,
        )
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    # In memory: a few thousand short prompts tokenize in about a second; an on-disk cache would cost more.
    return dataset.map(encode, batched=True, desc="Tokenizing", keep_in_memory=True)


def tokenize_with_targets(
    prompts: Sequence[str],
    targets: Sequence[Sequence[int]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    add_special_tokens: bool = True,
    max_length: int | None = None,
) -> datasets.Dataset:
    """Tokenize prompts followed by given target token ids, with ``labels`` on the target only.

    The target ids are appended as they are (not re-tokenized with the prompt), so the model learns
    exactly the sequences a constrained decoder can produce. Over-long rows lose the prompt's oldest
    tokens, never the target.

    Args:
        prompts: fully rendered prompts ending where the target starts.
        targets: token ids per prompt (e.g. a title and eos).
        tokenizer: the model's tokenizer.
        add_special_tokens: False when the chat template already wrote the special tokens.
        max_length: longest row in tokens, prompt plus target.

    Returns:
        Dataset with ``input_ids``, ``attention_mask``, ``labels`` (-100 on the prompt), ``length``, ``index``.
    """
    limit = max_length or tokenizer.model_max_length
    dataset = datasets.Dataset.from_dict(
        {"prompt": list(prompts), "target": [list(t) for t in targets], "index": list(range(len(prompts)))}
    )

    def encode(batch: Mapping[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["prompt"], add_special_tokens=add_special_tokens)["input_ids"]
        input_ids, labels = [], []
        for prompt_ids, target in zip(encoded, batch["target"], strict=True):
            prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(target) - limit) :]
            input_ids.append(prompt_ids + target)
            labels.append([-100] * len(prompt_ids) + target)
        return {
            "input_ids": input_ids,
            "attention_mask": [[1] * len(ids) for ids in input_ids],
            "labels": labels,
            "length": [len(ids) for ids in input_ids],
        }

    return dataset.map(
        encode, batched=True, desc="Tokenizing", keep_in_memory=True, remove_columns=["target"]
    )


def model_columns(dataset: datasets.Dataset) -> datasets.Dataset:
    """The dataset formatted to yield only the columns the collator turns into tensors."""
    return dataset.with_format(columns=[c for c in MODEL_COLUMNS if c in dataset.column_names])


class LongestFirstSampler(Sampler[int]):
    """Evaluation order: longest rows first, so each batch pads little and a too-large batch fails at once."""

    def __init__(self, lengths: Sequence[int]):
        self.order = np.argsort(-np.asarray(lengths), kind="stable").tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """transformers' ``LengthGroupedSampler`` whose order depends only on (seed, epoch).

    The base class draws from one generator that advances every epoch, so epoch 3's order depends on
    epochs 0-2 having been drawn in this process. Reseeding from the epoch (set by the training loop
    through Accelerate's ``set_epoch``) lets a resumed run draw exactly the order it had reached.
    """

    def __init__(self, batch_size: int, lengths: Sequence[int], seed: int):
        super().__init__(batch_size, lengths=list(lengths), generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed * 100_003 + self.epoch)
        return super().__iter__()


@dataclass(frozen=True)
class PaddingCollator:
    """Pad a list of tokenized rows into tensors, as transformers' padding collators do, in numpy.

    The output equals ``DataCollatorWithPadding`` (one label per row) or ``DataCollatorForSeq2Seq``
    (token-level labels padded with -100) with the same padding arguments; tests hold it to that.
    With token-level labels it adds one host integer, ``target_start``: the earliest labelled position in
    the batch. The loss needs it to keep only the target positions for the LM head; found from the labels
    on a GPU it would cost a host wait every step (Accelerate moves tensors only; the integer stays put).
    Why our own: their ``tokenizer.pad`` turns the padded lists into tensors through a pure-Python
    ``flatten`` of every token (transformers' ``BatchEncoding.convert_to_tensors``): 24 ms for a click
    batch of 256 rows on a 2-core CPU, against 5 ms here (``benchmarks/scripts/collate_speed.py``), while
    the H100 step it feeds is meant to take about 64 ms (4,000 samples/s).

    Attributes:
        pad_token_id: fills ``input_ids`` past each row's end.
        padding_side: ``right`` (peftrec's tokenizers) or ``left``.
        pad_to_multiple_of: each batch is padded to its longest row rounded up to this.
        max_length: pad every batch to this length instead (rows must not be longer).
    """

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int = 1
    max_length: int | None = None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        length = self.max_length or max(lengths)
        length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        if max(lengths) > length:
            raise ValueError(f"a row of {max(lengths)} tokens does not fit the fixed length {length}")
        batch = {"input_ids": self._pad(features, "input_ids", lengths, length, self.pad_token_id)}
        batch["attention_mask"] = self._pad(features, "attention_mask", lengths, length, 0)
        for key in features[0]:
            if key in batch:
                continue
            if isinstance(features[0][key], list):  # token-level labels: ignored where padded
                batch[key] = self._pad(features, key, lengths, length, -100)
                if key == "labels":
                    batch[TARGET_START] = int((batch[key].numpy() != -100).argmax(axis=1).min())
            else:
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
        return batch

    def _pad(
        self, features: Sequence[Mapping[str, Any]], key: str, lengths: list[int], length: int, fill: int
    ) -> torch.Tensor:
        out = np.full((len(features), length), fill, dtype=np.int64)
        for row, (feature, n) in enumerate(zip(features, lengths, strict=True)):
            if self.padding_side == "right":
                out[row, :n] = feature[key]
            else:
                out[row, length - n :] = feature[key]
        return torch.from_numpy(out)


def padding_collator(
    tokenizer: PreTrainedTokenizerBase, *, pad_to_multiple_of: int = 1, max_length: int | None = None
) -> PaddingCollator:
    """The collator for a tokenizer's rows: padded with its pad token on its padding side to the
    batch's longest row rounded up to ``pad_to_multiple_of``, or to a fixed ``max_length``."""
    return PaddingCollator(
        pad_token_id=tokenizer.pad_token_id,
        padding_side=tokenizer.padding_side,
        pad_to_multiple_of=pad_to_multiple_of,
        max_length=max_length,
    )


def make_loader(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    pad_to_multiple_of: int = 8,
    pin_memory: bool = False,
) -> DataLoader:
    """Build a loader that pads each batch only to its own longest row (rounded up to a multiple of 8).

    Training batches are shuffled but grouped by length (transformers' ``LengthGroupedSampler``: random
    mega-batches, sorted inside; reseeded per epoch), evaluation runs longest first. Padding is on the right.

    Args:
        dataset: from :func:`tokenize_prompts`.
        tokenizer: supplies the pad token id.
        batch_size: rows per batch.
        train: shuffle (seeded) and group by length, or evaluation order.
        seed: seeds the training order.
        num_workers: DataLoader worker processes.
        pad_to_multiple_of: round each batch's length up to this; a coarser multiple (32, 64) gives
            ``torch.compile`` fewer shapes to compile and CUDA graphs fewer to record.
        pin_memory: collate into page-locked memory, so that a GPU copy of the batch can run asynchronously
            (with Accelerate's ``non_blocking``) while the host goes on.

    Returns:
        A DataLoader yielding ``input_ids``, ``attention_mask``, ``index`` and (if present) ``labels``.
    """
    lengths = dataset["length"]
    if train:
        sampler: Sampler[int] = EpochLengthGroupedSampler(batch_size, lengths, seed)
    else:
        sampler = LongestFirstSampler(lengths)
    return DataLoader(
        model_columns(dataset),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=padding_collator(tokenizer, pad_to_multiple_of=pad_to_multiple_of),
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        # Its own generator: starting an epoch then draws the worker seed from it, not from the global
        # RNG that dropout uses, so a run resumed mid-epoch sees the same dropout masks.
        generator=torch.Generator().manual_seed(seed),
    )
