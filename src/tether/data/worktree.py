"""The working copy of tracked data: walking it, and knowing each file's digest with as
little reading as possible (stat cache first, then hashing on every core).

Small files are read whole in batches per worker thread, so thread hand-offs do not
dominate (one task per 4 KiB file costs more than hashing it); large files are streamed
one per thread. When storing, small files go through one ``BlobBatch`` (a single
``syncfs``), large ones through their own fsynced writer.
"""

from __future__ import annotations

import hashlib
import os
import stat as statmod
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from tether.errors import DataError
from tether.hashing import Digest, hash_file
from tether.store.objects import BlobBatch, ContentStore
from tether.store.statcache import RACY_NS, Stamp, StatCache

SMALL = 1 << 20  # files below this are read whole and batched
_BATCH_FILES = 512
_BATCH_BYTES = 16 << 20


class WorkFile(NamedTuple):
    path: str  # relative to the tracked directory ('' when the tracked path is a file)
    stamp: Stamp
    executable: bool


def fingerprint(files: list[WorkFile], scan_start_ns: int) -> str | None:
    """A digest of every file's path and stamp, or None when a file is too fresh to
    trust (see store/statcache.py): equal fingerprints mean an unchanged folder."""
    if files and max(f.stamp.mtime_ns for f in files) >= scan_start_ns - RACY_NS:
        return None
    return _fingerprint_of(
        [_line(f.path, f.stamp.ino, f.stamp.mtime_ns, f.stamp.size, f.executable) for f in files]
    )


