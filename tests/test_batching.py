"""Tokenization keeps each prompt's end; loaders pad on the right, little, and cover every row once."""

import pytest
import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from peftrec.batching import (
    TARGET_START,
    make_loader,
    model_columns,
    padding_collator,
    tokenize_prompts,
    tokenize_with_targets,
)
from peftrec.models import load_tokenizer

PROMPTS = ["Good Movie 1", "Good Movie 1, Bad Movie 2, Good Movie 3, Bad Movie 4, Good Movie 5", "Yes", "Bad Movie 7, No"]


def test_left_truncation_keeps_the_end_of_the_prompt(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=6)
    full = tokenizer(PROMPTS[1], add_special_tokens=False, truncation=False)["input_ids"]
    assert len(full) > 6
    dataset = tokenize_prompts([PROMPTS[1]], tokenizer, add_special_tokens=False)
    assert dataset[0]["input_ids"] == full[-6:]
    assert dataset[0]["length"] == 6


def test_eval_loader_pads_right_to_a_multiple_of_8_longest_first(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    dataset = tokenize_prompts(PROMPTS, tokenizer, labels=[1, 0, 1, 0])
    lengths = dataset["length"]
    loader = make_loader(dataset, tokenizer, batch_size=2, train=False)
    batches = list(loader)
    seen = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(seen) == [0, 1, 2, 3]
    assert seen[0] == max(range(4), key=lambda i: lengths[i])  # longest first
    for batch in batches:
        mask = batch["attention_mask"]
        assert batch["input_ids"].shape[1] % 8 == 0
        assert batch["input_ids"].shape[1] - int(mask.sum(1).max()) < 8  # padded only to the batch's longest
        for row, index in enumerate(batch["index"].tolist()):
            n = lengths[index]
            assert mask[row, :n].all() and not mask[row, n:].any()  # right padding
            assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert batch["labels"].tolist() == [[1, 0, 1, 0][i] for i in batch["index"].tolist()]


def test_train_loader_is_a_seeded_permutation(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    dataset = tokenize_prompts(PROMPTS * 5, tokenizer, labels=[1, 0, 1, 0] * 5)

    def order(seed):
        return torch.cat([b["index"] for b in make_loader(dataset, tokenizer, batch_size=4, train=True, seed=seed)]).tolist()

    assert sorted(order(0)) == list(range(20))
    assert order(0) == order(0)
    assert order(0) != order(1)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(
    ("token_labels", "padding"),
    [
        (False, {"pad_to_multiple_of": 8}),
        (False, {"pad_to_multiple_of": 64}),
        (True, {"pad_to_multiple_of": 8}),
        (False, {"padding": "max_length", "max_length": 40}),
        (True, {"padding": "max_length", "max_length": 40}),
    ],
)
def test_padding_collator_equals_transformers_collators(tiny_model_dir, side, token_labels, padding):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    tokenizer.padding_side = side
    if token_labels:  # next-item rows: labels on the target tokens only
        dataset = tokenize_with_targets(PROMPTS, [[5, 6, 2], [7, 2], [9, 9, 9, 2], [2]], tokenizer)
        reference = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, **padding)
    else:
        dataset = tokenize_prompts(PROMPTS, tokenizer, labels=[1, 0, 1, 0])
        reference = DataCollatorWithPadding(tokenizer, **padding)
    rows = [model_columns(dataset)[i] for i in (1, 0, 3, 2)]
    ours = padding_collator(
        tokenizer, pad_to_multiple_of=padding.get("pad_to_multiple_of", 1), max_length=padding.get("max_length")
    )(rows)
    expected = reference(rows)
    assert sorted(set(ours) - {TARGET_START}) == sorted(expected)
    for key, value in expected.items():
        assert ours[key].dtype == value.dtype == torch.long, key
        assert torch.equal(ours[key], value), key
    assert ours["input_ids"].shape[1] == padding.get("max_length") or ours["input_ids"].shape[1] % padding["pad_to_multiple_of"] == 0
    if token_labels:  # the earliest labelled position, as a host integer
        starts = [next(i for i, label in enumerate(row) if label != -100) for row in expected["labels"].tolist()]
        assert type(ours[TARGET_START]) is int and ours[TARGET_START] == min(starts)
    else:
        assert TARGET_START not in ours


def test_target_start_is_the_earliest_labelled_position_on_either_padding_side(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    rows = [
        {"input_ids": [1, 2, 3, 4, 5], "attention_mask": [1] * 5, "labels": [-100, -100, 3, 4, 5]},
        {"input_ids": [1, 2, 3], "attention_mask": [1] * 3, "labels": [-100, 2, 3]},
    ]
    right = padding_collator(tokenizer, pad_to_multiple_of=8)(rows)
    assert right[TARGET_START] == 1  # row 2's prompt is one token
    tokenizer.padding_side = "left"
    left = padding_collator(tokenizer, pad_to_multiple_of=8)(rows)
    assert left[TARGET_START] == 5  # row 1 is shifted by 3 (its target at 5), row 2 by 5 (at 6)


def test_loader_pads_to_the_multiple_asked_for(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    dataset = tokenize_prompts(PROMPTS * 4, tokenizer, labels=[1, 0, 1, 0] * 4)
    widths = {b["input_ids"].shape[1] for b in make_loader(dataset, tokenizer, batch_size=3, train=True, pad_to_multiple_of=32)}
    assert widths == {32}  # every row here is shorter than 32 tokens: one shape for the whole epoch


def test_fixed_length_collator_refuses_a_longer_row(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    rows = [model_columns(tokenize_prompts(PROMPTS, tokenizer, labels=[1, 0, 1, 0]))[1]]
    with pytest.raises(ValueError, match="does not fit the fixed length 8"):
        padding_collator(tokenizer, max_length=8)(rows)
