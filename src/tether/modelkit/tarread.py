"""Reading layers safely: every entry checked, every byte verified.

A layer is streamed once. The blob's sha256 and size are checked while reading (an
overlong blob is cut off at size+1); entry names must be relative, normalized paths
that stay inside the target; only regular files and directories are accepted (links,
devices, FIFOs and sparse entries are refused, never created); duplicates and
file/directory clashes are refused; against decompression bombs the total bytes and
entry count are capped, a compressed layer may not expand past ``unpack.max_ratio``, and
nothing may need more than the target's free space — each judged from the tar headers
before the bytes are written. A truncated or damaged stream is an error naming the
layer (corruption when the bytes fail their digest), never a traceback from below.
Callers write only into a private staging directory, so a layer found corrupt at
its end has changed nothing the user can see.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from tether.config import Settings
from tether.errors import ObjectCorrupted, TetherError, UnsafeArchive
from tether.hashing import CHUNK, Digest
from tether.oci.manifest import Descriptor
from tether.oci.mediatypes import LayerType

# Below this many expanded bytes the ratio is not judged: a small, very compressible file
# (a config of zeros) is no bomb, whatever its ratio.
RATIO_FLOOR = 16 << 20
# What unpacking leaves free on the target's filesystem, so a kit never fills a disk.
FREE_MARGIN = 256 << 20

# What a damaged or truncated stream raises from below: tarfile, gzip (BadGzipFile is an
# OSError, EOFError means cut short), zlib and zstandard.
_STREAM_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, EOFError, zlib.error, OSError)


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_files: int
    max_ratio: int = 0  # expanded bytes per compressed byte; 0: no ratio rule
    space: int | None = None  # bytes the target's filesystem can take; None: not writing

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.unpack_max_bytes, settings.unpack_max_files, settings.unpack_max_ratio)

    @classmethod
    def for_target(cls, settings: Settings, target: Path) -> Limits:
        """The limits for writing into ``target``: also bounded by its free space."""
        free = shutil.disk_usage(target).free
        return replace(cls.from_settings(settings), space=max(0, free - FREE_MARGIN))

    def check(self, desc: Descriptor, compressed: bool, files: int, total: int) -> None:
        """Refuse a layer that has grown past a limit; called before its bytes are written."""
        if files > self.max_files or total > self.max_bytes:
            raise UnsafeArchive(
                f"layer {desc.digest.short} expands beyond the unpack limits "
                f"({self.max_files} files, {self.max_bytes} bytes)",
                hint="raise unpack.max_bytes / unpack.max_files if you trust it",
            )
        if (
            compressed
            and self.max_ratio
            and total > RATIO_FLOOR
            and total > self.max_ratio * max(desc.size, 1)
        ):
            raise UnsafeArchive(
                f"layer {desc.digest.short} expands more than {self.max_ratio}:1 "
                f"({desc.size} bytes to over {total}): a decompression bomb",
                hint="nothing was unpacked; raise unpack.max_ratio only if you trust the "
                "ModelKit's source",
            )
        if self.space is not None and total > self.space:
            raise UnsafeArchive(
                f"layer {desc.digest.short} needs more than {total} bytes, more than the "
                f"target's filesystem has free (keeping {FREE_MARGIN >> 20} MiB spare)",
                hint="nothing was unpacked; free some space or unpack to another disk",
            )


@dataclass
class Member:
    rel: str
    is_dir: bool
    size: int
    mode: int
    stream: Any  # a readable binary stream; None for directories


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
    errors = _STREAM_ERRORS
    if ltype.compression == "gzip":
        import gzip

        stream = gzip.GzipFile(fileobj=reader, mode="rb")  # type: ignore[call-overload]
    elif ltype.compression == "zstd":
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(reader)  # type: ignore[arg-type]
        errors = (*errors, zstandard.ZstdError)
    compressed = ltype.compression != "none"
    if ltype.format == "raw":
        if raw_path is None:
            raise UnsafeArchive(
                "raw layer without a file path",
                hint="the layer lacks an org.cncf.model.filepath annotation",
            )
        bounded: Any = _Bounded(_Guarded(stream, reader, desc, errors), limits, desc, compressed)
        yield Member(safe_name(raw_path), False, -1, 0o644, bounded)
        reader.finish()
        return
    seen: dict[str, bool] = {}
    total = 0
    try:
        tf = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 (a generator owns it)
    except errors as exc:
        reader.finish()  # a corrupt blob says so before "not a tar" does
        raise UnsafeArchive(
            f"layer {desc.digest.short} is not a tar archive ({exc})",
            hint="the ModelKit is damaged",
        ) from None
    try:
        for info in tf:
            rel = safe_name(info.name)
            if info.issparse():
                # A sparse entry's header promises more bytes than the archive holds.
                raise UnsafeArchive(
                    f"layer entry {rel!r} is a sparse file",
                    hint="tether unpacks regular files and directories only",
                )
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
            limits.check(desc, compressed, len(seen), total)
            mode = 0o755 if is_dir or info.mode & 0o111 else 0o644
            stream_ = None if is_dir else _Guarded(tf.extractfile(info), reader, desc, errors)
            yield Member(rel, is_dir, info.size, mode, stream_)
    except errors as exc:
        raise _damaged(reader, desc, exc) from None
    reader.finish()


def _damaged(reader: VerifyingReader, desc: Descriptor, exc: BaseException) -> TetherError:
    """The error for a stream that broke while read: corruption when the blob's bytes
    do not match its digest (the usual cause), else a damaged archive."""
    try:
        reader.finish()
    except ObjectCorrupted as corrupt:
        return corrupt
    except Exception:  # the stream is broken either way; say what is known
        pass
    return UnsafeArchive(
        f"layer {desc.digest.short} is a damaged archive ({str(exc) or type(exc).__name__})",
        hint="its bytes match its digest, so it was packed this way; pack or pull a good ModelKit",
    )


class _Guarded:
    """A member's stream whose low-level failures (a truncated tar, a broken gzip or zstd
    frame) surface as tether errors, not tracebacks from below."""

    def __init__(
        self,
        stream: Any,
        reader: VerifyingReader,
        desc: Descriptor,
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self.stream = stream
        self.reader = reader
        self.desc = desc
        self.errors = errors

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self.stream.read(n)
        except self.errors as exc:
            raise _damaged(self.reader, self.desc, exc) from None
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class _Bounded:
    """Applies the limits to a raw (possibly compressed) layer as it expands."""

    def __init__(self, stream: Any, limits: Limits, desc: Descriptor, compressed: bool) -> None:
        self.stream = stream
        self.limits = limits
        self.desc = desc
        self.compressed = compressed
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.stream.read(n if n > 0 else CHUNK)
        self.total += len(data)
        self.limits.check(self.desc, self.compressed, 1, self.total)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
