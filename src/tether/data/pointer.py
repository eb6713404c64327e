"""Pointer files: ``PATH.tether`` next to a tracked path, committed to git.

    # tether: data/images is tracked; its content is in the store. Commit this file.
    format: 1
    path: images
    type: dir
    digest: sha256:…        a blob for a file, the root tree object for a directory
    size: 204800000         bytes
    files: 50000

``path`` is the tracked name relative to the pointer's folder; it must equal the pointer's
own name without ``.tether``, so a pointer cannot be aimed elsewhere by editing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tether.errors import DataError
from tether.hashing import Digest
from tether.store.atomic import write_atomic

SUFFIX = ".tether"
FORMAT = 1
MAX_POINTER_BYTES = 64 << 10
MAX_SIZE = (1 << 63) - 1  # what the database's integers hold
MAX_FILES = 1 << 32

# Folders never searched for pointers: version control, tether's own, environments.
_PRUNE = {".git", ".tether", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv"}


@dataclass(frozen=True)
class Pointer:
    path: str  # tracked path relative to the project root, '/'-separated
    type: Literal["file", "dir"]
    digest: Digest
    size: int
    files: int

    @property
    def pointer_path(self) -> str:
        return self.path + SUFFIX

    def to_yaml(self) -> str:
        name = self.path.rsplit("/", 1)[-1]
        return (
            f"# tether: {self.path} is tracked; its content is in the store. Commit this file.\n"
            f"format: {FORMAT}\n"
            f"path: {_quote(name)}\n"
            f"type: {self.type}\n"
            f"digest: {self.digest}\n"
            f"size: {self.size}\n"
            f"files: {self.files}\n"
        )


def _quote(name: str) -> str:
    import json

    return json.dumps(name, ensure_ascii=False)  # JSON strings are valid YAML scalars


def parse(text: str | bytes, pointer_rel: str) -> Pointer:
    """Parse a pointer's text; ``pointer_rel`` is its project-relative path."""
    where = pointer_rel
    if len(text) > MAX_POINTER_BYTES:
        raise DataError(f"{where}: too large for a pointer file", hint="restore it from git")
    fast = _fast(text)
    return _validate(fast if fast is not None else _yaml(text, where), where)


def _fast(text: str | bytes) -> dict[str, object] | None:
    """The form tether writes, read without a YAML parser (importing one costs more than
    the rest of 'tether status' on a few files). Anything else goes to the YAML path."""
    import json

    try:
        lines = (text if isinstance(text, str) else text.decode("utf-8")).splitlines()
    except UnicodeDecodeError:
        return None
    doc: dict[str, object] = {}
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition(": ")
        value = value.strip()
        if not sep or key in doc or key not in _KEYS or not value or "#" in value:
            return None
        if key == "path":
            if not value.startswith('"'):
                return None
            try:
                doc[key] = json.loads(value)
            except ValueError:
                return None
        elif key in ("format", "size", "files"):
            if not value.isdigit() or (value.startswith("0") and value != "0"):
                return None
            doc[key] = int(value)
        else:
            doc[key] = value
    return doc if doc.keys() == _KEYS else None


_KEYS = {"format", "path", "type", "digest", "size", "files"}


def _yaml(text: str | bytes, where: str) -> object:
    from tether.manifest.yamlsafe import YamlProblem, load

    try:
        return load(text, typed=lambda _path: True).value
    except YamlProblem as exc:
        raise DataError(
            f"{where}: not a valid pointer file ({exc.message})",
            hint="restore it with 'git checkout -- " + where + "'",
        ) from None


def _validate(doc: object, where: str) -> Pointer:
    if not isinstance(doc, dict):
        raise DataError(f"{where}: not a pointer file", hint="restore it from git")
    if doc.get("format") != FORMAT:
        raise DataError(
            f"{where}: pointer format {doc.get('format')!r} is not supported",
            hint="upgrade tether, or restore the file from git",
        )
    expected_name = where[: -len(SUFFIX)].rsplit("/", 1)[-1]
    if doc.get("path") != expected_name:
        raise DataError(
            f"{where}: 'path' is {doc.get('path')!r}, expected {expected_name!r}",
            hint="a pointer tracks the path it is named after; restore it from git",
        )
    kind = doc.get("type")
    if kind not in ("file", "dir"):
        raise DataError(
            f"{where}: 'type' is {kind!r}, expected 'file' or 'dir'",
            hint="restore the pointer from git, or re-run 'tether add'",
        )
    size = _count(doc, "size", where, MAX_SIZE)
    files = _count(doc, "files", where, MAX_FILES)
    if kind == "file" and files != 1:
        raise DataError(
            f"{where}: a file pointer has 'files' {files}, expected 1",
            hint="restore the pointer from git, or re-run 'tether add'",
        )
    try:
        digest = Digest.parse(str(doc.get("digest")))
    except Exception:
        raise DataError(
            f"{where}: 'digest' is not a sha256 digest", hint="restore the pointer from git"
        ) from None
    return Pointer(where[: -len(SUFFIX)], kind, digest, size, files)


def _count(doc: dict[str, object], key: str, where: str, maximum: int) -> int:
    value = doc.get(key)
    # bool is an int to Python; 'size: true' is no size.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise DataError(
            f"{where}: '{key}' is {value!r}, expected a whole number from 0 to {maximum}",
            hint="restore the pointer from git, or re-run 'tether add'",
        )
    return value


def read(root: Path, pointer_rel: str) -> Pointer:
    path = root / pointer_rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{pointer_rel} does not exist", hint="run 'tether add' first") from None
    return parse(data, pointer_rel)


def read_if_any(root: Path, pointer_rel: str) -> Pointer | None:
    """The pointer at ``pointer_rel``; None when it is absent or unreadable (what a new
    pointer then replaces)."""
    try:
        return read(root, pointer_rel)
    except DataError:
        return None


def write(root: Path, pointer: Pointer, tmp_dir: Path) -> None:
    write_atomic(root / pointer.pointer_path, pointer.to_yaml().encode(), tmp_dir=tmp_dir)


def discover(root: Path, under: Path | None = None) -> Iterator[str]:
    """Project-relative paths of every pointer file at or below ``under``, sorted.
    Tracked directories themselves are not searched (nothing inside them is tracked)."""
    start = under or root
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(start):
        here = Path(dirpath)
        pointers = {f for f in filenames if f.endswith(SUFFIX) and len(f) > len(SUFFIX)}
        for f in pointers:
            found.append((here / f).relative_to(root).as_posix())
        dirnames[:] = [
            d
            for d in dirnames
            if d not in _PRUNE
            and d + SUFFIX not in pointers
            and not (here / d / "pyvenv.cfg").exists()
        ]
    return iter(sorted(found))
