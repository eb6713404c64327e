"""Sweeping the store: delete every blob outside a given set of roots.

Which blobs are roots is decided above the store (``data/gc.py`` gathers them from
pointers, ModelKits and the database). The sweep holds the ``gc`` lock exclusively while
every writer (add, pack, fetch) holds it shared, so a blob written by a command still in
progress is never taken. Orphan temp files in ``tmp/`` older than an hour are removed
too (a crashed writer leaves them; they are never read).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from tether.errors import StoreError
from tether.hashing import Digest
from tether.store.objects import ContentStore

TMP_GRACE_SECONDS = 3600


@dataclass(frozen=True)
class SweepReport:
    kept: int
    removed: list[Digest] = field(default_factory=list)
    freed_bytes: int = 0
    tmp_removed: int = 0
    dry_run: bool = False


def sweep(store: ContentStore, keep: set[Digest], *, dry_run: bool) -> SweepReport:
    """Remove blobs not in ``keep``; the caller holds the ``gc`` lock exclusively. A kept
    chunked blob keeps its chunks; the list of one not kept goes, and its chunks with it
    unless another kept list names them."""
    removed: list[Digest] = []
    freed = 0
    kept = 0
    keep = set(keep)
    for digest in store.chunks:
        if digest not in keep:
            removed.append(digest)
            if not dry_run:
                store.chunks.delete(digest)
            continue
        kept += 1
        try:
            keep.update(chunk for chunk, _ in store.chunks.load(digest).chunks)
        except StoreError:  # a damaged list: kept for fsck to report, its chunks too
            continue
    for digest in store:
        if digest in keep:
            kept += 1
            continue
        removed.append(digest)
        freed += store.size(digest)
        if not dry_run:
            store.delete(digest)
    if removed and not dry_run:
        store.sync()
    tmp_removed = 0
    cutoff = time.time() - TMP_GRACE_SECONDS
    for entry in os.scandir(store.tmp_dir):
        if entry.is_file() and entry.stat().st_mtime < cutoff:
            tmp_removed += 1
            if not dry_run:
                os.unlink(entry.path)
    return SweepReport(kept, sorted(removed, key=lambda d: d.hex), freed, tmp_removed, dry_run)
