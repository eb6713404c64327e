"""Big data blobs kept as content-defined chunks, so that a version that changed a little
stores (and later sends) only the chunks that changed.

A chunked blob keeps its identity: it is named by the sha256 of the whole file, as any
blob, and reading it back reassembles the chunks and checks that digest. Only its bytes
are kept differently, beside the OCI layout's blobs::

    store/
      blobs/sha256/<hex>          every chunk, a blob named by its own sha256
      chunklists/sha256/<hex>     the chunk list of the blob whose WHOLE bytes hash to
                                  <hex>: {"format":1,"size":N,"chunks":[["<hex>",n],…]}

The chunks are made durable before their list is written (atomically), so a list never
names a chunk that is not there; a crash leaves at most chunks no list names yet, which
the next add of the same file reuses and ``gc`` otherwise removes.

Chunks are cut with FastCDC (``pyfastcdc``: a Cython port of fastcdc-rs, MIT, releases
the GIL, ~2 GB/s on one core here): a cut depends only on the bytes around it, so an
insert, a deletion or an edit moves the cuts near it and no others. The target size is
1 MiB (min 256 KiB, max 4 MiB). Smaller chunks dedupe scattered edits slightly better,
but every chunk is a file in the store and an object on a remote: at 1 MiB a 20 GB file
is about 16,000 of them, and an edit still costs only the one to three chunks it
touches. Files under ``THRESHOLD`` stay whole blobs, as do ModelKit layers (OCI
registries and KitOps read those).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tether.errors import ObjectCorrupted, ObjectNotFound, StoreError
from tether.hashing import Digest
from tether.store.atomic import write_atomic

if TYPE_CHECKING:
    from tether.store.objects import ContentStore

FORMAT = 1
THRESHOLD = 8 << 20  # files from this size are chunked
AVERAGE = 1 << 20
MIN_SIZE = AVERAGE // 4
MAX_SIZE = AVERAGE * 4
_COMMIT_EVERY = 256 << 20  # new chunk bytes held as temp files before one syncfs
_BLOCK = 16 << 20  # read and cut at once (measured: 16 MiB beat 8, 32 and 64 here)


@dataclass(frozen=True)
class ChunkList:
    """The chunks of one blob, in order: (digest, size) each."""

    digest: Digest
    size: int
    chunks: tuple[tuple[Digest, int], ...]

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    def to_json(self) -> dict[str, object]:
        """The list as stored (named by the file's digest, which is not inside)."""
        return {"format": FORMAT, "size": self.size, "chunks": [[d.hex, n] for d, n in self.chunks]}

    @classmethod
    def parse(cls, digest: Digest, data: bytes) -> ChunkList:
        """Read a list, refusing one that does not add up (a damaged file)."""
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise StoreError(
                f"chunk list of {digest} is damaged ({e})",
                hint="'tether fsck' names the files it affects; 'tether data pull' fetches them",
            ) from None
        return cls.from_json(digest, doc)

    @classmethod
    def from_json(cls, digest: Digest, doc: object) -> ChunkList:
        """A list from its JSON (a file, a remote, a teammate), checked the same way."""
        try:
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            if doc["format"] != FORMAT:
                raise ValueError(f"format {doc['format']!r}")
            chunks = tuple((Digest(h), int(n)) for h, n in doc["chunks"])
            size = int(doc["size"])
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(
                f"chunk list of {digest} is damaged ({e})",
                hint="'tether fsck' names the files it affects; 'tether data pull' fetches them",
            ) from None
        if sum(n for _, n in chunks) != size or any(not 0 < n <= MAX_SIZE for _, n in chunks):
            raise StoreError(
                f"chunk list of {digest} is damaged: its chunks do not add up to its size",
                hint="'tether fsck' names the files it affects; 'tether data pull' fetches them",
            )
        return cls(digest, size, chunks)


@dataclass(frozen=True)
class ChunkedAdd:
    """What storing one file in chunks did."""

    digest: Digest
    size: int
    chunks: int
    new_chunks: int  # chunks the store did not hold before
    new_bytes: int


class Chunks:
    """The chunk lists of one content store (see the module docstring for the layout)."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self.lists_dir = store.root / "chunklists" / "sha256"
        self._lists = str(self.lists_dir)

    def list_path(self, digest: Digest) -> Path:
        return self.lists_dir / digest.hex

    def has(self, digest: Digest) -> bool:
        return os.path.isfile(os.path.join(self._lists, digest.hex))

    def load(self, digest: Digest) -> ChunkList:
        try:
            data = self.list_path(digest).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(
                f"blob {digest} is not in the store",
                hint="the store is incomplete; 'tether data pull' fetches tracked data",
            ) from None
        return ChunkList.parse(digest, data)

    def __iter__(self) -> Iterator[Digest]:
        """The digests of the blobs kept in chunks."""
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.lists_dir):
                if entry.is_file() and Digest.is_valid("sha256:" + entry.name):
                    yield Digest(entry.name)

    def delete(self, digest: Digest) -> None:
        """Remove a chunk list (garbage collection only); its chunks are swept apart."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.list_path(digest))

    # -- writing --------------------------------------------------------------------

    def put_file(self, path: str | Path) -> ChunkedAdd:
        """Store a file as chunks: each chunk once, then the list. The digest is that of
        the bytes read, whatever the file became meanwhile.

        The work is spread so that chunking costs about what storing the file whole
        does: this thread reads and cuts blocks of ``_BLOCK`` bytes; one worker hashes
        the whole file; two hash and write the chunks; a fourth makes them durable every
        ``_COMMIT_EVERY`` bytes. A block's last cut is forced by the block's end, so that
        chunk is carried into the next block and cut again: FastCDC's cuts depend only
        on the bytes from a chunk's start, so this cuts exactly where one pass over the
        whole file would."""
        from pyfastcdc import FastCDC

        cdc = FastCDC(AVERAGE, min_size=MIN_SIZE, max_size=MAX_SIZE)
        whole = hashlib.sha256()
        batch = self.store.batch()
        queued: set[Digest] = set()
        lock = threading.Lock()

        def store_chunk(data: memoryview) -> tuple[Digest, int, bool]:
            digest = Digest(hashlib.sha256(data).hexdigest())
            with lock:
                if digest in queued:
                    return digest, len(data), False  # a repeat of a chunk of this file
                queued.add(digest)
            if self.store.has_blob(digest):
                return digest, len(data), False
            batch.add(data, digest)
            return digest, len(data), True

        chunks: list[tuple[Digest, int]] = []
        new_chunks = new_bytes = 0
        hashing: deque[Future[None]] = deque()
        cutting: deque[Future[tuple[Digest, int, bool]]] = deque()
        committing: list[Future[int]] = []

        def collect(keep: int) -> None:
            nonlocal new_chunks, new_bytes
            while len(cutting) > keep:
                digest, n, new = cutting.popleft().result()
                chunks.append((digest, n))
                new_chunks += new
                new_bytes += n if new else 0

        try:
            with (
                open(path, "rb", buffering=0) as f,
                ThreadPoolExecutor(1, thread_name_prefix="tether-whole") as hasher,
                ThreadPoolExecutor(2, thread_name_prefix="tether-chunks") as workers,
                ThreadPoolExecutor(1, thread_name_prefix="tether-commit") as committer,
            ):
                carry = b""
                since_commit = 0
                while True:
                    # A fresh buffer per block: chunks still being written point into it.
                    buf = bytearray(len(carry) + _BLOCK)
                    buf[: len(carry)] = carry
                    view = memoryview(buf)
                    n = f.readinto(view[len(carry) :])
                    if n:
                        fresh = view[len(carry) : len(carry) + n]
                        hashing.append(hasher.submit(whole.update, fresh))
                    end = len(carry) + n
                    if end == 0:
                        break
                    cut = list(cdc.cut_buf(view[:end]))
                    if n:  # not the end of the file: its last cut is the block's end
                        carry = bytes(view[cut[-1].offset : end])
                        cut = cut[:-1]
                    for chunk in cut:
                        cutting.append(workers.submit(store_chunk, chunk.data))
                        since_commit += chunk.length
                    # Bounded: a few blocks in memory, whatever the file's size.
                    while len(hashing) > 2:
                        hashing.popleft().result()
                    collect(keep=64)
                    if since_commit >= _COMMIT_EVERY:
                        collect(keep=0)
                        committing.append(committer.submit(batch.commit))
                        since_commit = 0
                    if not n:
                        break
                collect(keep=0)
                for h in hashing:
                    h.result()
                for c in committing:
                    c.result()
            batch.commit()  # every chunk durable before the list names it
        except BaseException:
            for pending in cutting:
                pending.cancel()
            batch.discard()
            raise
        size = sum(n for _, n in chunks)
        listed = ChunkList(Digest(whole.hexdigest()), size, tuple(chunks))
        # Held whole already (added before chunking, or pulled whole): that copy serves;
        # the chunks just written are named by no list, and gc takes them.
        if not self.has(listed.digest) and not self.store.has_blob(listed.digest):
            self.lists_dir.mkdir(parents=True, exist_ok=True)
            text = listed.to_bytes()
            write_atomic(self.list_path(listed.digest), text, tmp_dir=self.store.tmp_dir)
        return ChunkedAdd(listed.digest, size, len(chunks), new_chunks, new_bytes)

    def adopt(self, listed: ChunkList) -> list[Digest]:
        """Keep a list that came from elsewhere (a remote) once the chunks it names are
        here and add up to its digest. Returns the chunks that are missing or damaged
        (nothing is kept then: fetch them and call again); raises ObjectCorrupted when
        the chunks are good but the whole is not the file the list is named after."""
        whole = hashlib.sha256()
        absent: list[Digest] = []
        for digest, n in listed.chunks:
            try:
                data = self.store.read_bytes(digest, max_size=MAX_SIZE)
            except (ObjectNotFound, ObjectCorrupted):
                absent.append(digest)
                continue
            if len(data) != n:
                raise self.store._corrupt(listed.digest, digest)
            if not absent:
                whole.update(data)
        if absent:
            return absent
        if whole.hexdigest() != listed.digest.hex:
            raise self.store._corrupt(listed.digest)
        if not self.has(listed.digest):
            self.lists_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(
                self.list_path(listed.digest), listed.to_bytes(), tmp_dir=self.store.tmp_dir
            )
        return []

    # -- reading --------------------------------------------------------------------

    def open(self, digest: Digest) -> ChunkedReader:
        return ChunkedReader(self.store, self.load(digest))


class ChunkedReader:
    """A chunked blob read as one stream (``read``, ``readinto``, ``seek``, ``tell``).
    Each chunk is checked against its own digest as it is read: a damaged one raises
    ``ObjectCorrupted`` for the blob, naming the chunk, instead of being passed on."""

    def __init__(self, store: ContentStore, listed: ChunkList) -> None:
        self.store = store
        self.listed = listed
        self.name = str(listed.digest)
        self._starts: list[int] = []
        at = 0
        for _, n in listed.chunks:
            self._starts.append(at)
            at += n
        self._pos = 0
        self._index = -1  # the chunk held in _data
        self._data = b""
        self.closed = False

    def __enter__(self) -> ChunkedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True
        self._data = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.listed.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.listed.size - self._pos
        parts = []
        while n > 0 and self._pos < self.listed.size:
            data, start = self._chunk_at(self._pos)
            piece = data[self._pos - start : self._pos - start + n]
            parts.append(piece)
            self._pos += len(piece)
            n -= len(piece)
        return b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def _chunk_at(self, pos: int) -> tuple[bytes, int]:
        index = bisect.bisect_right(self._starts, pos) - 1
        if index != self._index:
            digest, size = self.listed.chunks[index]
            try:
                self._data = self.store.read_bytes(digest, max_size=MAX_SIZE)
            except ObjectCorrupted:
                raise self.store._corrupt(self.listed.digest, digest) from None
            if len(self._data) != size:
                raise self.store._corrupt(self.listed.digest, digest)
            self._index = index
        return self._data, self._starts[index]
