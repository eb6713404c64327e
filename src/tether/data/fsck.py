"""``tether fsck``: prove the store still holds what everything says it holds.

Every blob is re-hashed (on every core); one whose bytes no longer match its name is
moved to ``.tether/quarantine/`` (kept for inspection, out of every reader's way), so the
next ``tether data pull`` or ``pack`` writes a good copy in its place. A file kept in
chunks is then read whole: each of its chunks must be there and whole, and together they
must hash to its digest; a problem names the file, and the chunk. Then every reference
is checked: pointers in the working tree (trees parse, every object present; a file
whose content went missing or was set aside is named by its path, so a bad chunk
names every file that uses it), ModelKits in the index, and the blobs the database
names.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.data import content, pointer, tree
from tether.errors import DataError, ObjectNotFound, StoreError
from tether.hashing import Digest, hash_file
from tether.oci.manifest import ImageManifest
from tether.reporting import SILENT, Reporter
from tether.repositories.runs import kept_blobs
from tether.workspace import Workspace


@dataclass(frozen=True)
class Problem:
    digest: Digest
    kind: str  # corrupt | missing | unreadable-tree | missing-chunk | unreadable-chunk-list
    referenced_by: str  # "store", "file data/x/a.bin" (the working-tree files whose
    # content is missing), "pointer data/x", "ModelKit repo:tag", "run <id>", for a file
    # kept in chunks: "chunk <digest>" (the first bad one)

    def to_json(self) -> dict[str, str]:
        return {"digest": str(self.digest), "problem": self.kind, "where": self.referenced_by}


@dataclass(frozen=True)
class FsckReport:
    checked: int
    bytes: int
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[Digest] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "bytes": self.bytes,
            "ok": self.ok,
            "problems": [p.to_json() for p in self.problems],
            "quarantined": [str(d) for d in self.quarantined],
        }


def fsck(
    ws: Workspace,
    *,
    jobs: int | None = None,
    report: Reporter = SILENT,
) -> FsckReport:
    quarantine = ws.dot / "quarantine"
    problems: list[Problem] = []
    quarantined: list[Digest] = []
    # Exclusive gc lock: nothing writes or deletes blobs while we judge them.
    with ws.lock("gc", on_wait=report.waiting):
        ws.stat_cache.forget_complete()  # fsck trusts no summary: everything is re-checked
        digests = list(ws.store)

        def check(d: Digest) -> tuple[Digest, bool, int]:
            try:
                actual, size = hash_file(ws.store.path(d))
            except FileNotFoundError:
                return d, True, 0  # removed meanwhile: not corrupt
            report.advance(size)
            return d, actual == d, size

        total = 0
        with ThreadPoolExecutor(jobs or os.cpu_count() or 2) as pool:
            for d, good, size in pool.map(check, digests):
                total += size
                if not good:
                    ws.store.set_aside(d, quarantine)
                    quarantined.append(d)
                    problems.append(Problem(d, "corrupt", "store"))
        problems.extend(_chunked(ws, quarantine, quarantined))
        if quarantined:
            ws.store.sync()
            ws.stat_cache.forget_complete()
        problems.extend(_references(ws))
    return FsckReport(len(digests), total, problems, quarantined)


def _chunked(ws: Workspace, quarantine: Path, quarantined: list[Digest]) -> list[Problem]:
    """The files kept in chunks, after their chunks were checked one by one: a missing
    (or just quarantined) chunk names the file; with every chunk good, the file is read
    whole, and a list whose chunks do not make its digest is set aside."""
    out: list[Problem] = []
    for d in list(ws.store.chunks):
        try:
            listed = ws.store.chunks.load(d)
        except StoreError as exc:
            out.append(Problem(d, "unreadable-chunk-list", exc.message))
            continue
        gone = [c for c, _ in listed.chunks if not ws.store.has_blob(c)]
        if gone:
            out.append(Problem(d, "missing-chunk", f"chunk {gone[0]} (of {len(gone)})"))
        elif ws.store.verify(d):
            continue
        else:
            out.append(Problem(d, "corrupt", "its chunk list"))
        # Set aside: the file is then missing, so 'tether data pull' fetches it again.
        ws.store.set_aside(d, quarantine)
        quarantined.append(d)
    return out


def _references(ws: Workspace) -> list[Problem]:
    out: list[Problem] = []
    reader = content.store_reader(ws.store)
    for rel in pointer.discover(ws.root):
        try:
            ptr = pointer.read(ws.root, rel)
            missing = content.missing_locally(ws.store, ws.stat_cache, ptr)
            named = _files_of(reader, ptr, set(missing)) if missing else {}
            for d in missing:
                paths = named.get(d)
                where = f"pointer {ptr.path}"
                if paths:  # the files the user will find unreadable, not only the pointer
                    more = f" (+{len(paths) - 3} more)" if len(paths) > 3 else ""
                    where = "file " + ", ".join(paths[:3]) + more
                out.append(Problem(d, "missing", where))
        except DataError as exc:
            out.append(Problem(_zero(), "unreadable-tree", f"pointer {rel}: {exc.message}"))
    for entry in ws.index.entries():
        where = f"ModelKit {entry.ref()}"
        try:
            raw = ws.store.read_bytes(entry.descriptor.digest, max_size=4 << 20)
        except ObjectNotFound:
            out.append(Problem(entry.descriptor.digest, "missing", where))
            continue
        manifest = ImageManifest.from_bytes(raw)
        for desc in [manifest.config, *manifest.layers]:
            if not ws.store.has(desc.digest):
                out.append(Problem(desc.digest, "missing", where))
    for digest in kept_blobs(ws.db):
        if Digest.is_valid(digest):
            d = Digest.parse(digest)
            if not ws.store.has(d):
                out.append(Problem(d, "missing", "a run record"))
    return out


def _files_of(
    reader: tree.TreeReader, ptr: pointer.Pointer, wanted: set[Digest]
) -> dict[Digest, list[str]]:
    """The working-tree paths of the files of ``ptr`` whose content is in ``wanted``
    (a subtree that is itself missing is skipped: it is reported as a tree)."""
    if ptr.type == "file":
        return {ptr.digest: [ptr.path]} if ptr.digest in wanted else {}
    found: dict[Digest, list[str]] = {}

    def walk(digest: Digest, prefix: str) -> None:
        try:
            entries = reader.entries(digest)
        except ObjectNotFound:
            return
        for e in entries:
            if e.type == "dir":
                walk(e.digest, f"{prefix}{e.name}/")
            elif e.digest in wanted:
                found.setdefault(e.digest, []).append(f"{prefix}{e.name}")

    walk(ptr.digest, f"{ptr.path}/")
    return found


def _zero() -> Digest:
    return Digest("0" * 64)
