"""``tether gc``: what to keep, and removing the rest.

Kept: every ModelKit in the store's index (manifest, config, layers), every blob the
database names (run logs, code diffs, stored outputs, environments…), and the content of
every pointer in the working tree, at HEAD and at the revisions asked for (their trees
walked down to the file blobs). The default is a dry run: deleting is never a surprise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.data import content, pointer
from tether.data.pointer import Pointer
from tether.errors import DataError, ObjectNotFound
from tether.hashing import Digest
from tether.oci.manifest import ImageManifest
from tether.reporting import SILENT, Reporter
from tether.repositories.runs import kept_blobs
from tether.store.gc import SweepReport, sweep
from tether.workspace import Workspace


@dataclass(frozen=True)
class GcReport:
    sweep: SweepReport
    missing: list[Digest] = field(default_factory=list)  # referenced but absent
    revisions: list[str] = field(default_factory=list)  # git revisions whose pointers count
    dry_run: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "removed": [str(d) for d in self.sweep.removed],
            "freed_bytes": self.sweep.freed_bytes,
            "kept": self.sweep.kept,
            "missing": [str(d) for d in self.missing],
            "revisions": self.revisions,
            "dry_run": self.dry_run,
        }


def roots(ws: Workspace, revisions: list[str]) -> tuple[set[Digest], list[Digest], list[str]]:
    keep: set[Digest] = set()
    missing: set[Digest] = set()
    for digest in ws.index.referenced_manifests():
        keep.add(digest)
        try:
            manifest = ImageManifest.from_bytes(ws.store.read_bytes(digest, max_size=4 << 20))
        except ObjectNotFound:
            missing.add(digest)
            continue
        keep.add(manifest.config.digest)
        keep.update(layer.digest for layer in manifest.layers)
    for blob in kept_blobs(ws.db):
        if Digest.is_valid(blob):
            keep.add(Digest.parse(blob))
    pointers, used_revs = _pointers(ws, revisions)
    reader = content.store_reader(ws.store)
    for ptr in pointers:
        try:
            for d, _ in content.objects(reader, ptr):
                keep.add(d)
        except ObjectNotFound:
            # A tree that is not here cannot name blobs that are: keep what was seen.
            missing.add(ptr.digest)
            keep.add(ptr.digest)
    return keep, sorted(missing), used_revs


def _pointers(ws: Workspace, revisions: list[str]) -> tuple[list[Pointer], list[str]]:
    from tether.data.revisions import pointers_at

    found = [pointer.read(ws.root, r) for r in pointer.discover(ws.root)]
    used: list[str] = []
    in_git = any((d / ".git").exists() for d in (ws.root, *ws.root.parents))
    for rev in (["HEAD"] if in_git else []) + revisions:
        try:
            found.extend(pointers_at(ws.root, rev))
            used.append(rev)
        except DataError:
            if rev != "HEAD":
                raise  # a revision the user named must exist
            # HEAD of a repository without commits has no pointers yet.
    return found, used


def collect_garbage(
    ws: Workspace,
    *,
    revisions: list[str] | None = None,
    dry_run: bool = True,
    report: Reporter = SILENT,
) -> GcReport:
    with ws.lock("gc", on_wait=report.waiting):
        keep, missing, used = roots(ws, list(revisions or []))
        swept = sweep(ws.store, keep, dry_run=dry_run)
        if swept.removed and not dry_run:
            ws.stat_cache.forget_complete()
    return GcReport(swept, missing, used, dry_run)
