"""Reading layers safely: every entry checked, every byte verified.

A layer is streamed once. The blob's sha256 and size are checked while reading (an
overlong blob is cut off at size+1); entry names must be relative, normalized paths
that stay inside the target; only regular files and directories are accepted (links,
devices and FIFOs are refused, never created); duplicates and file/directory clashes
are refused; the total bytes and entry count are capped against decompression bombs.
Callers write only into a private staging directory, so a layer found corrupt at
its end has changed nothing the user can see.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from tether.config import Settings
from tether.errors import ObjectCorrupted, UnsafeArchive
from tether.hashing import CHUNK, Digest
from tether.oci.manifest import Descriptor
from tether.oci.mediatypes import LayerType


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_files: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.unpack_max_bytes, settings.unpack_max_files)


@dataclass
class Member:
    rel: str
    is_dir: bool
    size: int
    mode: int
    stream: IO[bytes] | None  # None for directories


class VerifyingReader:
    """A read-only stream that hashes what passes through and refuses extra bytes."""

    def __init__(self, raw: BinaryIO, expected: Descriptor) -> None:
        self.raw = raw
        self.expected = expected
        self.count = 0
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        limit = self.expected.size + 1 - self.count
        if n < 0 or n > limit:
            n = limit
        data = self.raw.read(n) if n > 0 else b""
        self.count += len(data)
        if self.count > self.expected.size:
            raise ObjectCorrupted(
                f"layer {self.expected.digest.short} is larger than its descriptor says "
                f"({self.expected.size} bytes)",
                hint="the blob is corrupt; pack or pull it again",
            )
        self._hash.update(data)
        return data

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """Read to the end and check size and digest."""
        while self.read(CHUNK):
            pass
        actual = Digest(self._hash.hexdigest())
        if self.count != self.expected.size or actual != self.expected.digest:
            raise ObjectCorrupted(
                f"layer {self.expected.digest} is corrupted: got {self.count} bytes hashing to "
                f"{actual.short}",
                hint="the blob is corrupt; pack or pull the ModelKit again",
            )


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_name(name: str) -> str:
    """The entry's relative path, or UnsafeArchive for anything that could escape."""
    original = name
    if name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if name not in ("/",) else name
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchive(
            f"layer entry {original!r} has an absolute or invalid path",
            hint="this ModelKit is unsafe to unpack; do not use it",
        )
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeArchive(
            f"layer entry {original!r} leaves or confuses the target directory",
            hint="this ModelKit is unsafe to unpack; do not use it",
        )
    return name


def iter_members(
    raw: BinaryIO,
    desc: Descriptor,
    ltype: LayerType,
    limits: Limits,
    *,
    raw_path: str | None = None,
) -> Iterator[Member]:
    """Yield a layer's entries in order; verification errors surface by the end."""
    reader = VerifyingReader(raw, desc)
    stream: Any = reader
    if ltype.compression == "gzip":
        import gzip

        stream = gzip.GzipFile(fileobj=reader, mode="rb")  # type: ignore[call-overload]
    elif ltype.compression == "zstd":
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(reader)  # type: ignore[arg-type]
    if ltype.format == "raw":
        if raw_path is None:
            raise UnsafeArchive(
                "raw layer without a file path",
                hint="the layer lacks an org.cncf.model.filepath annotation",
            )
        bounded: Any = _Bounded(stream, limits.max_bytes)
        yield Member(safe_name(raw_path), False, -1, 0o644, bounded)
        reader.finish()
        return
    seen: dict[str, bool] = {}
    total = 0
    try:
        tf = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 (a generator owns it)
    except tarfile.TarError as exc:
        reader.finish()  # a corrupt blob says so before "not a tar" does
        raise UnsafeArchive(
            f"layer {desc.digest.short} is not a tar archive ({exc})",
            hint="the ModelKit is damaged",
        ) from None
    try:
        for info in tf:
            rel = safe_name(info.name)
            if info.isdir():
                is_dir = True
            elif info.isreg():
                is_dir = False
            else:
                kind = (
                    "symbolic link"
                    if info.issym()
                    else "hard link"
                    if info.islnk()
                    else "device"
                    if info.isdev()
                    else "special file"
                )
                raise UnsafeArchive(
                    f"layer entry {rel!r} is a {kind}",
                    hint="tether unpacks regular files and directories only; "
                    "this ModelKit was not made by tether or KitOps",
                )
            if rel in seen and not (is_dir and seen[rel]):
                raise UnsafeArchive(
                    f"layer entry {rel!r} appears twice", hint="the ModelKit is malformed"
                )
            parents = rel.split("/")[:-1]
            for i in range(1, len(parents) + 1):
                if seen.get("/".join(parents[:i])) is False:
                    raise UnsafeArchive(
                        f"layer entry {rel!r} is inside a file", hint="the ModelKit is malformed"
                    )
            seen[rel] = is_dir
            total += info.size
            if len(seen) > limits.max_files or total > limits.max_bytes:
                raise UnsafeArchive(
                    f"layer {desc.digest.short} expands beyond the unpack limits "
                    f"({limits.max_files} files, {limits.max_bytes} bytes)",
                    hint="raise unpack.max_bytes / unpack.max_files if you trust it",
                )
            mode = 0o755 if is_dir or info.mode & 0o111 else 0o644
            stream_ = None if is_dir else tf.extractfile(info)
            yield Member(rel, is_dir, info.size, mode, stream_)
    except tarfile.TarError as exc:
        raise UnsafeArchive(
            f"layer {desc.digest.short} is a damaged tar ({exc})",
            hint="pack or pull the ModelKit again",
        ) from None
    reader.finish()


class _Bounded:
    """Caps how much a raw (possibly compressed) layer may expand to."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.left = limit

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.stream.read(n if n > 0 else CHUNK)
        self.left -= len(data)
        if self.left < 0:
            raise UnsafeArchive(
                "raw layer expands beyond unpack.max_bytes",
                hint="raise unpack.max_bytes if you trust it",
            )
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
