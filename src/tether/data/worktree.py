"""The working copy of tracked data: walking it, and knowing each file's digest with as
little reading as possible (stat cache first, then hashing on every core).

Small files are read whole in batches per worker thread, so thread hand-offs do not
dominate (one task per 4 KiB file costs more than hashing it); large files are streamed
one per thread. When storing, small files go through one ``BlobBatch`` (a single
``syncfs``), large ones through their own fsynced writer.
"""

from __future__ import annotations

import hashlib
import operator
import os
import stat as statmod
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from tether.errors import DataError
from tether.hashing import Digest, hash_file
from tether.store.objects import BlobBatch, ContentStore
from tether.store.statcache import RACY_NS, Stamp, StatCache

SMALL = 1 << 20  # files below this are read whole and batched
_BATCH_FILES = 512
_BATCH_BYTES = 16 << 20
_WINDOW = 8192  # files looked up and hashed together
_FLUSH_FILES = 32768  # new digests, or
_FLUSH_BYTES = 256 << 20  # new small-blob bytes, made durable and cached at once


class WorkFile(NamedTuple):
    path: str  # relative to the tracked directory ('' when the tracked path is a file)
    stamp: Stamp
    executable: bool


def quick_fingerprint(base: Path, scan_start_ns: int) -> str | None:
    """A digest of every file's path and stamp below ``base``: equal
    fingerprints mean an unchanged folder (the "nothing changed" path of add and
    status). None for anything the full walk must judge: a file too fresh to trust
    (see store/statcache.py), a link or a special file. One lean pass that makes no
    ``WorkFile`` and hashes a folder's lines at once."""
    h = hashlib.sha256()
    try:
        fresh = _fingerprint_dir(str(base), "", h, scan_start_ns - RACY_NS)
    except DataError:
        return None
    return None if fresh else h.hexdigest()


def _fingerprint_dir(directory: str, prefix: str, h: Any, cutoff: int) -> bool:
    """Feed ``h`` the lines of the files below ``directory``; True (and stop) at a file
    modified from ``cutoff`` on. The folder's own order (readdir's), not a sorted one:
    it is the same for as long as the folder does not change, which is all a
    fingerprint needs, and sorting half a million names costs more than hashing them."""
    lines: list[str] = []
    append = lines.append
    subdirs: list[tuple[str, str]] = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                mtime = st.st_mtime_ns
                if mtime >= cutoff:
                    return True
                x = 1 if st.st_mode & 0o100 else 0
                append(f"{prefix}{entry.name}\0{st.st_ino}\0{mtime}\0{st.st_size}\0{x}\n")
            elif entry.is_dir(follow_symlinks=False):
                subdirs.append((entry.path, f"{prefix}{entry.name}/"))
            else:
                raise DataError(f"{entry.path} is not a regular file")
    h.update("".join(lines).encode("utf-8", "surrogateescape"))
    return any(_fingerprint_dir(path, sub, h, cutoff) for path, sub in subdirs)


_name = operator.attrgetter("name")


def walk(base: Path) -> Iterator[WorkFile]:
    """Every regular file below ``base`` in tree order (each folder's names sorted, a
    subfolder's files where its name sorts), one folder's listing in memory at a time.
    Symlinks and special files are refused: following them could read or later write
    outside the tracked folder."""
    for path, st in _entries(str(base), ""):
        yield WorkFile(path, Stamp(st.st_ino, st.st_mtime_ns, st.st_size), bool(st.st_mode & 0o100))


def _entries(directory: str, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        it = os.scandir(directory)
    except NotADirectoryError:
        raise DataError(f"{directory} is not a directory") from None
    with it:
        listing = sorted(it, key=_name)
    for entry in listing:
        # d_type answers file-or-folder without a syscall; only files are stat'ed.
        if entry.is_dir(follow_symlinks=False):
            yield from _entries(entry.path, prefix + entry.name + "/")
        elif entry.is_file(follow_symlinks=False):
            yield prefix + entry.name, entry.stat(follow_symlinks=False)
        else:
            mode = entry.stat(follow_symlinks=False).st_mode
            kind = "a symlink" if statmod.S_ISLNK(mode) else "not a regular file"
            raise DataError(
                f"{entry.path} is {kind}",
                hint="tracked folders hold regular files only; replace it with "
                "the file itself, or move it out of the folder",
            )


def scan_dir(base: Path) -> list[WorkFile]:
    """``walk(base)`` as a list (for the few callers that need every file at once)."""
    return list(walk(base))


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
        self._committed_bytes = 0
        self._pool: ThreadPoolExecutor | None = None

    def digests(
        self, base: Path, key: str, files: list[WorkFile], *, check_store: bool = False
    ) -> dict[str, Digest]:
        """Digest of each file (by its ``path``); see ``stream``."""
        return {f.path: d for f, d in self.stream(base, key, files, check_store=check_store)}

    def stream(
        self, base: Path, key: str, files: Iterable[WorkFile], *, check_store: bool = False
    ) -> Iterator[tuple[WorkFile, Digest]]:
        """(file, digest) for each of ``files``, in their order, a window of files at a
        time so that a million files never sit in memory at once. ``key`` is the
        project-relative path of ``base`` (the stat cache's key prefix). With
        ``check_store``, a cached digest counts only when the store holds that blob
        (re-adding repairs a pruned store)."""
        window: list[WorkFile] = []
        for f in files:
            window.append(f)
            if len(window) >= _WINDOW:
                yield from self._window(base, key, window, check_store)
                window = []
        if window:
            yield from self._window(base, key, window, check_store)

    def _window(
        self, base: Path, key: str, files: list[WorkFile], check_store: bool
    ) -> list[tuple[WorkFile, Digest]]:
        known = self.cache.lookup_many([_join(key, f.path) for f in files])
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
            self._fresh.extend((_join(key, f.path), f.stamp, out[f.path]) for f in todo)
            self._flush(final=False)
        return [(f, out[f.path]) for f in files]

    def _flush(self, *, final: bool) -> None:
        """Make what was stored durable and remember the digests learnt: at the end, and
        along the way once enough has piled up (memory stays bounded; an interrupted add
        of a million files keeps what it stored, and its stat cache entries)."""
        pending = self.batch.bytes_written - self._committed_bytes if self.batch else 0
        if not final and len(self._fresh) < _FLUSH_FILES and pending < _FLUSH_BYTES:
            return
        if self.batch is not None:
            self.batch.commit()
            self._committed_bytes = self.batch.bytes_written
        self.cache.record(self._fresh, scan_start_ns=self.scan_start_ns)
        self._fresh = []

    def _hash(self, base: Path, files: list[WorkFile]) -> list[tuple[str, Digest]]:
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
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="tether-hash")
        futures = [self._pool.submit(self._hash_large, base, [f]) for f in large]
        futures += [self._pool.submit(self._hash_small, base, g) for g in groups]
        results: list[tuple[str, Digest]] = []
        try:
            for fut in futures:
                results.extend(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
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
        self._close()
        self._flush(final=True)
        for action in self.after_commit:
            action()
        self.after_commit = []

    def discard(self) -> None:
        self._close()
        if self.batch is not None:
            self.batch.discard()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _join(key: str, rel: str) -> str:
    return f"{key}/{rel}" if rel else key


def _path(base: Path, rel: str) -> str:
    return os.path.join(base, rel) if rel else str(base)
