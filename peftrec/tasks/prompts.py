"""How an example becomes a prompt: one template language for every task.

A template is a Python format string over the fields below; each task fills the ones it knows and
names the available ones when a template asks for another:

- ``{liked}`` / ``{disliked}``: history titles split at the like threshold (``none`` when empty);
- ``{history}``: history titles, oldest first, comma separated;
- ``{rated_history}``: ``Title: 4, Title: 2, ...`` (history titles with their ratings);
- ``{target}``: the target item's title (click, rating);
- ``{candidates}``: the lettered candidate list (next-item ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from peftrec.errors import PeftrecError

NO_TITLES = "none"


@dataclass(frozen=True)
class Prompt:
    """A task's prompt template and how it is wrapped for the model.

    Attributes:
        template: format string over the module's fields.
        like_threshold: history ratings above it are listed as liked, the rest as disliked.
        chat_template: wrap the text as a user turn in the tokenizer's chat template (if it has one).
        answer_cue: appended to plain (non-chat) prompts, e.g. ``"\\nAnswer:"``.
    """

    template: str
    like_threshold: float
    chat_template: bool
    answer_cue: str = "\nAnswer:"

    def text(
        self,
        history_titles: Sequence[str],
        history_ratings: Sequence[float],
        target_title: str | None = None,
        **extra: str,
    ) -> str:
        """The user-turn text for one example (before any chat template).

        Args:
            history_titles: the history's titles, oldest first.
            history_ratings: their ratings.
            target_title: the target's title (tasks that show it).
            extra: further fields (``candidates=...``).
        """
        liked = [t for t, r in zip(history_titles, history_ratings, strict=True) if r > self.like_threshold]
        disliked = [
            t for t, r in zip(history_titles, history_ratings, strict=True) if r <= self.like_threshold
        ]
        fields = {
            "liked": ", ".join(liked) or NO_TITLES,
            "disliked": ", ".join(disliked) or NO_TITLES,
            "history": ", ".join(history_titles) or NO_TITLES,
            "rated_history": ", ".join(
                f"{t}: {r:g}" for t, r in zip(history_titles, history_ratings, strict=True)
            )
            or NO_TITLES,
            **({"target": target_title} if target_title is not None else {}),
            **extra,
        }
        try:
            return self.template.format(**fields)
        except KeyError as err:
            raise PeftrecError(
                f"task.template uses the placeholder {{{err.args[0]}}}, which this task does not fill: "
                f"use {', '.join('{' + name + '}' for name in fields)} (write {{{{ and }}}} for literal braces)"
            ) from None

    def uses_chat(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether prompts go through the chat template (asked for and available)."""
        return self.chat_template and bool(getattr(tokenizer, "chat_template", None))

    def render(self, text: str, tokenizer: PreTrainedTokenizerBase) -> str:
        """The full prompt as the model sees it; it ends exactly where the answer goes."""
        if self.uses_chat(tokenizer):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text + self.answer_cue
