"""``tether data du``: how much tracked data there is, and how much the store spends on it.

For each tracked path, the *logical* size is the bytes of every file its pointer names
(a file named twice counts twice), and the *stored* size the bytes the store spends on
them: each blob once, a file kept in chunks as its chunks, each once, plus the folder's
tree objects. The total takes each of those once across every path, so it shows what
deduplication across versions and paths saves. Content the store lacks is counted as
missing (``tether data pull`` fetches it), not as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tether.data import content, paths, tree
from tether.data.pointer import Pointer
from tether.errors import ObjectNotFound, StoreError
from tether.hashing import Digest
from tether.store.objects import ContentStore
from tether.workspace import Workspace


@dataclass(frozen=True)
class Usage:
    path: str  # the tracked path; "" for the total
    files: int
    logical: int
    stored: int
    missing: int  # files whose content is not in the store

    @property
    def ratio(self) -> float | None:
        """stored / logical (None for no bytes): 0.25 means the store keeps a quarter."""
        return self.stored / self.logical if self.logical else None

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "files": self.files,
            "logical_bytes": self.logical,
            "stored_bytes": self.stored,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "missing_files": self.missing,
        }


@dataclass(frozen=True)
class UsageReport:
    paths: list[Usage]
    total: Usage
    store_bytes: int  # everything the store holds, tracked or not (runs, ModelKits…)

    def to_json(self) -> dict[str, object]:
        return {
            "paths": [u.to_json() for u in self.paths],
            "total": self.total.to_json(),
            "store_bytes": self.store_bytes,
        }


def usage(
    ws: Workspace, targets: list[str | Path] | None = None, *, base: Path | None = None
) -> UsageReport:
    """The usage of each tracked path at or under ``targets`` (every one without)."""
    reader = content.store_reader(ws.store)
    every: dict[Digest, int] = {}  # what the store spends, each unit once across paths
    out: list[Usage] = []
    files = logical = missing = 0
    for ptr in paths.select_pointers(ws.root, targets, base=base):
        one = _usage(ws.store, reader, ptr)
        out.append(one[0])
        every.update(one[1])
        files += one[0].files
        logical += one[0].logical
        missing += one[0].missing
    total = Usage("", files, logical, sum(every.values()), missing)
    held = sum(ws.store.sizes(list(ws.store)).values())
    return UsageReport(out, total, held)


def _usage(
    store: ContentStore, reader: tree.TreeReader, ptr: Pointer
) -> tuple[Usage, dict[Digest, int]]:
    units: dict[Digest, int] = {}
    files = logical = missing = 0
    try:
        for digest, size in content.objects(reader, ptr):
            if size is None:  # a tree object: stored as a blob of its own
                if store.has_blob(digest):
                    units[digest] = store.size(digest)
                continue
            files += 1
            logical += size
            if store.has_blob(digest):
                units[digest] = size
            elif store.chunks.has(digest):
                try:
                    units.update(store.chunks.load(digest).chunks)
                except StoreError:
                    missing += 1
            else:
                missing += 1
    except ObjectNotFound:  # a folder whose tree is not here: its files cannot be listed
        missing += 1
    return Usage(ptr.path, files, logical, sum(units.values()), missing), units
