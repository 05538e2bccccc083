"""Recommendation tasks: how examples become prompts, how a batch is scored, which metrics apply."""
