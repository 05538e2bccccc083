"""Tokenization keeps each prompt's end; loaders pad on the right, little, and cover every row once."""

import torch

from peftrec.batching import make_loader, tokenize_prompts
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
