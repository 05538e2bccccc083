"""Generative next item: title-only loss, trie-constrained ranking over the catalog, candidate letters."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from peftrec import metrics
from peftrec.batching import TARGET_START, make_loader, tokenize_with_targets
from peftrec.data import items_before
from peftrec.errors import PeftrecError
from peftrec.host_reads import mark, recording_host_reads
from peftrec.models import load_tokenizer
from peftrec.tasks.generative import NextItemTask, candidate_ranks, title_loss
from peftrec.tasks.prompts import Prompt

TITLES = [f"Good Movie {k}" for k in range(8)] + [f"Bad Movie {k}" for k in range(8)]
ITEMS = pd.DataFrame({"item_id": [str(i) for i in range(16)], "title": TITLES})
EXAMPLES = pd.DataFrame(
    {
        "user_id": ["u1", "u2"],
        "item_id": ["4", "11"],
        "timestamp": [10, 20],
        "history_item_ids": [["1", "2", "3"], ["9", "10"]],
        "history_ratings": [[5.0, 3.0, 4.0], [1.0, 2.0]],
        "seen_item_ids": [["1", "2", "3"], ["9", "10"]],
    }
)
PROMPT = Prompt(template="Watched: {history}. Next:", like_threshold=3.0, chat_template=True)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir, max_length=128)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_training_rows_label_only_the_title_and_eos(tokenizer):
    task = NextItemTask(tokenizer, PROMPT, ITEMS)
    rows = task.dataset(EXAMPLES, train=True)
    first = rows[0]
    title = tokenizer("Good Movie 4", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt = tokenizer(task.prompts(EXAMPLES)[0], add_special_tokens=False)["input_ids"]
    assert first["input_ids"] == prompt + title
    assert first["labels"] == [-100] * len(prompt) + title
    # Evaluation rows are the prompt alone: the search writes the title.
    assert task.dataset(EXAMPLES, train=False)[0]["input_ids"] == prompt


def test_over_long_rows_lose_the_oldest_prompt_tokens_not_the_target(tokenizer):
    rows = tokenize_with_targets(
        ["a b c d e f g h"], [[7, 8, 9]], tokenizer, add_special_tokens=False, max_length=6
    )
    assert rows[0]["input_ids"][-3:] == [7, 8, 9] and len(rows[0]["input_ids"]) == 6
    assert rows[0]["labels"] == [-100, -100, -100, 7, 8, 9]


def test_title_loss_equals_the_lm_loss_on_the_labelled_tokens(tokenizer, model):
    task = NextItemTask(tokenizer, PROMPT, ITEMS)
    batch = next(iter(make_loader(task.dataset(EXAMPLES, train=True), tokenizer, batch_size=2, train=False)))
    assert (batch["labels"] == -100).any(dim=1).all()  # padding and prompt are masked
    with torch.no_grad():
        expected = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        torch.testing.assert_close(title_loss(model, batch), expected)
        # Without the collator's host integer the window is found from the labels: the same loss.
        torch.testing.assert_close(
            title_loss(model, {k: v for k, v in batch.items() if k != TARGET_START}), expected
        )


def test_title_loss_reads_nothing_back_from_the_device(tokenizer, model):
    task = NextItemTask(tokenizer, PROMPT, ITEMS)
    batch = next(iter(make_loader(task.dataset(EXAMPLES, train=True), tokenizer, batch_size=2, train=False)))
    # Only peftrec's own reads count: transformers' plain sdpa mask reads too.
    with torch.no_grad(), recording_host_reads() as log:
        title_loss(model, mark(batch))
        assert peftrec_reads(log) == []
        title_loss(model, mark({k: v for k, v in batch.items() if k != TARGET_START}))
        assert peftrec_reads(log) == ["peftrec/tasks/generative.py"]


def peftrec_reads(log) -> list[str]:
    """The files of peftrec's own host reads in ``log``, in order."""
    return [site.split(":")[0] for _, _, site in log.reads if site.startswith("peftrec/")]


def test_candidate_ranks_count_ties_against_the_target():
    logits = np.array([[0.1, 0.9, 0.5], [0.2, 0.2, 0.2], [3.0, 1.0, 2.0]])
    # row 0: 0.9 is above the target (0.5) -> rank 1. row 1: all tie -> counted last (2). row 2: top -> 0.
    np.testing.assert_array_equal(candidate_ranks(logits, np.array([2, 0, 0])), [1.0, 2.0, 0.0])


