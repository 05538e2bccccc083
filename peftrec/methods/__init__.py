"""PEFT heads: build one from its config and attach it to the frozen base model."""

from peftrec.methods.apply import apply_head, save_head

__all__ = ["apply_head", "save_head"]
