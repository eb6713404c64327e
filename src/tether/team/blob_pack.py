"""Many blobs in one request: how sync moves tracked data of many small files.

One blob per request would make 50,000 files of 4 KiB 50,000 round trips; a pack
carries them back to back, in either direction::

    sha256:<64 hex> <size>\\n   one header line per blob
    <size bytes>                its content, then the next header

The receiver hashes each blob as it arrives and keeps it only if it matches its header
(``BlobIntake``), so a pack damaged on the way keeps the blobs before the damage and
refuses the rest. Big blobs travel one per request (``PUT /sync/blobs/DIGEST``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from tether.errors import ObjectCorrupted
from tether.hashing import Digest
from tether.store.objects import ContentStore

PACKED_BELOW = 1 << 20  # blobs smaller than this travel in packs
PACK_BYTES = 32 << 20  # a pack is cut after this many bytes
PACK_BLOBS = 20_000  # … or this many blobs
_HEADER_MAX = 100


def groups(sizes: Iterable[tuple[str, int]]) -> Iterator[list[str]]:
    """Digests cut into packs of at most PACK_BYTES / PACK_BLOBS each."""
    group: list[str] = []
    total = 0
    for digest, size in sizes:
        if group and (total + size > PACK_BYTES or len(group) >= PACK_BLOBS):
            yield group
            group, total = [], 0
        group.append(digest)
        total += size
    if group:
        yield group


def frames(store: ContentStore, digests: Iterable[str], *, skip_damaged: bool) -> Iterator[bytes]:
    """The pack of ``digests`` that ``store`` holds (others are left out), read lazily
    and verified: a blob that rotted is never sent as good. It is left out too when
    ``skip_damaged`` (a server answering a fetch), refused otherwise."""
    for text in digests:
        digest = Digest.parse(text)
        if not store.has(digest):
            continue
        with store.open(digest) as f:
            data = f.read(PACKED_BELOW + 1)
        if len(data) > PACKED_BELOW:
            continue  # a big blob travels alone
        if hashlib.sha256(data).hexdigest() != digest.hex:
            if skip_damaged:
                continue
            store.ensure_intact(digest)  # raises, naming the damaged blob
        yield f"{digest} {len(data)}\n".encode() + data


@dataclass
class _Open:
    digest: str
    left: int


class PackReader:
    """Reads a pack as its bytes arrive, in pieces of any size: ``on_start(digest,
    size)`` before a blob, ``on_data(bytes)`` for its content, ``on_end()`` after it."""

    def __init__(
        self,
        on_start: Callable[[str, int], None],
        on_data: Callable[[bytes], None],
        on_end: Callable[[], None],
        *,
        max_blob: int,
    ) -> None:
        self._start, self._data, self._end = on_start, on_data, on_end
        self._max = max_blob
        self._head = b""
        self._open: _Open | None = None
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._open is None:
                newline = bytes(view[: _HEADER_MAX + 1]).find(b"\n")
                if newline < 0:
                    self._head += bytes(view)
                    if len(self._head) > _HEADER_MAX:
                        raise self._bad("a header line is too long")
                    return
                line, view = self._head + bytes(view[:newline]), view[newline + 1 :]
                self._head = b""
                self._begin(line)
                continue
            take = view[: self._open.left]
            view = view[len(take) :]
            self._open.left -= len(take)
            if take:
                self._data(bytes(take))
            if self._open.left == 0:
                self._open = None
                self.count += 1
                self._end()

    def _begin(self, line: bytes) -> None:
        try:
            text, size_text = line.decode("ascii").split(" ")
            digest, size = str(Digest.parse(text)), int(size_text)
        except (UnicodeDecodeError, ValueError):
            raise self._bad("a header line does not parse") from None
        if not 0 <= size <= self._max:
            raise self._bad(f"a blob of {size} bytes is over this pack's limit")
        self._open = _Open(digest, size)
        self._start(digest, size)
        if size == 0:
            self._open = None
            self.count += 1
            self._end()

    def close(self) -> None:
        if self._open is not None or self._head:
            raise self._bad("the pack ends inside a blob")

    @staticmethod
    def _bad(what: str) -> ObjectCorrupted:
        # Damage on the way reads the same as a broken sender: the pack is sent again.
        return ObjectCorrupted(f"the blob pack is damaged: {what}", hint="send it again")