def test_ranks_over_title_groups_with_duplicate_titles(tokenizer):
    items = ITEMS.assign(title=TITLES[:15] + ["Good Movie 4"])  # item 15 shares item 4's title
    task = NextItemTask(tokenizer, PROMPT, items, top_k=3)
    assert task.title_group[15] == task.title_group[4] == 4
    outputs = np.array([[7, 4, 0], [3, 2, -1]])
    ranks = task.target_ranks(EXAMPLES.assign(item_id=["15", "11"]), outputs)
    np.testing.assert_array_equal(ranks, [1.0, np.inf])
    inputs = task.metric_inputs(EXAMPLES.assign(item_id=["15", "11"]), outputs)
    assert metrics.compute(["hit@1", "hit@3", "valid_ratio"], **inputs) == {
        "hit@1": 0.0,
        "hit@3": 0.5,
        "valid_ratio": 0.5,
    }


def test_catalog_search_returns_real_unseen_titles(tokenizer, model):
    task = NextItemTask(tokenizer, PROMPT, ITEMS, top_k=5, num_beams=6)
    loader = make_loader(task.dataset(EXAMPLES), tokenizer, batch_size=2, train=False)
    score = task.scorer(EXAMPLES)
    outputs = np.zeros((2, 5), dtype=np.int64)
    for batch in loader:
        outputs[batch["index"].numpy()] = score(model, batch).numpy()
    assert (outputs >= 0).all() and all(len(set(row)) == 5 for row in outputs)
    for row, seen in zip(outputs, EXAMPLES["seen_item_ids"], strict=True):
        assert not {task.item_ids[g] for g in row} & set(seen)
    frame = task.prediction_frame(EXAMPLES, outputs)
    assert all(len(r) == 5 and set(r) <= set(task.item_ids) for r in frame["recommended"])


def test_candidate_prompts_letters_and_scores(tokenizer, model):
    examples = EXAMPLES.assign(
        candidate_item_ids=[["5", "4", "12"], ["11", "0", "1"]], target_position=[1, 0]
    )
    template = "Watched: {history}. Options: {candidates}. Pick:"
    task = NextItemTask(
        tokenizer,
        Prompt(template=template, like_threshold=3.0, chat_template=True),
        ITEMS,
        ranking="candidates",
        num_candidates=3,
    )
    assert "(A) Good Movie 5\n(B) Good Movie 4\n(C) Bad Movie 4" in task.prompts(examples)[0]
    assert task.label_ids == tokenizer.convert_tokens_to_ids(["A", "B", "C"])
    rows = task.dataset(examples)
    assert rows["labels"] == [1, 0]
    batch = next(iter(make_loader(rows, tokenizer, batch_size=2, train=False)))
    logits = task.scorer(examples)(model, batch)
    assert logits.shape == (2, 3)
    with torch.no_grad():
        loss = task.loss(model, batch)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, batch["labels"]))


def test_bad_settings_are_named(tokenizer):
    with pytest.raises(PeftrecError, match="task.ranking"):
        NextItemTask(tokenizer, PROMPT, ITEMS, ranking="sampled")
    with pytest.raises(PeftrecError, match="task.num_beams"):
        NextItemTask(tokenizer, PROMPT, ITEMS, top_k=10, num_beams=5)


def test_items_before_uses_the_canonical_event_order():
    interactions = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b"],
            "item_id": ["x", "y", "z", "x"],
            "rating": [1.0, 2.0, 3.0, 4.0],
            "timestamp": [30, 10, 20, 5],
        }
    )
    examples = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["x", "z", "x", "q"]})
    assert items_before(interactions, examples) == [
        frozenset({"y", "z"}),
        frozenset({"y"}),
        frozenset(),
        frozenset(),
    ]


def test_a_shared_title_is_named_by_the_entry_the_user_has_not_seen(tokenizer, model):
    items = ITEMS.assign(title=TITLES[:15] + ["Good Movie 4"])  # item 15 shares item 4's title
    examples = EXAMPLES.head(1).assign(seen_item_ids=[["1", "2", "3", "4"]])
    # 15 titles, 3 of them seen only: the 12 others fill the whole list.
    task = NextItemTask(tokenizer, PROMPT, items, top_k=12, num_beams=12)
    batch = next(iter(make_loader(task.dataset(examples), tokenizer, batch_size=1, train=False)))
    outputs = task.scorer(examples)(model, batch).numpy()
    recommended = task.prediction_frame(examples, outputs)["recommended"].iloc[0]
    assert len(recommended) == 12 and "15" in recommended
    assert not {"1", "2", "3", "4"} & set(recommended)
