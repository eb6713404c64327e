"""``tether status``: how the working copy of tracked data differs from its pointers.

Nothing changed costs one ``stat`` per file and one batched stat-cache read: the
working folder's tree is rebuilt from cached digests (hashing only files whose stat
changed) and compared with the pointer's root digest. Only when the roots differ are the
stored trees read, and then only the subtrees whose digests differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tether.data import content, paths, tree
from tether.data.pointer import Pointer
from tether.data.worktree import Hasher, quick_fingerprint, stat_file, walk
from tether.errors import ObjectNotFound
from tether.hashing import Digest
from tether.reporting import SILENT, Reporter
from tether.workspace import Workspace

State = Literal["clean", "modified", "missing"]


@dataclass(frozen=True)
class PathStatus:
    pointer: Pointer
    state: State
    changes: list[tree.Change] = field(default_factory=list)
    details_known: bool = True  # False when the stored tree is absent, so files can't be listed
    missing_objects: int = 0  # objects of the pointer absent from the local store
    current: Digest | None = None  # digest of the working copy, when it exists

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.pointer.path,
            "type": self.pointer.type,
            "digest": str(self.pointer.digest),
            "state": self.state,
            "current": str(self.current) if self.current else None,
            "in_store": self.missing_objects == 0,
            "missing_objects": self.missing_objects,
            "changes": [{"path": c.path, "change": c.kind} for c in self.changes],
        }


def status(
    ws: Workspace,
    targets: list[str | Path] | None = None,
    *,
    base: Path | None = None,
    report: Reporter = SILENT,
) -> list[PathStatus]:
    pointers = paths.select_pointers(ws.root, targets, base=base)
    hasher = Hasher(ws.stat_cache, on_bytes=report.advance)
    out = [_one(ws, hasher, p) for p in pointers]
    hasher.commit()  # what was hashed now need not be hashed next time
    return out


def _one(ws: Workspace, hasher: Hasher, ptr: Pointer) -> PathStatus:
    missing = len(content.missing_locally(ws.store, ws.stat_cache, ptr))
    target = ws.root / ptr.path
    if not target.exists() and not target.is_symlink():
        return PathStatus(ptr, "missing", missing_objects=missing)
    if ptr.type == "file" or not target.is_dir():
        if not target.is_file() or target.is_symlink() or ptr.type == "dir":
            return PathStatus(ptr, "modified", details_known=False, missing_objects=missing)
        wf = stat_file(target)
        digest = hasher.digests(target, ptr.path, [wf])[""]
        state: State = "clean" if digest == ptr.digest else "modified"
        return PathStatus(ptr, state, missing_objects=missing, current=digest)
    quick = quick_fingerprint(target, hasher.scan_start_ns)
    if quick is not None and ws.stat_cache.lookup_dir(ptr.path, quick) == ptr.digest:
        return PathStatus(ptr, "clean", missing_objects=missing, current=ptr.digest)
    built: dict[Digest, bytes] = {}  # the new tree objects (compact bytes), for diff

    def keep(data: bytes) -> Digest:
        d = tree.hash_only(data)
        built[d] = data
        return d

    builder = tree.TreeBuilder(keep)
    for f, digest in hasher.stream(target, ptr.path, walk(target)):
        builder.add(tree.FileRecord(f.path, digest, f.stamp.size, f.executable))
    root = builder.finish().digest
    if quick is not None:
        ws.stat_cache.record_dir(ptr.path, quick, root)
    if root == ptr.digest:
        return PathStatus(ptr, "clean", missing_objects=missing, current=root)
    reader = tree.TreeReader(
        lambda d: built[d] if d in built else ws.store.read_bytes(d, max_size=tree.MAX_TREE_BYTES)
    )
    try:
        changes = tree.diff(reader, ptr.digest, root)
    except ObjectNotFound:
        return PathStatus(
            ptr, "modified", details_known=False, missing_objects=missing, current=root
        )
    return PathStatus(ptr, "modified", changes, missing_objects=missing, current=root)
