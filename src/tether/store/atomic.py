"""Atomic, durable file replacement: temp file in the same filesystem → fsync →
``os.replace`` → fsync of the directory.

A reader sees either the old file or the new one, never a torn write, and once a
function here returns the new content survives a power loss. An fsync error is never
retried (Linux may drop the dirty pages after reporting it once): the temp file is
discarded and the error propagates.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Make a directory entry change (create, rename, unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str | Path, data: bytes, *, tmp_dir: str | Path | None = None, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    directory = Path(tmp_dir) if tmp_dir is not None else path.parent
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; give the file its intended mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
