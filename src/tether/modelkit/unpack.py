"""Unpacking a ModelKit into a directory, and rolling a project back to a version.

Three phases, so that a refusal or a corrupt layer changes nothing:

1. **stage** every selected layer into a private ``DIR/.tether-unpack-*`` directory
   (mode 0700, same filesystem), verifying names, types, sizes and digests
   (modelkit/tarread.py);
2. **plan** each staged file against DIR: identical files are left alone, differing
   ones are conflicts unless ``overwrite``; a path whose parent in DIR is a symlink
   or a file is refused (a link planted there could redirect the write);
3. **apply**: rename staged files into place (atomic per file) and fsync directories.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import UnpackConflict, UnsafeArchive, UsageError
from tether.modelkit.load import (
    Filter,
    Layer,
    LoadedKit,
    load,
    parse_filters,
    selected,
    wants_kitfile,
)
from tether.modelkit.tarread import Limits, iter_members
from tether.store.atomic import fsync_dir
from tether.workspace import Workspace

KITFILE_NAME = "Kitfile"


@dataclass(frozen=True)
class UnpackReport:
    digest: str
    target: Path
    written: list[str] = field(default_factory=list)  # new files
    replaced: list[str] = field(default_factory=list)  # existing files whose bytes changed
    unchanged: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # rollback: files not in the version
    removed: list[str] = field(default_factory=list)  # rollback --clean
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "target": str(self.target),
            "written": self.written,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
            "extra": self.extra,
            "removed": self.removed,
            "dry_run": self.dry_run,
        }


def unpack(
    ws: Workspace,
    ref: str,
    target: str | Path,
    *,
    filters: list[str] | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
) -> UnpackReport:
    """Unpack ``ref`` into ``target``; refuses to overwrite differing files unless asked."""
    kit = load(ws, ref)
    return unpack_kit(
        ws, kit, Path(target), parse_filters(filters or []), overwrite=overwrite, dry_run=dry_run
    )


def rollback(
    ws: Workspace, ref: str, *, dry_run: bool = False, clean: bool = False
) -> UnpackReport:
    """Restore the project's files to exactly ``ref``'s bytes, reporting what changed.

    Files under the version's layer paths that the version does not contain are listed
    as ``extra``; ``clean`` deletes them."""
    kit = load(ws, ref)
    report = unpack_kit(ws, kit, ws.root, [], overwrite=True, dry_run=dry_run)
    extra = _extra_files(ws.root, kit, set(report.written + report.replaced + report.unchanged))
    removed: list[str] = []
    if clean and not dry_run:
        for rel in extra:
            os.unlink(ws.root / rel)
            removed.append(rel)
    return UnpackReport(
        report.digest,
        report.target,
        report.written,
        report.replaced,
        report.unchanged,
        [e for e in extra if e not in removed],
        removed,
        dry_run,
    )


def unpack_kit(
    ws: Workspace,
    kit: LoadedKit,
    target: Path,
    filters: list[Filter],
    *,
    overwrite: bool,
    dry_run: bool,
) -> UnpackReport:
    layers = [layer for layer in kit.layers if selected(layer, filters)]
    if filters and not layers and not wants_kitfile(filters):
        raise UsageError(
            "the filter matches no layer of this ModelKit",
            hint="see 'tether inspect' for its layers and names",
        )
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory", hint="choose another -d DIR")
    target.mkdir(parents=True, exist_ok=True)
    limits = Limits.for_target(ws.settings, target)
    staging = Path(tempfile.mkdtemp(prefix=".tether-unpack-", dir=target))
    try:
        staged: dict[str, bool] = {}  # rel -> is_dir
        done: set[str] = set()
        for layer in layers:
            if str(layer.descriptor.digest) in done:
                continue  # the same blob twice in one manifest: unpack it once
            done.add(str(layer.descriptor.digest))
            _stage_layer(ws, layer, staging, staged, limits)
        if wants_kitfile(filters):
            (staging / KITFILE_NAME).write_text(kit.kitfile.to_yaml(), encoding="utf-8")
            staged[KITFILE_NAME] = False
        files = sorted(rel for rel, is_dir in staged.items() if not is_dir)
        dirs = sorted(rel for rel, is_dir in staged.items() if is_dir)
        report = UnpackReport(str(kit.digest), target, dry_run=dry_run)
        conflicts = _plan(target, staging, files, dirs, report)
        if conflicts and not overwrite:
            shown = ", ".join(conflicts[:5]) + (" …" if len(conflicts) > 5 else "")
            raise UnpackConflict(
                f"{len(conflicts)} file(s) in {target} differ from the ModelKit: {shown}",
                hint="nothing was changed; use --overwrite to replace them, or unpack into "
                "another directory",
            )
        if not dry_run:
            _apply(target, staging, dirs, report.written + report.replaced)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage_layer(
    ws: Workspace, layer: Layer, staging: Path, staged: dict[str, bool], limits: Limits
) -> None:
    with ws.store.open(layer.descriptor.digest) as raw:
        for member in iter_members(raw, layer.descriptor, layer.type, limits, raw_path=layer.path):
            if member.rel == KITFILE_NAME or member.rel.startswith(".tether-unpack-"):
                raise UnsafeArchive(
                    f"layer entry {member.rel!r} would clobber tether's own file",
                    hint="this ModelKit is malformed",
                )
            previous = staged.get(member.rel)
            if previous is not None and not (previous and member.is_dir):
                raise UnsafeArchive(
                    f"two layers both write {member.rel!r}", hint="the ModelKit is malformed"
                )
            path = staging / member.rel
            if member.is_dir:
                path.mkdir(parents=True, exist_ok=True)
                staged[member.rel] = True
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            for parent in Path(member.rel).parents:
                if str(parent) != ".":
                    staged.setdefault(str(parent), True)
            assert member.stream is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, member.mode)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(member.stream, out, 4 << 20)
            staged[member.rel] = False


def _plan(
    target: Path, staging: Path, files: list[str], dirs: list[str], report: UnpackReport
) -> list[str]:
    conflicts: list[str] = []
    for rel in dirs:
        _check_parents(target, rel)
        dest = target / rel
        if dest.exists() and (dest.is_symlink() or not dest.is_dir()):
            conflicts.append(rel + "/")
    for rel in files:
        _check_parents(target, rel)
        dest = target / rel
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            report.written.append(rel)
            continue
        if not stat.S_ISREG(st.st_mode):
            raise UnpackConflict(
                f"{dest} exists and is not a regular file",
                hint="move it away, then unpack again; nothing was changed",
            )
        if filecmp.cmp(staging / rel, dest, shallow=False) or (
            rel == KITFILE_NAME and _same_kitfile(staging / rel, dest)
        ):
            report.unchanged.append(rel)
        else:
            report.replaced.append(rel)
            conflicts.append(rel)
    return conflicts


def _same_kitfile(staged: Path, existing: Path) -> bool:
    """A hand-written Kitfile that says the same as the ModelKit's is not a conflict."""
    from tether.errors import KitfileError
    from tether.manifest.kitfile import Kitfile

    try:
        mine, _ = Kitfile.from_yaml(existing.read_bytes())
        theirs, _ = Kitfile.from_yaml(staged.read_bytes())
    except (KitfileError, OSError):
        return False
    return mine.to_yaml() == theirs.to_yaml()


