"""Naming tracked paths: turning what a user typed into a project-relative path, and
the rules that keep pointers unambiguous (no tracking inside a tracked folder, nothing
inside ``.tether/`` or ``.git/``, nothing git already tracks)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tether.data import pointer
from tether.errors import DataError


def relative(root: Path, path: str | Path, *, base: Path | None = None) -> str:
    """``path`` (relative to ``base``, default the current directory) as a '/'-separated
    path relative to the project root ``root``. A ``.tether`` suffix names its target."""
    p = Path(path)
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    # Resolve the folders but not the last component: a symlink named here is refused
    # later as a symlink, not silently followed.
    absolute = Path(os.path.realpath(p.parent)) / p.name if p.name else Path(os.path.realpath(p))
    try:
        rel = absolute.relative_to(root).as_posix()
    except ValueError:
        raise DataError(
            f"{path} is outside the project {root}",
            hint="tracked data must live inside the project; move or copy it in first",
        ) from None
    if rel in ("", "."):
        raise DataError(
            "cannot track the project root itself", hint="name a file or folder inside it"
        )
    if rel.endswith(pointer.SUFFIX):
        rel = rel[: -len(pointer.SUFFIX)]
    first = rel.split("/", 1)[0]
    if first in (".tether", ".git"):
        raise DataError(f"{rel} is inside {first}/", hint="tether tracks your data, not its own")
    return rel


def tracking_ancestor(root: Path, rel: str) -> str | None:
    """The tracked folder that contains ``rel``, if any."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        ancestor = "/".join(parts[:i])
        if (root / (ancestor + pointer.SUFFIX)).is_file():
            return ancestor
    return None


def check_addable(root: Path, rel: str) -> None:
    ancestor = tracking_ancestor(root, rel)
    if ancestor is not None:
        raise DataError(
            f"{rel} is inside the tracked folder {ancestor}",
            hint=f"re-add the folder instead: tether add {ancestor}",
        )
    target = root / rel
    if target.is_dir() and not target.is_symlink():
        inner = next(pointer.discover(root, target), None)
        if inner is not None:
            raise DataError(
                f"{rel} contains the tracked path {inner[: -len(pointer.SUFFIX)]}",
                hint="track the folder as one unit (delete the inner .tether pointer "
                "first), or keep adding the inner paths separately",
            )
    tracked = _git_tracked(root, rel)
    if tracked:
        raise DataError(
            f"{rel} is tracked by git ({tracked})",
            hint=f"stop tracking it in git first: git rm -r --cached {rel}",
        )


def _git_tracked(root: Path, rel: str) -> str | None:
    if not any((d / ".git").exists() for d in (root, *root.parents)):
        return None
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", rel],
            cwd=root,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [n for n in out.stdout.decode(errors="replace").split("\0") if n]
    if out.returncode != 0 or not names:
        return None
    return names[0] if len(names) == 1 else f"{len(names)} files"


def ensure_gitignored(root: Path, rel: str, tmp_dir: Path) -> bool:
    """List ``/name`` in the ``.gitignore`` next to the tracked path; True if added."""
    from tether.store.atomic import write_atomic

    parent, _, name = rel.rpartition("/")
    ignore = root / parent / ".gitignore" if parent else root / ".gitignore"
    entry = "/" + _escape(name)
    text = ignore.read_text(encoding="utf-8") if ignore.exists() else ""
    if entry in (line.strip() for line in text.splitlines()):
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    write_atomic(ignore, (text + entry + "\n").encode(), tmp_dir=tmp_dir)
    return True


def _escape(name: str) -> str:
    # gitignore treats these as patterns; a leading '#' or '!' must be escaped too.
    out = "".join("\\" + c if c in "*?[]\\" else c for c in name)
    return "\\" + out if out[:1] in ("#", "!") else out


def select_pointers(
    root: Path, targets: list[str | Path] | None, *, base: Path | None = None
) -> list[pointer.Pointer]:
    """The pointers named by ``targets`` (a tracked path, its pointer, or a folder
    holding pointers); all pointers of the project when ``targets`` is empty."""
    if not targets:
        return [pointer.read(root, p) for p in pointer.discover(root)]
    found: dict[str, pointer.Pointer] = {}
    for t in targets:
        p = Path(t)
        absolute = p if p.is_absolute() else (base or Path.cwd()) / p
        if Path(os.path.realpath(absolute)) == root:
            rels = list(pointer.discover(root))
        else:
            rel = relative(root, t, base=base)
            if (root / (rel + pointer.SUFFIX)).is_file():
                rels = [rel + pointer.SUFFIX]
            elif (root / rel).is_dir():
                rels = list(pointer.discover(root, root / rel))
            else:
                rels = []
            if not rels:
                raise DataError(f"{rel} is not tracked", hint=f"track it with: tether add {rel}")
        for r in rels:
            found.setdefault(r, pointer.read(root, r))
    return [found[k] for k in sorted(found)]
