"""Write files and replace folders atomically, so a crash never leaves half a result, adapter or split."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends without an error the file
    replaces ``path`` (``os.replace``: atomic on one file system), otherwise it is removed.

    Args:
        path: the destination file; its folder is created.

    Yields:
        The staging file's path (it exists, empty).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        # mkstemp makes the file private (0600); results are ordinary files, readable as the umask allows.
        os.chmod(staging, 0o666 & ~_umask())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a synced temporary file (see :func:`staged_file`).

    Returns:
        ``path``.
    """
    with staged_file(path) as staging, staging.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
