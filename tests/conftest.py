"""Shared fixtures: a tiny randomly initialised Llama with a real BPE tokenizer, and toy ratings.

No network: the tokenizer is trained here on the words the prompts use, the model is built from a
config. The toy data is learnable (liking depends on the target title), so training must lower the loss.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOY_ITEMS = [f"Good Movie {k}" for k in range(8)] + [f"Bad Movie {k}" for k in range(8)]


def build_tiny_model(folder: Path, *, chat_template: bool = True) -> Path:
    """Write a tiny Llama (hidden 64, 2 layers) and a byte-level BPE tokenizer into ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [
        "A user rated movies. Liked: none. Disliked: none.",
        'Will the user like the movie "x"? Answer Yes or No.',
        "Answer: Yes No Yes No user assistant system",
        "Yes\nNo\nYes\nNo",
        ", ".join(TOY_ITEMS),
        "0 1 2 3 4 5 6 7 8 9 rating rated",
    ] * 50
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + BPE tokenizer with a chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_plain_model_dir(tmp_path_factory) -> Path:
    """The same without a chat template (a base model)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-plain"), chat_template=False)


def toy_frames(n_users: int = 40, per_user: int = 24, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings where every user likes the Good movies (5) and dislikes the Bad ones (1)."""
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        for t in range(per_user):
            item = rng.randrange(len(TOY_ITEMS))
            rating = 5 if item < 8 else 1
            rows.append({"user": f"u{u}", "movie": str(item), "stars": rating, "time": 1_000_000 + 1000 * t + u})
    interactions = pd.DataFrame(rows)
    items = pd.DataFrame({"movie": [str(i) for i in range(len(TOY_ITEMS))], "name": TOY_ITEMS})
    return interactions, items


@pytest.fixture
def toy_csv(tmp_path) -> tuple[Path, Path]:
    """Toy ratings as the user's own CSV files, with non-standard column names."""
    interactions, items = toy_frames()
    inter_path, items_path = tmp_path / "ratings.csv", tmp_path / "movies.csv"
    interactions.to_csv(inter_path, index=False)
    items.to_csv(items_path, index=False)
    return inter_path, items_path
