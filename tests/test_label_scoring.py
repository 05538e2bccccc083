"""Label words resolve to single tokens, and the last-position scoring matches a full forward pass."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftrec.errors import PeftrecError
from peftrec.models import load_tokenizer
from peftrec.tasks import label_scoring
from peftrec.tasks.label_scoring import constant_on, label_logits, resolve_label_ids

PROMPT = "<|im_start|>user\nWill the user like it?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_label_words_resolve_to_their_single_tokens(tokenizer):
    ids = resolve_label_ids(tokenizer, ["No", "Yes"], PROMPT)
    assert ids == tokenizer.convert_tokens_to_ids(["No", "Yes"])
    assert tokenizer.convert_ids_to_tokens(ids) == ["No", "Yes"]


def test_two_token_word_is_refused_naming_its_pieces(tokenizer):
    with pytest.raises(PeftrecError) as err:
        resolve_label_ids(tokenizer, ["No", "Absolutely"], PROMPT)
    message = str(err.value)
    assert "'Absolutely' is 10 tokens" in message
    assert "['A', 'b', 's'" in message
    assert "task.label_words" in message


def test_word_that_merges_with_the_prompt_end_is_refused(tokenizer):
    # "Ye" + "s" tokenizes as the single token "Yes": the label would not be the next token.
    assert len(tokenizer("s", add_special_tokens=False)["input_ids"]) == 1
    with pytest.raises(PeftrecError, match="does not follow the prompt as its own token"):
        resolve_label_ids(tokenizer, ["No", "s"], "Answer: Ye")


def test_words_sharing_a_token_are_refused(tokenizer):
    with pytest.raises(PeftrecError, match="same token"):
        resolve_label_ids(tokenizer, ["Yes", "Yes"], PROMPT)


@pytest.mark.parametrize("per_row", [True, False])
def test_label_logits_equal_the_full_forward_at_each_rows_last_token(tiny_model_dir, monkeypatch, per_row):
    monkeypatch.setattr(label_scoring, "_PER_ROW_LOGITS_TO_KEEP", per_row)
    tokenizer = load_tokenizer(tiny_model_dir, max_length=64)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    texts = ["Good Movie 1", "Bad Movie 2, Good Movie 3, Bad Movie 4", "Yes"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"][:, 0].all(), "padding must be on the right"
    label_ids = tokenizer.convert_tokens_to_ids(["No", "Yes"])
    with torch.no_grad():
        got = label_logits(model, batch["input_ids"], batch["attention_mask"], label_ids)
        for row, text in enumerate(texts):
            alone = tokenizer(text, return_tensors="pt")["input_ids"]
            expected = model(input_ids=alone).logits[0, -1, label_ids]
            torch.testing.assert_close(got[row], expected, rtol=1e-4, atol=1e-5)
    assert got.shape == (3, 2) and got.dtype == torch.float32


def test_label_ids_cached_by_an_evaluation_serve_the_training_step_after_it():
    # Cached per device: a new tensor each batch would be a host-to-GPU copy that waits for the GPU.
    constant_on.cache_clear()
    with torch.inference_mode():
        ids = constant_on(torch.device("cpu"), (3, 1), torch.long)
    assert constant_on(torch.device("cpu"), (3, 1), torch.long) is ids
    logits = torch.zeros(2, 5, requires_grad=True)
    logits.index_select(-1, ids).sum().backward()  # an inference tensor could not be saved for backward
    assert logits.grad.tolist() == [[0, 1, 0, 1, 0]] * 2
