"""User-facing errors.

A :class:`PeftrecError` says what is wrong and how to fix it. The command-line entry points print
its message without a traceback (the problem is the input, not the code); every other exception
keeps its traceback.
"""


class PeftrecError(Exception):
    """An error caused by the user's input or environment, with a message that names the fix."""


class AssetNotFoundError(PeftrecError):
    """No source (normal, packaged fallback, local path) could provide a model or dataset."""


class DataError(PeftrecError):
    """Input data is missing, malformed, or yields an empty split."""
