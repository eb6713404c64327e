"""Trees: a tracked directory as content-addressed objects, nested like git's.

A tree object is canonical JSON (sorted keys, no spaces) stored as a blob::

    {"entries":[{"digest":"sha256:…","files":1,"name":"a.csv","size":120,"type":"file"},
                {"digest":"sha256:…","files":5000,"name":"train","size":…,"type":"dir"}],
     "format":1}

One object per directory, so changing one file rewrites only the objects on its path to
the root. A directory with very many entries is split into parts at content-defined
boundaries (a boundary falls after a name whose hash has its low bits zero), so adding
one file to a flat directory of a million rewrites one part of about ``PART_TARGET``
entries and the short list of parts, not the whole listing::

    {"format":1,"parts":[{"digest":"sha256:…","files":…,"size":…}, …]}

Names are checked when a tree is read: no '/', NUL, '.', '..' or duplicates, so a tree
from a remote cannot make checkout write outside its directory.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from tether.errors import DataError
from tether.hashing import Digest

FORMAT = 1
PART_TARGET = 4096  # average entries per part (a power of two: the boundary test is a mask)
PART_MAX = 16384
MAX_TREE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    type: Literal["file", "dir"]
    digest: Digest
    size: int  # bytes; for a directory, of every file below it
    files: int  # 1 for a file; for a directory, how many files are below it
    executable: bool = False

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "digest": str(self.digest),
            "files": self.files,
            "name": self.name,
            "size": self.size,
            "type": self.type,
        }
        if self.executable:
            out["exec"] = True
        return out


@dataclass(frozen=True)
class FileRecord:
    """One file of a directory being turned into trees."""

    path: str  # relative to the tracked directory, '/'-separated
    digest: Digest
    size: int
    executable: bool = False


def encode(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def build(files: list[FileRecord], put: Callable[[bytes], Digest]) -> tuple[Digest, int, int]:
    """Turn a flat listing into nested tree objects; ``put`` stores (or just hashes)
    each object. Returns the root digest, total size and file count."""
    builder = TreeBuilder(put)
    for record in sorted(files, key=lambda r: r.path.split("/")):
        builder.add(record)
    entry = builder.finish()
    return entry.digest, entry.size, entry.files


class TreeBuilder:
    """Tree objects from files given one by one in tree order (each folder's names
    sorted, a subfolder's files where its name sorts: ``worktree.walk``'s order). Only
    the folders on the current path are held: a folder's object is written as soon as
    the walk leaves it, so a million files never sit in memory at once."""

    def __init__(self, put: Callable[[bytes], Digest]) -> None:
        self.put = put
        self._names: list[str] = []  # the open folders below the root
        self._open: list[list[Entry]] = [[]]  # their entries so far, the root's first

    def add(self, record: FileRecord) -> None:
        *dirs, name = record.path.split("/")
        depth = 0
        while depth < min(len(dirs), len(self._names)) and dirs[depth] == self._names[depth]:
            depth += 1
        while len(self._names) > depth:
            self._close()
        for d in dirs[depth:]:
            self._append(Entry(d, "dir", _NO_DIGEST, 0, 0))  # a placeholder: order check
            self._open[-1].pop()
            self._names.append(d)
            self._open.append([])
        self._append(Entry(name, "file", record.digest, record.size, 1, record.executable))

    def finish(self) -> Entry:
        """Write what is still open; the root's entry (named '')."""
        while self._names:
            self._close()
        return _node(self._open[0], "", self.put)

    def _append(self, entry: Entry) -> None:
        entries = self._open[-1]
        if entries and entries[-1].name >= entry.name:
            where = "/".join([*self._names, entry.name])
            raise DataError(
                f"{where}: a path is both a file and a directory, or files came out of order",
                hint="tracked folders hold each name once",
            )
        entries.append(entry)

    def _close(self) -> None:
        name = self._names.pop()
        entries = self._open.pop()
        self._append(_node(entries, name, self.put))


_NO_DIGEST = Digest("0" * 64)


def _node(entries: list[Entry], name: str, put: Callable[[bytes], Digest]) -> Entry:
    """Store one folder's object (split into parts when very long); its entry."""
    size = sum(e.size for e in entries)
    files = sum(e.files for e in entries)
    parts = _split(entries)
    if len(parts) == 1:
        digest = put(encode({"entries": [e.to_json() for e in entries], "format": FORMAT}))
    else:
        refs = []
        for part in parts:
            part_digest = put(encode({"entries": [e.to_json() for e in part], "format": FORMAT}))
            refs.append(
                {
                    "digest": str(part_digest),
                    "files": sum(e.files for e in part),
                    "size": sum(e.size for e in part),
                }
            )
        digest = put(encode({"format": FORMAT, "parts": refs}))
    return Entry(name, "dir", digest, size, files)


def _split(entries: list[Entry]) -> list[list[Entry]]:
    if len(entries) <= PART_TARGET:
        return [entries]
    parts: list[list[Entry]] = [[]]
    for e in entries:
        parts[-1].append(e)
        h = int.from_bytes(hashlib.sha256(e.name.encode()).digest()[:4], "big")
        if (h & (PART_TARGET - 1)) == 0 or len(parts[-1]) >= PART_MAX:
            parts.append([])
    return [p for p in parts if p]


