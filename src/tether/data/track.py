"""``tether add``: put files and folders in the store and write their pointers.

Order is what makes a crash harmless: every blob and tree object is durable in the store
before the pointer that names it is written (atomically), so a pointer never names
content the store lacks, and an interrupted add leaves only unreferenced temp files that
``tether gc`` removes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.data import content, paths, pointer, tree
from tether.data.pointer import Pointer
from tether.data.worktree import Hasher, quick_fingerprint, stat_file, walk
from tether.errors import DataError
from tether.reporting import SILENT, Reporter
from tether.workspace import Workspace


@dataclass(frozen=True)
class AddResult:
    pointer: Pointer
    previous: Pointer | None
    gitignore_added: bool

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.digest != self.pointer.digest


@dataclass(frozen=True)
class AddReport:
    results: list[AddResult]
    hashed_files: int
    hashed_bytes: int
    stored_small_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [
                {
                    "path": r.pointer.path,
                    "pointer": r.pointer.pointer_path,
                    "type": r.pointer.type,
                    "digest": str(r.pointer.digest),
                    "size": r.pointer.size,
                    "files": r.pointer.files,
                    "changed": r.changed,
                }
                for r in self.results
            ],
            "hashed_files": self.hashed_files,
            "hashed_bytes": self.hashed_bytes,
        }


def add(
    ws: Workspace,
    targets: list[str | Path],
    *,
    base: Path | None = None,
    jobs: int | None = None,
    report: Reporter = SILENT,
) -> AddReport:
    """Track ``targets`` (files or folders, relative to ``base``)."""
    rels = list(dict.fromkeys(paths.relative(ws.root, t, base=base) for t in targets))
    if not rels:
        raise DataError("nothing to add", hint="name the files or folders to track")
    for rel in rels:
        if not os.path.lexists(ws.root / rel):
            raise DataError(f"{rel} does not exist", hint="check the path")
        paths.check_addable(ws.root, rel)
        outer = next((o for o in rels if rel.startswith(o + "/")), None)
        if outer is not None:
            raise DataError(
                f"{rel} is inside {outer}, which is added too",
                hint=f"add the folder alone: tether add {outer}",
            )
    with (
        ws.lock("data", on_wait=report.waiting),
        ws.lock("gc", shared=True, on_wait=report.waiting),
    ):
        hasher = Hasher(ws.stat_cache, store=ws.store, jobs=jobs, on_bytes=report.advance)
        made: list[Pointer] = []
        try:
            for rel in rels:
                made.append(_hash_target(ws, hasher, rel))
            hasher.commit()  # every object durable before any pointer names it
        except BaseException:
            hasher.discard()
            raise
        results = []
        for new in made:
            previous = pointer.read_if_any(ws.root, new.pointer_path)
            if previous != new:
                pointer.write(ws.root, new, ws.dot / "tmp")
            added = paths.ensure_gitignored(ws.root, new.path, ws.dot / "tmp")
            ws.stat_cache.mark_complete(new.digest, os.stat(ws.store.blobs_dir).st_mtime_ns)
            results.append(AddResult(new, previous, added))
    stored = hasher.batch.bytes_written if hasher.batch is not None else 0
    return AddReport(results, hasher.hashed_files, hasher.hashed_bytes, stored)


def _hash_target(ws: Workspace, hasher: Hasher, rel: str) -> Pointer:
    target = ws.root / rel
    if target.is_dir() and not target.is_symlink():
        fp = quick_fingerprint(target, hasher.scan_start_ns)
        previous = pointer.read_if_any(ws.root, rel + pointer.SUFFIX)
        if (
            fp is not None
            and previous is not None
            and ws.stat_cache.lookup_dir(rel, fp) == previous.digest
            and not content.missing_locally(ws.store, ws.stat_cache, previous)
        ):
            return previous  # nothing changed and the store has it all: no file is read
        assert hasher.batch is not None
        # Streamed: files are walked, hashed and stored a window at a time, and each
        # folder's tree object is written as the walk leaves it.
        builder = tree.TreeBuilder(hasher.batch.add)
        for f, digest in hasher.stream(target, rel, walk(target), check_store=True):
            builder.add(tree.FileRecord(f.path, digest, f.stamp.size, f.executable))
        root = builder.finish()
        if fp is not None:
            # The fingerprint was taken before the files were read: one changed since
            # has another stamp now, so this entry can never vouch for it.
            hasher.after_commit.append(lambda: ws.stat_cache.record_dir(rel, fp, root.digest))
        return Pointer(rel, "dir", root.digest, root.size, root.files)
    wf = stat_file(target)
    digest = hasher.digests(target, rel, [wf], check_store=True)[""]
    return Pointer(rel, "file", digest, wf.stamp.size, 1)
