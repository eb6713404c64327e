"""The content store: immutable blobs named by their sha256, in an OCI image layout.

On disk (``.tether/store/``), readable by any OCI tool (``skopeo``, ``oras``, ``crane``)::

    store/
      oci-layout              {"imageLayoutVersion": "1.0.0"}
      index.json              OCI image index of the ModelKits (owned by store/layout.py)
      blobs/sha256/<hex>      one file per blob, mode 0444, content hashes to <hex>
    tmp/                      sibling of store/, same filesystem: blobs being written

Writes go to a unique temp file in ``tmp/`` while being hashed, are fsynced, checked
against the expected digest if one was given, made read-only and renamed into place;
then the directory is fsynced. A name under ``blobs/`` therefore never lies, and two
processes writing the same blob both succeed (same bytes, last rename wins).

Bytes leave the store verified: ``copy_out`` hashes while it copies, and
``ensure_intact`` re-hashes a blob before it is linked or shown, so a blob that rotted
is refused with its digest instead of being handed to a user's file. ``path`` and
``open`` are for code that verifies as it reads (layer readers, pushes to a remote
that checks the digest) or only inspects a few bytes.

Many small blobs go through a ``BlobBatch`` instead: their temp files are written
without an fsync each, one ``syncfs`` makes them all durable, and only then are they
renamed into place (one directory fsync). The order is what keeps names honest: no
name appears before its bytes are on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import itertools
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from tether.errors import LockTimeout, ObjectCorrupted, ObjectNotFound, StoreError
from tether.hashing import CHUNK, Digest, hash_file, hash_stream
from tether.store import chunks
from tether.store.atomic import fsync_dir, write_atomic

LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
EMPTY_INDEX = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
)

# Above this many bytes a writer hands disk writes to a background thread so hashing
# and writing overlap (both release the GIL); below it the thread costs more than it saves.
_THREAD_THRESHOLD = 64 << 20
_assembled = itertools.count()  # names of chunked blobs assembled into tmp/ (file_of)
# Flush dirty pages every so often while writing big blobs so that the final fsync
# does not have to push gigabytes at once.
_SYNC_EVERY = 256 << 20


class ContentStore:
    """Blobs in an OCI image layout at ``root``, written through ``tmp_dir``."""

    def __init__(
        self, root: str | Path, tmp_dir: str | Path, *, chunk_min: int = chunks.THRESHOLD
    ) -> None:
        self.chunk_min = chunk_min  # data files from this size are kept in chunks (0: never)
        self.root = Path(root)
        self.tmp_dir = Path(tmp_dir)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self._blobs = str(self.blobs_dir)  # hot paths join strings, not Paths
        self.chunks = chunks.Chunks(self)

    # -- layout ---------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | Path, tmp_dir: str | Path) -> ContentStore:
        """Create the layout if missing; an existing store is left as it is."""
        store = cls(root, tmp_dir)
        store.blobs_dir.mkdir(parents=True, exist_ok=True)
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        layout = store.root / "oci-layout"
        if not layout.exists():
            write_atomic(layout, LAYOUT_VERSION, tmp_dir=store.tmp_dir)
        index = store.root / "index.json"
        if not index.exists():
            write_atomic(index, EMPTY_INDEX, tmp_dir=store.tmp_dir)
        return store

    def check_layout(self) -> None:
        if not (self.root / "oci-layout").is_file() or not self.blobs_dir.is_dir():
            raise StoreError(
                f"{self.root} is not an OCI image layout",
                hint="run 'tether init' to repair the project's store",
            )

    # -- reading --------------------------------------------------------------------

    def path(self, digest: Digest) -> Path:
        """Where a whole blob lies (a chunked blob has no one file: ``open`` reads it)."""
        return self.blobs_dir / digest.hex

    def has(self, digest: Digest) -> bool:
        """Whether the store holds the blob, whole or in chunks."""
        return self.has_blob(digest) or self.chunks.has(digest)

    def has_blob(self, digest: Digest) -> bool:
        """Whether the store holds the blob whole (as one file under ``blobs/``)."""
        return os.path.isfile(os.path.join(self._blobs, digest.hex))

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            if self.chunks.has(digest):
                return self.chunks.load(digest).size
            raise self._missing(digest) from None

    def sizes(self, digests: list[Digest]) -> dict[Digest, int]:
        """The size of each of ``digests`` the store holds (the others are absent)."""
        found: dict[Digest, int] = {}
        for d in digests:
            try:
                found[d] = os.stat(os.path.join(self._blobs, d.hex)).st_size
            except FileNotFoundError:
                if self.chunks.has(d):
                    found[d] = self.chunks.load(d).size
        return found

    def open(self, digest: Digest) -> BinaryIO:
        """Open a blob for reading, whole or chunked. The caller verifies the whole
        digest while reading when it matters (a chunked blob checks each chunk)."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            if self.chunks.has(digest):
                return self.chunks.open(digest)  # type: ignore[return-value]
            raise self._missing(digest) from None

    def read_bytes(self, digest: Digest, *, max_size: int = 16 << 20) -> bytes:
        """Read a small blob (manifest, config, tree, packed file) whole, verified
        against its digest."""
        try:
            fd = os.open(os.path.join(self._blobs, digest.hex), os.O_RDONLY)
        except FileNotFoundError:
            raise self._missing(digest) from None
        try:
            size = os.fstat(fd).st_size
            if size > max_size:
                raise StoreError(
                    f"blob {digest} is larger than {max_size} bytes",
                    hint="this is not a manifest or config blob",
                )
            # Sized from fstat: read(max_size) would allocate max_size for every call.
            chunks = []
            while chunk := os.read(fd, max(size, 1 << 16)):
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(data) > max_size:
            raise StoreError(
                f"blob {digest} is larger than {max_size} bytes",
                hint="this is not a manifest or config blob",
            )
        if hashlib.sha256(data).hexdigest() != digest.hex:
            raise self._corrupt(digest)
        return data

    def verify(self, digest: Digest) -> bool:
        """Re-hash a blob; True when its bytes still match its name (for a chunked blob:
        every chunk its own, and the whole its digest)."""
        try:
            actual, _ = hash_file(self.path(digest))
        except FileNotFoundError:
            if not self.chunks.has(digest):
                raise self._missing(digest) from None
            try:
                with self.chunks.open(digest) as reader:
                    actual, _ = hash_stream(reader)  # type: ignore[arg-type]
            except (ObjectCorrupted, ObjectNotFound):
                return False
        return actual == digest

    def ensure_intact(self, digest: Digest) -> None:
        """Re-hash a blob and raise ObjectCorrupted unless it matches its name: the check
        before a blob is linked (reflink, hardlink) or packed rather than copied."""
        if not self.verify(digest):
            raise self._corrupt(digest)

    def copy_out(self, digest: Digest, dest: str | Path, *, mode: int = 0o644) -> int:
        """Copy a blob to the new file ``dest``, verifying its bytes; returns its size.

        A blob whose bytes no longer match its name raises ObjectCorrupted and leaves no
        ``dest`` behind, so callers that copy to a temp name and rename it over the
        user's file never replace that file with rotten bytes. The kernel copies
        (``copy_file_range``) while this thread hashes the same bytes, so verifying
        costs about the hash, not a second pass."""
        try:
            src = os.open(self.path(digest), os.O_RDONLY)
        except FileNotFoundError:
            if self.chunks.has(digest):
                return self._copy_out_chunks(digest, dest, mode)
            raise self._missing(digest) from None
        try:
            size = os.fstat(src).st_size
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            copier: _KernelCopy | None = None
            try:
                if size < CHUNK:  # small: one read, hashed, then written (no thread)
                    data = os.pread(src, size + 1, 0)
                    if hashlib.sha256(data).hexdigest() != digest.hex:
                        raise self._corrupt(digest)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(out, view) :]
                else:
                    copier = _KernelCopy(src, out, size)
                    actual = _hash_fd(src, size)
                    copier.join()
                    if actual != digest.hex:
                        raise self._corrupt(digest)
            except BaseException:
                if copier is not None:  # its thread must be done with the descriptor
                    with contextlib.suppress(BaseException):
                        copier.join()
                os.close(out)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dest)
                raise
            os.close(out)
        finally:
            os.close(src)
        return size

    def _copy_out_chunks(self, digest: Digest, dest: str | Path, mode: int) -> int:
        """``copy_out`` of a chunked blob: the chunks in order, each checked, and the
        whole checked against ``digest`` before the file is kept."""
        whole = hashlib.sha256()
        size = 0
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            for chunk_digest, n in self.chunks.load(digest).chunks:
                try:
                    data = self.read_bytes(chunk_digest, max_size=chunks.MAX_SIZE)
                except ObjectCorrupted:
                    raise self._corrupt(digest, chunk_digest) from None
                if len(data) != n:
                    raise self._corrupt(digest, chunk_digest)
                whole.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view) :]
                size += len(data)
            if whole.hexdigest() != digest.hex:
                raise self._corrupt(digest)
        except BaseException:
            os.close(out)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)
            raise
        os.close(out)
        return size

    def quarantine(self, digest: Digest, folder: Path) -> bool:
        """Move a blob that fails verification out of every reader's way (into ``folder``,
        kept for inspection); True when it was moved. A good blob is never moved."""
        try:
            if self.verify(digest):
                return False
        except ObjectNotFound:
            return False
        self.set_aside(digest, folder)
        self.sync()
        return True

    def set_aside(self, digest: Digest, folder: Path) -> None:
        """Move a blob the caller found corrupt into ``folder`` (for a chunked blob, its
        list: the blob is then missing, so it is fetched again); ``sync`` makes it final."""
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path(digest), folder / digest.hex)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.chunks.list_path(digest), folder / f"chunklist-{digest.hex}")

    def __iter__(self) -> Iterator[Digest]:
        for entry in os.scandir(self.blobs_dir):
            if entry.is_file() and Digest.is_valid("sha256:" + entry.name):
                yield Digest(entry.name)

    # -- writing --------------------------------------------------------------------

    def writer(self, *, expected: Digest | None = None, size_hint: int = 0) -> BlobWriter:
        return BlobWriter(self, expected=expected, size_hint=size_hint)

    def partial(self, expected: Digest) -> BlobWriter:
        """A writer that goes on from where an interrupted one for ``expected`` stopped
        (``offset``: the bytes already there), and keeps what it wrote if it is
        interrupted too. Refused (LockTimeout) while another writer holds it."""
        return BlobWriter(self, expected=expected, size_hint=0, partial=True)

    def partial_size(self, expected: Digest) -> int:
        """How many bytes of ``expected`` an interrupted writer left (0: none)."""
        try:
            return os.stat(os.path.join(self.tmp_dir, f"partial-{expected.hex}")).st_size
        except FileNotFoundError:
            return 0

    def put_bytes(self, data: bytes) -> Digest:
        with self.writer() as w:
            w.write(data)
        assert w.digest is not None
        return w.digest

    def put_file(self, path: str | Path) -> Digest:
        size = os.stat(path).st_size
        with open(path, "rb", buffering=0) as src, self.writer(size_hint=size) as w:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := src.readinto(buf):
                w.write(view[:n])
        assert w.digest is not None
        return w.digest

    def put_chunked(self, path: str | Path) -> chunks.ChunkedAdd:
        """Store a file as content-defined chunks (see ``store/chunks.py``)."""
        return self.chunks.put_file(path)

    def add_file(self, path: str | Path) -> tuple[Digest, int]:
        """Store a data file (a run's output, an artifact) unless the store already holds
        its bytes; returns its digest and size. Hashing first makes re-adding unchanged
        files a read, not a durable write. Big files are kept in chunks."""
        digest, size = hash_file(path)
        if self.has(digest):
            return digest, size
        # The file may change between hashing and copying: what was copied is what counts.
        stored = self.put_data(path, size)
        return stored, self.size(stored)

    def put_data(self, path: str | Path, size: int) -> Digest:
        """Store a data file of ``size`` bytes: in chunks from ``chunk_min``, else whole
        (ModelKit layers and other OCI blobs go through ``put_file``, always whole)."""
        if self.chunk_min and size >= self.chunk_min:
            return self.put_chunked(path).digest
        return self.put_file(path)

    @contextlib.contextmanager
    def file_of(self, digest: Digest) -> Iterator[Path]:
        """A file holding a blob's verified bytes, for code that needs a path (tar
        writers, uploads): the blob itself when whole, else a temp copy assembled from
        its chunks, removed after."""
        if self.has_blob(digest) or not self.chunks.has(digest):
            self.ensure_intact(digest)
            yield self.path(digest)
            return
        # A file of tmp/, which gc clears of what a crash leaves.
        tmp = self.tmp_dir / f"assembled-{os.getpid()}-{next(_assembled)}-{digest.hex[:16]}"
        try:
            self.copy_out(digest, tmp, mode=0o444)
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def batch(self) -> BlobBatch:
        return BlobBatch(self)

    def delete(self, digest: Digest) -> None:
        """Remove a blob, or a chunked blob's list (garbage collection only; blobs are
        otherwise immutable)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))
        self.chunks.delete(digest)

    def sync(self) -> None:
        fsync_dir(self.blobs_dir)

    # -- errors ---------------------------------------------------------------------

    def _missing(self, digest: Digest) -> ObjectNotFound:
        return ObjectNotFound(
            f"blob {digest} is not in the store",
            hint="the store is incomplete; pull the ModelKit again or run 'tether gc' "
            "only after removing the references to it",
        )

    def _corrupt(self, digest: Digest, chunk: Digest | None = None) -> ObjectCorrupted:
        what = f"its chunk {chunk} no longer matches" if chunk else "its bytes no longer match"
        return ObjectCorrupted(
            f"blob {digest} in the local store is corrupted: {what} its digest, so they "
            "were not used",
            hint="'tether data pull' fetches a good copy of tracked data (setting the bad "
            "one aside); 'tether fsck' finds and sets aside every damaged object",
            digest=str(digest),
        )


def _hash_fd(fd: int, size: int) -> str:
    """sha256 of the first ``size`` bytes of ``fd`` (read by offset, so a concurrent
    copy of the same descriptor is not disturbed), plus anything beyond: a blob that
    grew is as wrong as one that changed."""
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


class _KernelCopy:
    """Copies ``size`` bytes from one descriptor to another in a thread, by offset,
    with copy_file_range (no bytes pass through Python; a reflink where supported),
    falling back to pread/write where the kernel refuses."""

    def __init__(self, src: int, dst: int, size: int) -> None:
        self._src, self._dst, self._size = src, dst, size
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="blob-copy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            done = 0
            try:
                while done < self._size:
                    n = os.copy_file_range(self._src, self._dst, self._size - done, done, done)
                    if n == 0:
                        break
                    done += n
            except OSError:
                pass  # another filesystem or an old kernel: copy the rest by hand
            while chunk := os.pread(self._src, CHUNK, done):
                os.pwrite(self._dst, chunk, done)
                done += len(chunk)
        except BaseException as exc:  # surfaced by join()
            self._error = exc

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


class BlobBatch:
    """Small blobs made durable together; thread-safe ``add``, then ``commit``.

    Blobs added but not committed are invisible (temp files that gc removes later).
    """

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._pending: dict[Digest, str] = {}
        self._counter = itertools.count()
        self.bytes_written = 0
        self.committed: list[Digest] = []  # what the last commit made visible

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, data: bytes | memoryview, digest: Digest | None = None) -> Digest:
        """Queue ``data`` unless the store (or this batch) has it already."""
        if digest is None:
            digest = Digest(hashlib.sha256(data).hexdigest())
        with self._lock:
            if digest in self._pending:
                return digest
        if self.store.has_blob(digest):
            return digest
        tmp = os.path.join(self.store.tmp_dir, f"batch-{os.getpid()}-{next(self._counter)}")
        # Created read-only: the descriptor can still write, and the rename needs no chmod.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        with self._lock:
            if digest in self._pending:
                os.unlink(tmp)
            else:
                self._pending[digest] = tmp
                self.bytes_written += len(data)
        return digest

    def commit(self) -> int:
        """Make every queued blob durable and visible; returns how many were new."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        syncfs(self.store.tmp_dir)
        blobs = self.store._blobs
        for digest, tmp in pending.items():
            # If another process stored the same blob meanwhile, replacing it with
            # identical bytes is harmless and saves a stat per blob.
            os.replace(tmp, os.path.join(blobs, digest.hex))
        fsync_dir(self.store.blobs_dir)
        self.committed = list(pending)
        return len(pending)

    def discard(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for tmp in pending.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def syncfs(directory: str | Path) -> None:
    """Flush every dirty page of the filesystem holding ``directory`` (one call for many
    files instead of an fsync each); falls back to ``sync()`` where syncfs is missing."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = _libc()
        if libc is not None and libc.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs  # noqa: B018 - probe: not every libc has it
        return libc
    except (OSError, AttributeError):
        return None


class BlobWriter:
    """Streams bytes into a new blob; ``digest`` is set once the ``with`` block commits.

    Leaving the block with an exception discards the temp file: no half-written blob
    ever appears under ``blobs/``.
    """

    def __init__(
        self,
        store: ContentStore,
        *,
        expected: Digest | None,
        size_hint: int,
        partial: bool = False,
    ) -> None:
        self.store = store
        self.expected = expected
        self.digest: Digest | None = None
        self.size = 0
        self._hash = hashlib.sha256()
        # A partial blob (``partial``, with ``expected``) goes on from the bytes an
        # earlier writer left in tmp/partial-<hex>, and leaves its own there when it is
        # interrupted: an upload cut off at 90% resumes at 90%.
        self._keep = partial
        if partial:
            assert expected is not None
            self._tmp = os.path.join(store.tmp_dir, f"partial-{expected.hex}")
            self._fd = os.open(self._tmp, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._fd)
                raise LockTimeout(
                    f"blob {expected.short} is being uploaded by another request",
                    hint="try again in a moment",
                ) from None
            while chunk := os.read(self._fd, CHUNK):
                self._hash.update(chunk)
                self.size += len(chunk)
        else:
            self._fd, self._tmp = tempfile.mkstemp(prefix="blob-", dir=store.tmp_dir)
        self.offset = self.size  # bytes there before this writer
        self._since_sync = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if size_hint >= _THREAD_THRESHOLD:
            self._queue = queue.Queue(maxsize=8)
            self._thread = threading.Thread(target=self._drain, name="blob-writer", daemon=True)
            self._thread.start()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)
        if self._queue is not None:
            if self._error is not None:
                raise self._error
            self._queue.put(bytes(data))  # a copy: the caller reuses its buffer
        else:
            self._write_all(data)

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._since_sync += len(data)
        if self._since_sync >= _SYNC_EVERY:
            os.fdatasync(self._fd)
            self._since_sync = 0

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._write_all(item)
                except BaseException as exc:  # surfaced on the next write() or commit
                    self._error = exc

    def _stop_thread(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._commit()
        else:
            self._abort()

    def _commit(self) -> None:
        try:
            self._stop_thread()
            if self._error is not None:
                raise self._error
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            digest = Digest(self._hash.hexdigest())
            if self.expected is not None and digest != self.expected:
                self._keep = False  # bad bytes: the next attempt starts over
                raise ObjectCorrupted(
                    f"content hashes to {digest}, expected {self.expected}",
                    hint="the source changed while it was read, or it is corrupted",
                )
            os.chmod(self._tmp, 0o444)
            final = self.store.blobs_dir / digest.hex
            if final.exists():
                os.unlink(self._tmp)  # same bytes are already durable under that name
            else:
                os.replace(self._tmp, final)
                fsync_dir(self.store.blobs_dir)
            self.digest = digest
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        self._stop_thread()
        if self._fd >= 0:
            if self._keep:
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if not self._keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)

    def discard(self) -> None:
        """Give up: nothing of this blob stays, not even a partial one."""
        self._keep = False
        self._abort()
