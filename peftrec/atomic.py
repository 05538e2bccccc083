"""Replace a folder atomically, so a crash never leaves a half-written adapter or split."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def swap_in(staging: str | Path, folder: str | Path) -> Path:
    """Replace ``folder`` by the fully written ``staging`` folder with renames (atomic on one file system).

    Args:
        staging: a complete folder, beside ``folder`` (same file system).
        folder: the destination; an existing one is retired and removed.

    Returns:
        ``folder``.
    """
    staging, folder = Path(staging), Path(folder)
    if not folder.exists():
        os.replace(staging, folder)
        return folder
    retired = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(folder, retired)
    os.replace(staging, folder)
    shutil.rmtree(retired, ignore_errors=True)
    return folder
