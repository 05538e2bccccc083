"""Rating task: digit label words, the expected rating under their softmax, the 5-way loss, scale checks."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from peftrec.batching import make_loader
from peftrec.errors import DataError, PeftrecError
from peftrec.models import load_tokenizer
from peftrec.tasks.label_scoring import label_logits
from peftrec.tasks.prompts import Prompt
from peftrec.tasks.rating import RatingTask

TEMPLATE = "Rated: {rated_history}. Rate {target}:"
EXAMPLES = pd.DataFrame(
    {
        "user_id": ["u1", "u2", "u3"],
        "item_id": ["4", "11", "2"],
        "timestamp": [1, 2, 3],
        "history_item_ids": [["1", "2", "3"], ["9", "10"], ["5"]],
        "history_ratings": [[5.0, 3.0, 4.0], [1.0, 2.0], [4.0]],
        "rating": [5.0, 1.0, 3.0],
        "label": [1, 0, 0],
    }
)
TITLES = {str(i): (f"Good Movie {i % 8}" if i < 8 else f"Bad Movie {i % 8}") for i in range(16)}


@pytest.fixture
def task(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    return RatingTask(tokenizer, Prompt(template=TEMPLATE, like_threshold=3.0, chat_template=True))


def test_rated_history_in_the_prompt(task):
    assert task.prompts(EXAMPLES, TITLES)[1] == (
        "<|im_start|>user\nRated: Bad Movie 1: 1, Bad Movie 2: 2. Rate Bad Movie 3:<|im_end|>\n<|im_start|>assistant\n"
    )
    assert task.label_ids == task.tokenizer.convert_tokens_to_ids(["1", "2", "3", "4", "5"])


def test_targets_are_scale_positions_and_off_scale_ratings_are_refused(task):
    assert task.targets(EXAMPLES) == [4, 0, 2]
    with pytest.raises(DataError, match=r"\[3\.5\] are not on the rating scale.*task\.values"):
        task.targets(EXAMPLES.assign(rating=[5.0, 3.5, 1.0]))


def test_prediction_is_the_expectation_under_the_digit_softmax(tiny_model_dir, task):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = next(iter(make_loader(task.dataset(EXAMPLES, TITLES), task.tokenizer, batch_size=3, train=False)))
    with torch.no_grad():
        logits = label_logits(model, batch["input_ids"], batch["attention_mask"], task.label_ids)
        predicted = task.scores(model, batch)
        loss = task.loss(model, batch)
    # By hand: softmax over the five digit logits, then sum of value x probability.
    for row in range(3):
        z = logits[row].double().numpy()
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert predicted[row].item() == pytest.approx(float((p * np.arange(1, 6)).sum()), rel=1e-5)
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch["labels"]))
    order = batch["index"].tolist()
    assert batch["labels"].tolist() == [[4, 0, 2][i] for i in order]


def test_metric_inputs_and_predictions(task):
    outputs = np.array([4.5, 1.5, 3.0])
    inputs = task.metric_inputs(EXAMPLES, outputs)
    np.testing.assert_array_equal(inputs["y_true"], [5.0, 1.0, 3.0])
    frame = task.prediction_frame(EXAMPLES, outputs)
    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "rating", "prediction"]


def test_scale_and_label_words_must_match(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, max_length=128)
    prompt = Prompt(template=TEMPLATE, like_threshold=3.0, chat_template=True)
    with pytest.raises(PeftrecError, match="one label word per rating value"):
        RatingTask(tokenizer, prompt, values=[1, 2, 3])
    with pytest.raises(PeftrecError, match="ascending"):
        RatingTask(tokenizer, prompt, values=[5, 4, 3, 2, 1])