def _check_parents(target: Path, rel: str) -> None:
    current = target
    for part in rel.split("/")[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeArchive(
                f"{current} is a symbolic link; unpacking through it could "
                "write outside the target",
                hint="remove the link, or unpack into an empty directory; nothing was changed",
            )
        if not stat.S_ISDIR(st.st_mode):
            raise UnpackConflict(
                f"{current} is a file where the ModelKit has a directory",
                hint="move it away, then unpack again; nothing was changed",
            )


def _apply(target: Path, staging: Path, dirs: list[str], files: list[str]) -> None:
    touched: set[Path] = set()
    for rel in dirs:
        (target / rel).mkdir(parents=True, exist_ok=True)
    for rel in files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, dest)
        touched.add(dest.parent)
    for directory in touched:
        with contextlib.suppress(OSError):
            fsync_dir(directory)


def _extra_files(root: Path, kit: LoadedKit, present: set[str]) -> list[str]:
    """Files in the project under the version's layer paths that the version lacks."""
    from tether.manifest.kitignore import IgnoreRules

    rules = IgnoreRules.for_context(root)
    extra: list[str] = []
    for layer in kit.layers:
        base = root / layer.path if layer.path != "." else root
        if base.is_file() or not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not rules.prune(f"{rel_dir}/{d}" if rel_dir else d)
                and not d.startswith(".tether-unpack-")
            )
            for name in sorted(filenames):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if rel not in present and not rules.ignored(rel) and rel not in extra:
                    extra.append(rel)
    return extra
