"""Deterministic tar layers: which files a Kitfile entry packs, and their byte stream.

Entry names are relative to the context directory (as KitOps writes them), the layer
path's parent directories come first, then a depth-first walk in byte-wise name order,
each directory before its children. Headers are fixed: mtime 0, uid 1000, gid 0, no
user or group names, mode normalized to 0755 (directories and executables) or 0644.
Modes are normalized — unlike KitOps, which copies them — because umask and checkout
differences would otherwise change digests between machines. The stream ends with two
zero blocks and no record padding. The same files therefore give the same bytes in any
directory on any machine.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import KitfileError, ModelKitError
from tether.hashing import CHUNK
from tether.manifest.kitfile import is_within
from tether.manifest.kitignore import IgnoreRules
from tether.store.objects import BlobWriter

BLOCK = 512
_UID, _GID = 1000, 0
_GATHER = 1 << 20
_SMALL = 256 << 10  # files up to this size are read with one os.read


@dataclass(frozen=True)
class FileEntry:
    rel: str  # slash-separated, relative to the context
    source: Path | None  # None for directories
    size: int
    mode: int

    @property
    def is_dir(self) -> bool:
        return self.source is None


def collect(
    context: Path,
    layer_path: str,
    inner_paths: list[str],
    rules: IgnoreRules,
    warn: Callable[[str], None],
    *,
    key: str,
) -> list[FileEntry]:
    """The entries of one layer. ``inner_paths`` are other layers' paths nested inside
    this one: their files belong to those layers only."""
    target = context / layer_path if layer_path != "." else context
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        raise KitfileError(
            f"{key}: path {layer_path!r} does not exist in {context}",
            hint="fix the path in the Kitfile, or create the file",
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise KitfileError(
            f"{key}: path {layer_path!r} is a symbolic link",
            hint="point the Kitfile at the real file or directory; "
            "ModelKits hold regular files only",
        )
    if layer_path != "." and rules.ignored(layer_path):
        warn(f"{key} path {layer_path} is ignored by .kitignore")
        return []
    entries: list[FileEntry] = []
    if layer_path != ".":
        parts = layer_path.split("/")
        for i in range(1, len(parts)):
            entries.append(FileEntry("/".join(parts[:i]), None, 0, 0o755))
    if stat.S_ISREG(st.st_mode):
        entries.append(FileEntry(layer_path, target, st.st_size, _file_mode(st.st_mode)))
    elif stat.S_ISDIR(st.st_mode):
        if layer_path != ".":
            entries.append(FileEntry(layer_path, None, 0, 0o755))
        _walk(target, "" if layer_path == "." else layer_path, inner_paths, rules, warn, entries)
    else:
        raise KitfileError(
            f"{key}: path {layer_path!r} is not a regular file or directory",
            hint="ModelKits hold regular files and directories only",
        )
    if not any(not e.is_dir for e in entries):
        warn(f"no files found for {key} (path {layer_path})")
    return entries


def _walk(
    directory: Path,
    rel: str,
    inner: list[str],
    rules: IgnoreRules,
    warn: Callable[[str], None],
    out: list[FileEntry],
) -> None:
    with os.scandir(directory) as it:
        children = sorted(it, key=lambda e: os.fsencode(e.name))
    for child in children:
        child_rel = f"{rel}/{child.name}" if rel else child.name
        if any(is_within(child_rel, p) for p in inner):
            continue
        if child.is_symlink():
            if not rules.ignored(child_rel):
                warn(f"skipping symlink {child_rel} (symlinks are not supported)")
            continue
        st = child.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if rules.prune(child_rel):
                continue
            if not rules.ignored(child_rel):
                out.append(FileEntry(child_rel, None, 0, 0o755))
            _walk(Path(child.path), child_rel, inner, rules, warn, out)
        elif stat.S_ISREG(st.st_mode):
            if not rules.ignored(child_rel):
                out.append(
                    FileEntry(child_rel, Path(child.path), st.st_size, _file_mode(st.st_mode))
                )
        elif not rules.ignored(child_rel):
            warn(f"skipping {child_rel}: not a regular file (device, socket or FIFO)")


def _file_mode(mode: int) -> int:
    return 0o755 if mode & 0o111 else 0o644


def header(entry: FileEntry) -> bytes:
    """The entry's tar header: a single USTAR block for short ASCII names (built here,
    about 10x faster than tarfile), PAX extended headers otherwise (built by tarfile).
    Both produce what ``TarInfo.tobuf(PAX_FORMAT)`` would; a test checks it."""
    name = entry.rel + "/" if entry.is_dir else entry.rel
    if len(name) <= 100 and name.isascii():
        return _ustar(name, entry)
    info = tarfile.TarInfo(entry.rel)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.size = entry.size
    info.mode = entry.mode
    info.mtime = 0
    info.uid, info.gid = _UID, _GID
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def _ustar(name: str, entry: FileEntry) -> bytes:
    typeflag = b"5" if entry.is_dir else b"0"
    block = bytearray(BLOCK)
    block[0 : len(name)] = name.encode("ascii")
    block[100:108] = b"%07o\0" % entry.mode
    block[108:116] = b"%07o\0" % _UID
    block[116:124] = b"%07o\0" % _GID
    block[124:136] = b"%011o\0" % entry.size if entry.size < 8**11 else _big_size(entry.size)
    block[136:148] = b"%011o\0" % 0  # mtime
    block[148:156] = b" " * 8  # checksum placeholder
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    # devmajor/devminor stay NUL for regular files and directories, as tarfile leaves them.
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def _big_size(size: int) -> bytes:
    # GNU base-256 encoding for sizes of 8 GiB and more, as tarfile writes them.
    return bytes([0x80]) + size.to_bytes(11, "big")


class LayerSink:
    """Receives the uncompressed tar stream; compresses it into the blob writer and
    computes the diffId (sha256 of the uncompressed stream)."""

    def __init__(self, writer: BlobWriter, compression: str) -> None:
        self.writer = writer
        self.compression = compression
        self.size = 0
        # Small writes (headers, small files) are gathered so that hashing, compression
        # and the writer thread see a few large buffers, not one call per file.
        self._pending = bytearray()
        self._diff = hashlib.sha256() if compression != "none" else None
        self._stream: Any = None
        if compression == "gzip":
            # mtime=0 and no file name: the gzip header carries nothing machine-specific.
            self._stream = gzip.GzipFile(
                filename="", mode="wb", fileobj=_Forward(writer), mtime=0, compresslevel=6
            )
        elif compression == "zstd":
            import zstandard

            sink: Any = _Forward(writer)
            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(sink, closefd=False)

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if len(data) >= _GATHER:
            self._flush()
            self._emit(data)
        else:
            self._pending += data
            if len(self._pending) >= _GATHER:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = bytearray()

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        if self._diff is None:
            self.writer.write(data)
        else:
            self._diff.update(data)
            self._stream.write(data)

    def finish(self) -> str | None:
        """Flush the compressor; returns the diffId hex (None when uncompressed)."""
        self._flush()
        if self._stream is not None:
            self._stream.close()
        return self._diff.hexdigest() if self._diff is not None else None


class _Forward:
    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer

    def write(self, data: bytes) -> int:
        self.writer.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def write_tar(
    entries: list[FileEntry], sink: LayerSink, on_bytes: Callable[[int], None] | None = None
) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    for entry in entries:
        sink.write(header(entry))
        if entry.is_dir:
            continue
        assert entry.source is not None
        if entry.size <= _SMALL:
            _write_small(entry, sink)
            if on_bytes is not None:
                on_bytes(entry.size)
            continue
        remaining = entry.size
        with open(entry.source, "rb", buffering=0) as f:
            while remaining:
                n = f.readinto(view[: min(CHUNK, remaining)])
                if not n:
                    raise _changed(entry, "shrank")
                sink.write(view[:n])
                remaining -= n
                if on_bytes is not None:
                    on_bytes(n)
            if f.read(1):
                raise _changed(entry, "grew")
        pad = -entry.size % BLOCK
        if pad:
            sink.write(bytes(pad))
    sink.write(bytes(2 * BLOCK))


def _write_small(entry: FileEntry, sink: LayerSink) -> None:
    assert entry.source is not None
    fd = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        data = os.read(fd, entry.size + 1)
        while len(data) < entry.size + 1 and (more := os.read(fd, entry.size + 1 - len(data))):
            data += more
    finally:
        os.close(fd)
    if len(data) != entry.size:
        raise _changed(entry, "grew" if len(data) > entry.size else "shrank")
    sink.write(data)
    pad = -entry.size % BLOCK
    if pad:
        sink.write(bytes(pad))


def _changed(entry: FileEntry, how: str) -> ModelKitError:
    return ModelKitError(
        f"{entry.rel} {how} while it was being packed",
        hint="wait until the file is fully written, then pack",
    )
