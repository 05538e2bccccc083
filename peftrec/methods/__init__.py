"""PEFT heads: build one from its config, attach it to the frozen base model, train, save, merge.

Each head has a conf file (``conf/peft/<name>.yaml``), goes through :func:`apply_head`, may need
training hooks (:func:`training_hooks`), and is saved by :func:`save_head`.
"""

from peftrec.methods.apply import apply_head, load_head, save_head
from peftrec.methods.hooks import TrainingHooks, training_hooks
from peftrec.methods.merge import merge_head
from peftrec.methods.runtime import runtime_head_values, saved_head_summary
from peftrec.methods.virtual_tokens import prepended_tokens

__all__ = [
    "TrainingHooks",
    "apply_head",
    "load_head",
    "merge_head",
    "prepended_tokens",
    "runtime_head_values",
    "save_head",
    "saved_head_summary",
    "training_hooks",
]
