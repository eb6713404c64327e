"""Garbage collection: delete blobs that nothing references.

Roots are the manifests in the store's ``index.json`` (a manifest keeps its config and
layers) and the database's ``blob_refs`` view (run logs, code diffs, stored outputs…).
Collection holds the ``gc`` lock exclusively while packs hold it shared, so a
blob written by a pack still in progress is never taken. Orphan temp files in ``tmp/``
older than an hour are removed too (a crashed writer leaves them; they are never read).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tether.errors import ObjectNotFound
from tether.hashing import Digest
from tether.oci.manifest import ImageManifest
from tether.workspace import Workspace

TMP_GRACE_SECONDS = 3600


@dataclass(frozen=True)
class GcReport:
    kept: int
    removed: list[Digest] = field(default_factory=list)
    freed_bytes: int = 0
    missing: list[Digest] = field(default_factory=list)  # referenced but absent
    tmp_removed: int = 0
    dry_run: bool = False


def reachable(ws: Workspace) -> tuple[set[Digest], list[Digest]]:
    keep: set[Digest] = set()
    missing: list[Digest] = []
    for digest in ws.index.referenced_manifests():
        keep.add(digest)
        try:
            manifest = ImageManifest.from_bytes(ws.store.read_bytes(digest, max_size=4 << 20))
        except ObjectNotFound:
            missing.append(digest)
            continue
        keep.add(manifest.config.digest)
        keep.update(layer.digest for layer in manifest.layers)
    for row in ws.db.query("SELECT digest FROM blob_refs"):
        if Digest.is_valid(row["digest"]):
            keep.add(Digest.parse(row["digest"]))
    return keep, missing


def collect_garbage(
    ws: Workspace, *, dry_run: bool = False, on_wait: Callable[[str], None] | None = None
) -> GcReport:
    with ws.lock("gc", on_wait=on_wait):
        keep, missing = reachable(ws)
        removed: list[Digest] = []
        freed = 0
        for digest in ws.store:
            if digest in keep:
                continue
            removed.append(digest)
            freed += ws.store.size(digest)
            if not dry_run:
                ws.store.delete(digest)
        if removed and not dry_run:
            ws.store.sync()
        tmp_removed = 0
        cutoff = time.time() - TMP_GRACE_SECONDS
        for entry in os.scandir(ws.store.tmp_dir):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                tmp_removed += 1
                if not dry_run:
                    os.unlink(entry.path)
    return GcReport(len(keep) - len(missing), sorted(removed), freed, missing, tmp_removed, dry_run)
