"""Pointers as git saw them: at a revision, and how tracked data changed between two.

``tether data diff`` compares pointer versions, not working files: A defaults to HEAD
and B to the pointers in the working tree (what 'git diff' would commit).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tether.data import content, pointer, tree
from tether.data.pointer import Pointer
from tether.errors import DataError, ObjectNotFound
from tether.hashing import Digest
from tether.workspace import Workspace


def _git(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, input=stdin, capture_output=True, timeout=120, check=False
        )
    except FileNotFoundError:
        raise DataError("git is not installed", hint="install git to compare revisions") from None
    if out.returncode != 0:
        msg = out.stderr.decode(errors="replace").strip().splitlines()
        raise DataError(
            f"git {args[0]} failed: {msg[-1] if msg else out.returncode}",
            hint="check that the project is a git repository and the revision exists",
        )
    return out.stdout


def pointers_at(root: Path, rev: str) -> list[Pointer]:
    """Every pointer committed at ``rev`` (paths relative to the project root)."""
    if rev.startswith("-"):
        raise DataError(f"{rev!r} is not a revision", hint="name a commit, branch or tag")
    prefix = _git(root, "rev-parse", "--show-prefix").decode().strip()
    names = _git(root, "ls-tree", "-r", "-z", "--name-only", "--full-tree", rev, "--")
    wanted = [
        n
        for n in names.decode(errors="surrogateescape").split("\0")
        if n.endswith(pointer.SUFFIX) and n.startswith(prefix)
    ]
    if not wanted:
        return []
    # One 'git cat-file --batch' for all pointers instead of a process per file.
    request = "".join(f"{rev}:{n}\n" for n in wanted).encode()
    raw = _git(root, "cat-file", "--batch", stdin=request)
    out: list[Pointer] = []
    pos = 0
    for name in wanted:
        header_end = raw.index(b"\n", pos)
        header = raw[pos:header_end].split()
        size = int(header[2])
        body = raw[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
        out.append(pointer.parse(body, name[len(prefix) :]))
    return out


@dataclass(frozen=True)
class DataChange:
    path: str  # project-relative file path
    kind: Literal["added", "deleted", "modified", "renamed"]
    size_before: int | None
    size_after: int | None
    renamed_from: str | None = None
    digest_before: Digest | None = None
    digest_after: Digest | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "change": self.kind,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "renamed_from": self.renamed_from,
            "digest_before": str(self.digest_before) if self.digest_before else None,
            "digest_after": str(self.digest_after) if self.digest_after else None,
        }


def diff_revisions(ws: Workspace, a: str = "HEAD", b: str | None = None) -> list[DataChange]:
    """Files of tracked data that differ between revision ``a`` and ``b`` (None: the
    pointers in the working tree)."""
    before = {p.path: p for p in pointers_at(ws.root, a)}
    after = (
        {p.path: p for p in pointers_at(ws.root, b)}
        if b is not None
        else {p.path: p for p in (pointer.read(ws.root, r) for r in pointer.discover(ws.root))}
    )
    reader = content.store_reader(ws.store)
    changes: list[DataChange] = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old is not None and new is not None and old.digest == new.digest:
            continue
        try:
            changes.extend(_pointer_changes(reader, path, old, new))
        except ObjectNotFound:
            raise DataError(
                f"the trees of {path} at both revisions are needed to compare them",
                hint=f"fetch them: tether data fetch {path} (for the other revision, check it "
                "out first)",
            ) from None
    return _pair_renames(changes)


def _pointer_changes(
    reader: tree.TreeReader, path: str, old: Pointer | None, new: Pointer | None
) -> list[DataChange]:
    def as_tree(p: Pointer | None) -> tree.Entry | None:
        return None if p is None else tree.Entry("x", p.type, p.digest, p.size, p.files)

    a, b = as_tree(old), as_tree(new)
    out: list[DataChange] = []
    if a is not None and a.type == "file" and b is not None and b.type == "file":
        return [DataChange(path, "modified", a.size, b.size, None, a.digest, b.digest)]
    a_dir = a.digest if a is not None and a.type == "dir" else None
    b_dir = b.digest if b is not None and b.type == "dir" else None
    for c in tree.diff(reader, a_dir, b_dir):
        out.append(
            DataChange(
                f"{path}/{c.path}",
                c.kind,
                c.old.size if c.old else None,
                c.new.size if c.new else None,
                None,
                c.old.digest if c.old else None,
                c.new.digest if c.new else None,
            )
        )
    if a is not None and a.type == "file":
        out.append(DataChange(path, "deleted", a.size, None, None, a.digest, None))
    if b is not None and b.type == "file":
        out.append(DataChange(path, "added", None, b.size, None, None, b.digest))
    return out


def _pair_renames(changes: list[DataChange]) -> list[DataChange]:
    # Only digests are compared, so only unmodified moves are renames (as in DVC).
    deleted: dict[Digest, list[DataChange]] = {}
    for c in changes:
        if c.kind == "deleted" and c.digest_before is not None:
            deleted.setdefault(c.digest_before, []).append(c)
    paired: set[str] = set()
    out: list[DataChange] = []
    for c in changes:
        if c.kind == "added" and c.digest_after is not None and deleted.get(c.digest_after):
            source = deleted[c.digest_after].pop(0)
            paired.add(source.path)
            out.append(
                DataChange(
                    c.path,
                    "renamed",
                    source.size_before,
                    c.size_after,
                    source.path,
                    source.digest_before,
                    c.digest_after,
                )
            )
        else:
            out.append(c)
    return [c for c in out if not (c.kind == "deleted" and c.path in paired)]
