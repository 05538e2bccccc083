"""Click prompts, label words per prompt style, and the loss/score definitions."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from peftrec.batching import make_loader
from peftrec.errors import PeftrecError
from peftrec.models import load_tokenizer
from peftrec.tasks.click import ClickPrompt, ClickTask
from peftrec.tasks.label_scoring import label_logits

TEMPLATE = "Liked: {liked}. Disliked: {disliked}. Target: {target}?"
EXAMPLES = pd.DataFrame(
    {
        "history_item_ids": [["1", "2", "3"], ["9", "10"]],
        "history_ratings": [[5.0, 3.0, 4.0], [1.0, 2.0]],
        "item_id": ["4", "11"],
        "label": [1, 0],
    }
)
TITLES = {str(i): (f"Good Movie {i % 8}" if i < 8 else f"Bad Movie {i % 8}") for i in range(16)}


def test_history_splits_at_the_threshold_and_empty_lists_say_none():
    prompt = ClickPrompt(template=TEMPLATE, like_threshold=3.0, chat_template=False)
    assert prompt.text(["A", "B", "C"], [5.0, 3.0, 4.0], "T") == "Liked: A, C. Disliked: B. Target: T?"
    assert prompt.text(["A"], [2.0], "T") == "Liked: none. Disliked: A. Target: T?"


def test_unknown_placeholder_is_named():
    prompt = ClickPrompt(template="{liked} {genre}", like_threshold=3.0, chat_template=False)
    with pytest.raises(PeftrecError, match=r"\{genre\}"):
        prompt.text(["A"], [5.0], "T")


def test_chat_prompts_end_at_the_assistant_turn_and_use_bare_words(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    task = ClickTask(tokenizer, ClickPrompt(template=TEMPLATE, like_threshold=3.0, chat_template=True))
    prompts = task.prompts(EXAMPLES, TITLES)
    assert prompts[0] == (
        "<|im_start|>user\nLiked: Good Movie 1, Good Movie 3. Disliked: Good Movie 2. Target: Good Movie 4?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert task.label_words == ["No", "Yes"]
    assert task.label_ids == tokenizer.convert_tokens_to_ids(["No", "Yes"])


def test_plain_prompts_get_the_answer_cue_and_spaced_words(tiny_plain_model_dir):
    tokenizer = load_tokenizer(tiny_plain_model_dir, max_length=128)
    task = ClickTask(tokenizer, ClickPrompt(template=TEMPLATE, like_threshold=3.0, chat_template=True))
    assert not task.chat  # asked for, but this tokenizer has no template
    assert task.prompts(EXAMPLES, TITLES)[1] == "Liked: none. Disliked: Bad Movie 1, Bad Movie 2. Target: Bad Movie 3?\nAnswer:"
    assert task.label_ids == tokenizer.convert_tokens_to_ids(["ĠNo", "ĠYes"])


def test_loss_is_two_way_cross_entropy_and_score_is_p_yes(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    task = ClickTask(tokenizer, ClickPrompt(template=TEMPLATE, like_threshold=3.0, chat_template=True))
    batch = next(iter(make_loader(task.dataset(EXAMPLES, TITLES), tokenizer, batch_size=2, train=False)))
    with torch.no_grad():
        logits = label_logits(model, batch["input_ids"], batch["attention_mask"], task.label_ids)
        p_yes = torch.exp(logits[:, 1]) / torch.exp(logits).sum(1)
        expected_loss = -torch.log(torch.where(batch["labels"] == 1, p_yes, 1 - p_yes)).mean()
        torch.testing.assert_close(task.scores(model, batch), p_yes)
        torch.testing.assert_close(task.loss(model, batch), expected_loss)
        torch.testing.assert_close(task.loss(model, batch), F.cross_entropy(logits, batch["labels"]))