# -- reading ----------------------------------------------------------------------------


def hash_only(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def parse(data: bytes, digest: Digest) -> tuple[list[Entry], list[Digest]]:
    """Entries of a tree object, or the digests of its parts."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("unknown format")
        if "parts" in doc:
            return [], [Digest.parse(p["digest"]) for p in doc["parts"]]
        entries = [_entry(raw) for raw in doc["entries"]]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"tree object {digest.short} does not parse: {exc}",
            hint="run 'tether fsck'; the object may be corrupt",
        ) from None
    names = [e.name for e in entries]
    if names != sorted(set(names)):
        raise DataError(
            f"tree object {digest.short} has unsorted or duplicate names",
            hint="run 'tether fsck'; the object may be corrupt",
        )
    return entries, []


def _entry(raw: dict[str, object]) -> Entry:
    name = raw["name"]
    kind = raw["type"]
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\0" in name
        or "\\" in name
    ):
        raise DataError(
            f"tree entry name {str(name)[:80]!r} is not a plain file name",
            hint="the tree was not written by tether, or was tampered with",
        )
    if kind not in ("file", "dir"):
        raise ValueError(f"entry type {kind!r}")
    size, files = raw["size"], raw["files"]
    if not isinstance(size, int) or not isinstance(files, int) or size < 0 or files < 0:
        raise ValueError("bad size or file count")
    return Entry(name, kind, Digest.parse(str(raw["digest"])), size, files, raw.get("exec") is True)


class TreeReader:
    """Reads tree objects through ``load`` (the store, or a remote) with a small cache."""

    CACHED = 32  # trees kept parsed: a walk of a million files holds a few, not all

    def __init__(self, load: Callable[[Digest], bytes]) -> None:
        self.load = load
        self._cache: OrderedDict[Digest, tuple[list[Entry], list[Digest]]] = OrderedDict()

    def parts(self, digest: Digest) -> list[Digest]:
        """The part objects a split tree consists of (empty for a whole one)."""
        return self._read(digest)[1]

    def entries(self, digest: Digest) -> list[Entry]:
        return self._read(digest)[0]

    def _read(self, digest: Digest) -> tuple[list[Entry], list[Digest]]:
        cached = self._cache.get(digest)
        if cached is not None:
            self._cache.move_to_end(digest)
            return cached
        entries, parts = parse(self.load(digest), digest)
        for part in parts:
            part_entries, nested = parse(self.load(part), part)
            if nested:
                raise DataError(f"tree part {part.short} is itself split", hint="run 'tether fsck'")
            entries.extend(part_entries)
        self._cache[digest] = (entries, parts)
        if len(self._cache) > self.CACHED:
            self._cache.popitem(last=False)
        return entries, parts

    def objects(self, digest: Digest) -> Iterator[Digest]:
        """Every tree object (parts included) below and including ``digest``."""
        yield digest
        entries, parts = self._read(digest)
        yield from parts
        for e in entries:
            if e.type == "dir":
                yield from self.objects(e.digest)

    def walk(self, digest: Digest, prefix: str = "") -> Iterator[tuple[str, Entry]]:
        """Every file below ``digest`` as (relative path, entry), in path order."""
        for e in self.entries(digest):
            path = f"{prefix}{e.name}"
            if e.type == "dir":
                yield from self.walk(e.digest, path + "/")
            else:
                yield path, e


@dataclass(frozen=True)
class Change:
    path: str
    kind: Literal["added", "deleted", "modified"]
    old: Entry | None
    new: Entry | None


def diff(
    reader: TreeReader, old: Digest | None, new: Digest | None, prefix: str = ""
) -> list[Change]:
    """Files that differ between two trees; identical subtrees are skipped unread."""
    if old == new:
        return []
    old_entries = {e.name: e for e in reader.entries(old)} if old else {}
    new_entries = {e.name: e for e in reader.entries(new)} if new else {}
    changes: list[Change] = []
    for name in sorted(old_entries.keys() | new_entries.keys()):
        a, b = old_entries.get(name), new_entries.get(name)
        path = prefix + name
        if a is not None and b is not None and a.digest == b.digest and a.type == b.type:
            if a.executable != b.executable:
                changes.append(Change(path, "modified", a, b))
            continue
        a_dir = a.digest if a is not None and a.type == "dir" else None
        b_dir = b.digest if b is not None and b.type == "dir" else None
        if a_dir or b_dir:
            changes.extend(diff(reader, a_dir, b_dir, path + "/"))
        if a is not None and a.type == "file":
            kind: Literal["deleted", "modified"] = (
                "modified" if b is not None and b.type == "file" else "deleted"
            )
            changes.append(Change(path, kind, a, b if kind == "modified" else None))
        if b is not None and b.type == "file" and not (a is not None and a.type == "file"):
            changes.append(Change(path, "added", None, b))
    return changes