def quick_fingerprint(base: Path, scan_start_ns: int) -> str | None:
    """``fingerprint(scan_dir(base))`` in one lean pass that builds no listing: the
    "nothing changed" path of status. None for anything the full scan must judge
    (fresh files, links, special files)."""
    lines: list[str] = []
    newest = 0
    stack = [("", str(base))]
    while stack:
        prefix, directory = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((prefix + entry.name + "/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    newest = max(newest, st.st_mtime_ns)
                    lines.append(
                        _line(
                            prefix + entry.name,
                            st.st_ino,
                            st.st_mtime_ns,
                            st.st_size,
                            bool(st.st_mode & 0o100),
                        )
                    )
                else:
                    return None
    if newest >= scan_start_ns - RACY_NS:
        return None
    return _fingerprint_of(lines)


def _line(path: str, ino: int, mtime_ns: int, size: int, executable: bool) -> str:
    # NUL ends the path, so sorting the lines sorts by path.
    return f"{path}\0{ino}\0{mtime_ns}\0{size}\0{executable:d}\n"


def _fingerprint_of(lines: list[str]) -> str:
    lines.sort()
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def scan_dir(base: Path) -> list[WorkFile]:
    """Every regular file below ``base``, sorted by path. Symlinks and special files are
    refused: following them could read or later write outside the tracked folder."""
    out: list[WorkFile] = []
    stack = [("", str(base))]
    while stack:
        prefix, directory = stack.pop()
        try:
            it = os.scandir(directory)
        except NotADirectoryError:
            raise DataError(f"{directory} is not a directory") from None
        with it:
            for entry in it:
                # d_type answers file-or-folder without a syscall; only files are stat'ed.
                if entry.is_dir(follow_symlinks=False):
                    stack.append((prefix + entry.name + "/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    out.append(
                        WorkFile(
                            prefix + entry.name,
                            Stamp(st.st_ino, st.st_mtime_ns, st.st_size),
                            bool(st.st_mode & 0o100),
                        )
                    )
                else:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    kind = "a symlink" if statmod.S_ISLNK(mode) else "not a regular file"
                    raise DataError(
                        f"{entry.path} is {kind}",
                        hint="tracked folders hold regular files only; replace it with "
                        "the file itself, or move it out of the folder",
                    )
    out.sort(key=lambda f: f.path)
    return out


def stat_file(path: Path) -> WorkFile:
    st = os.lstat(path)
    if not statmod.S_ISREG(st.st_mode):
        kind = "a symlink" if statmod.S_ISLNK(st.st_mode) else "not a regular file"
        raise DataError(f"{path} is {kind}", hint="track the file itself, not a link to it")
    return WorkFile("", Stamp.of(st), bool(st.st_mode & 0o100))


class Hasher:
    """Digests of working files, from the stat cache when it can be trusted."""

    def __init__(
        self,
        cache: StatCache,
        *,
        store: ContentStore | None = None,
        jobs: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.cache = cache
        self.store = store  # when set, every file's content is also put in the store
        self.jobs = jobs or os.cpu_count() or 2
        self.on_bytes = on_bytes
        self.scan_start_ns = time.time_ns()
        self.hashed_files = 0
        self.hashed_bytes = 0
        self._fresh: list[tuple[str, Stamp, Digest]] = []
        self._lock = threading.Lock()
        # Cache entries that may only be written once the stored objects are durable.
        self.after_commit: list[Callable[[], None]] = []
        self.batch: BlobBatch | None = store.batch() if store is not None else None

    def digests(
        self, base: Path, key: str, files: list[WorkFile], *, check_store: bool = False
    ) -> dict[str, Digest]:
        """Digest of each file (by its ``path``); ``key`` is the project-relative path of
        ``base`` (the stat cache's key prefix). With ``check_store``, a cached digest
        counts only when the store holds that blob (re-adding repairs a pruned store)."""
        known = self.cache.lookup(key)
        out: dict[str, Digest] = {}
        todo: list[WorkFile] = []
        for f in files:
            hit = known.get(_join(key, f.path))
            if (
                hit is not None
                and hit[0] == f.stamp
                and (not check_store or self.store is None or self.store.has(hit[1]))
            ):
                out[f.path] = hit[1]
            else:
                todo.append(f)
        if todo:
            for path, digest in self._hash(base, todo):
                out[path] = digest
            stamps = {f.path: f.stamp for f in todo}
            self._fresh.extend((_join(key, p), stamps[p], out[p]) for p in stamps)
        return out

    def _hash(self, base: Path, files: list[WorkFile]) -> Iterable[tuple[str, Digest]]:
        small = [f for f in files if f.stamp.size < SMALL]
        large = [f for f in files if f.stamp.size >= SMALL]
        groups: list[list[WorkFile]] = []
        group: list[WorkFile] = []
        group_bytes = 0
        for f in small:
            group.append(f)
            group_bytes += f.stamp.size
            if len(group) >= _BATCH_FILES or group_bytes >= _BATCH_BYTES:
                groups.append(group)
                group, group_bytes = [], 0
        if group:
            groups.append(group)
        results: list[tuple[str, Digest]] = []
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="tether-hash") as pool:
            futures = [pool.submit(self._hash_large, base, [f]) for f in large]
            futures += [pool.submit(self._hash_small, base, g) for g in groups]
            for fut in futures:
                results.extend(fut.result())
        self.hashed_files += len(files)
        return results

    def _hash_small(self, base: Path, group: list[WorkFile]) -> list[tuple[str, Digest]]:
        out = []
        done = 0
        for f in group:
            # os.open/os.read: the io stack's objects cost more than reading 4 KiB.
            fd = os.open(_path(base, f.path), os.O_RDONLY)
            try:
                parts = []
                while chunk := os.read(fd, max(f.stamp.size, 1 << 16)):
                    parts.append(chunk)
            finally:
                os.close(fd)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            digest = Digest._checked(hashlib.sha256(data).hexdigest())
            if self.batch is not None:
                self.batch.add(data, digest)
            out.append((f.path, digest))
            done += len(data)
        self._count(done)
        return out

    def _hash_large(self, base: Path, one: list[WorkFile]) -> list[tuple[str, Digest]]:
        (f,) = one
        path = _path(base, f.path)
        if self.store is not None:
            digest = self.store.put_data(path, f.stamp.size)
        else:
            digest, _ = hash_file(path)
        self._count(f.stamp.size)
        return [(f.path, digest)]

    def _count(self, n: int) -> None:
        with self._lock:
            self.hashed_bytes += n
        if self.on_bytes is not None:
            self.on_bytes(n)

    def commit(self) -> None:
        """Make stored blobs durable and visible, then remember the digests learnt."""
        if self.batch is not None:
            self.batch.commit()
        self.cache.record(self._fresh, scan_start_ns=self.scan_start_ns)
        self._fresh = []
        for action in self.after_commit:
            action()
        self.after_commit = []

    def discard(self) -> None:
        if self.batch is not None:
            self.batch.discard()


def _join(key: str, rel: str) -> str:
    return f"{key}/{rel}" if rel else key


def _path(base: Path, rel: str) -> str:
    return os.path.join(base, rel) if rel else str(base)
