"""Score a prompt by the logits of a few label words at its last position (click, rating).

One forward pass per example and no full-vocabulary logits for every position: only each row's last
real token goes through the LM head, and only the label words' logits are kept.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import transformers.modeling_utils as hf_modeling
from transformers import PreTrainedTokenizerBase

from peftrec.errors import PeftrecError
from peftrec.methods.virtual_tokens import prepended_tokens

# transformers >= 5.x takes per-row positions ((batch, 1) integer tensor) in `logits_to_keep`;
# older releases only a 1D tensor of positions shared by every row.
_PER_ROW_LOGITS_TO_KEEP = hasattr(hf_modeling, "slice_logits_to_keep")


@functools.lru_cache(maxsize=32)
def constant_on(
    device: torch.device, values: tuple[float, ...], dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``values`` as a tensor on ``device``, built once per device and dtype (callers only read it).

    Building a small constant on a GPU at every batch copies it from pageable host memory, and that copy
    makes the host wait for all of the GPU's queued work. Built outside inference mode, so a training
    step may keep it for its backward pass even when an evaluation made it first.
    """
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=dtype, device=device)


def label_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    label_ids: Sequence[int],
) -> torch.Tensor:
    """Logits of the label words at each row's last real (non-pad) position.

    Args:
        model: a causal LM (or a peft model wrapping one) whose forward accepts ``logits_to_keep``.
        input_ids: ``(batch, seq)`` right-padded token ids.
        attention_mask: ``(batch, seq)``, 1 on real tokens.
        label_ids: the vocabulary ids of the label words, in label order.

    Returns:
        ``(batch, len(label_ids))`` float32 logits.
    """
    # Prompt tuning puts its virtual tokens before the input (right padding stays at the end), so the
    # base model's positions, and the logits it can keep, are shifted by their number.
    last = attention_mask.sum(dim=1) - 1 + prepended_tokens(model)
    ids = constant_on(input_ids.device, tuple(label_ids), torch.long)
    if _PER_ROW_LOGITS_TO_KEEP:
        out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=last[:, None])
        logits = out.logits[:, 0]
    else:
        # Few distinct lengths per batch (length-grouped batching), so this stays small.
        positions, row_of = torch.unique(last, return_inverse=True)
        out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=positions)
        logits = out.logits[torch.arange(len(last), device=last.device), row_of]
    return logits.index_select(-1, ids).float()


def resolve_label_ids(
    tokenizer: PreTrainedTokenizerBase, words: Sequence[str], sample_prompt: str
) -> list[int]:
    """Map label words to single token ids, and check they stay one token after the prompt.

    TALLRec hard-codes LLaMA's ids for Yes/No; here they come from the tokenizer and are checked:
    each word must be one token alone, and ``sample_prompt + word`` must tokenize as the prompt's
    tokens followed by that one token (a word can merge with the prompt's last characters).

    Args:
        tokenizer: the model's tokenizer.
        words: label words in label order (e.g. ``["No", "Yes"]``).
        sample_prompt: a rendered prompt as the model will see it.

    Returns:
        One token id per word.

    Raises:
        PeftrecError: a word is several tokens, merges with the prompt, or two words share a token.
    """
    prompt_ids = tokenizer(sample_prompt, add_special_tokens=False)["input_ids"]
    ids = []
    for word in words:
        word_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(word_ids) != 1:
            pieces = tokenizer.convert_ids_to_tokens(word_ids)
            raise PeftrecError(
                f"label word {word!r} is {len(word_ids)} tokens for this tokenizer: {pieces}. "
                "Each label word must be a single token: choose another word in task.label_words "
                "(or task.plain_label_words for models without a chat template), e.g. without or with a leading space."
            )
        joined = tokenizer(sample_prompt + word, add_special_tokens=False)["input_ids"]
        if joined != prompt_ids + word_ids:
            tail = tokenizer.convert_ids_to_tokens(joined[max(0, len(prompt_ids) - 2) :])
            raise PeftrecError(
                f"label word {word!r} does not follow the prompt as its own token: the prompt's end and the "
                f"word tokenize together as {tail}. Change the prompt's ending (task.template / "
                "task.plain_answer_cue) or the label word (e.g. add or drop a leading space)."
            )
        ids.append(word_ids[0])
    if len(set(ids)) != len(ids):
        raise PeftrecError(
            f"label words {list(words)} map to the same token ids {ids}: choose distinct words"
        )
    return ids
