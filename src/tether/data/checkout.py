"""``tether checkout``: make tracked paths match their pointers, from the store.

Each file is placed by the first method of ``checkout.link`` that works here: a reflink
(copy-on-write clone: instant, independent), a copy, or (opt-in) a hardlink (instant,
shares the store's read-only inode, so it must never be edited in place). Every blob is
verified on the way out: a copy hashes while it copies; a blob about to be linked is
re-hashed first (once per checkout). Files go to a temp name beside their target and are
renamed over it, so a crash or a corrupt blob leaves the old file as it was. A working
file whose content is not in the store is never overwritten without ``force``: that
would lose the only copy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat as statmod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.data import content, paths
from tether.data.pointer import Pointer
from tether.data.worktree import Hasher, WorkFile, scan_dir
from tether.errors import DataError, ObjectCorrupted
from tether.hashing import Digest
from tether.reporting import SILENT, Reporter
from tether.store.objects import syncfs
from tether.store.statcache import Stamp
from tether.workspace import Workspace

_FICLONE = 0x40049409  # linux/fs.h


@dataclass(frozen=True)
class CheckoutResult:
    pointer: Pointer
    written: int = 0
    unchanged: int = 0
    removed_conflicts: int = 0
    extra: list[str] = field(default_factory=list)  # working files the pointer lacks (kept)


@dataclass(frozen=True)
class CheckoutReport:
    results: list[CheckoutResult]
    methods: dict[str, int]  # how many files each link method placed

    def to_json(self) -> dict[str, Any]:
        return {
            "paths": [
                {
                    "path": r.pointer.path,
                    "written": r.written,
                    "unchanged": r.unchanged,
                    "extra": r.extra,
                }
                for r in self.results
            ],
            "methods": self.methods,
        }


def checkout(
    ws: Workspace,
    targets: list[str | Path] | None = None,
    *,
    base: Path | None = None,
    force: bool = False,
    report: Reporter = SILENT,
) -> CheckoutReport:
    pointers = paths.select_pointers(ws.root, targets, base=base)
    with ws.lock("data", on_wait=report.waiting):
        for ptr in pointers:
            missing = content.missing_locally(ws.store, ws.stat_cache, ptr)
            if missing:
                raise DataError(
                    f"{ptr.path}: {len(missing)} object(s) are not in the local store",
                    hint=f"fetch them first: tether data pull {ptr.path}",
                )
        placer = _Placer(ws, report.advance)
        results = [_one(ws, placer, ptr, force) for ptr in pointers]
        placer.finish()
    return CheckoutReport(results, dict(placer.methods))


def _one(ws: Workspace, placer: _Placer, ptr: Pointer, force: bool) -> CheckoutResult:
    target = ws.root / ptr.path
    hasher = Hasher(ws.stat_cache)
    if ptr.type == "file":
        wanted = {"": (ptr.digest, False)}
        existing = _existing_file(target, force)
        base = target
    else:
        if (target.exists() and not target.is_dir()) or target.is_symlink():
            _refuse_or_remove(target, ptr.path, force)
        target.mkdir(parents=True, exist_ok=True)
        reader = content.store_reader(ws.store)
        wanted = {p: (e.digest, e.executable) for p, e in reader.walk(ptr.digest)}
        existing = {f.path: f for f in scan_dir(target)}
        base = target
    current = hasher.digests(base, ptr.path, list(existing.values()))
    hasher.commit()
    conflicts = [
        p
        for p, (digest, _) in wanted.items()
        if p in existing and current[p] != digest and not ws.store.has(current[p])
    ]
    if conflicts and not force:
        shown = ", ".join((f"{ptr.path}/{c}" if c else ptr.path) for c in conflicts[:3])
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise DataError(
            f"checkout would overwrite changes not in the store: {shown}{more}",
            hint=f"keep them with 'tether add {ptr.path}', or discard them with --force",
        )
    written = unchanged = 0
    dirs_made: set[str] = set()
    for rel, (digest, executable) in wanted.items():
        wf = existing.get(rel)
        if wf is not None and current[rel] == digest and wf.executable == executable:
            unchanged += 1
            continue
        dest = target / rel if rel else target
        parent = rel.rpartition("/")[0]
        if parent and parent not in dirs_made:
            _make_dirs(target, parent, force, ws.root)
            dirs_made.add(parent)
        placer.place(digest, dest, executable, key=f"{ptr.path}/{rel}" if rel else ptr.path)
        written += 1
    extra = sorted(p for p in existing if p not in wanted)
    return CheckoutResult(ptr, written, unchanged, len(conflicts), extra)


def _existing_file(target: Path, force: bool) -> dict[str, WorkFile]:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return {}
    if statmod.S_ISREG(st.st_mode):
        return {"": WorkFile("", Stamp.of(st), bool(st.st_mode & 0o100))}
    if not force:
        raise DataError(
            f"{target} exists and is not a regular file",
            hint="move it away, or pass --force to replace it",
        )
    _remove(target)
    return {}


def _make_dirs(target: Path, parent: str, force: bool, root: Path) -> None:
    path = target
    for part in parent.split("/"):
        path = path / part
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            _refuse_or_remove(path, str(path.relative_to(root)), force)
        path.mkdir(exist_ok=True)


def _refuse_or_remove(path: Path, rel: str, force: bool) -> None:
    if not force:
        raise DataError(
            f"{rel} is in the way (a file or link where a folder belongs)",
            hint="move it away, or pass --force to replace it",
        )
    _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


class _Placer:
    """Puts store blobs at working paths by the configured methods, falling back when
    the filesystem refuses one (remembered, so a refusal is paid once)."""

    def __init__(self, ws: Workspace, on_bytes: Callable[[int], None]) -> None:
        self.ws = ws
        self.order = list(ws.settings.link_order)
        self.on_bytes = on_bytes
        self.methods: dict[str, int] = {}
        self.placed: list[tuple[str, Path, Digest]] = []
        self._verified: set[Digest] = set()
        self._count = 0

    def place(self, digest: Digest, dest: Path, executable: bool, *, key: str) -> None:
        try:
            self._place(digest, dest, executable, key)
        except ObjectCorrupted as exc:
            raise ObjectCorrupted(
                f"{key}: {exc.message}; {key} was left as it was",
                hint=f"fetch a good copy with 'tether data pull {key}' (the bad one is set "
                "aside); without a remote, 'tether fsck' sets it aside so that adding the "
                "original file again restores it",
                digest=exc.digest,
            ) from None

    def _place(self, digest: Digest, dest: Path, executable: bool, key: str) -> None:
        src = self.ws.store.path(digest)
        whole = self.ws.store.has_blob(digest)  # else kept in chunks: only a copy will do
        self._count += 1
        if whole and dest.exists() and os.path.samefile(src, dest):
            # Renaming a link over another link of the same inode does nothing (POSIX),
            # which would strand the temp file: drop the old link first.
            dest.unlink()
        tmp = dest.parent / f".{dest.name[:200]}.tether-{os.getpid()}-{self._count}"
        for method in list(self.order) if whole else ["copy"]:
            if method == "hardlink" and executable:
                continue  # the store's blobs are 0444: a link cannot carry the exec bit
            try:
                if method == "copy":
                    self.ws.store.copy_out(digest, tmp, mode=0o755 if executable else 0o644)
                    os.chmod(tmp, 0o755 if executable else 0o644)  # whatever the umask
                elif method == "reflink":
                    _reflink(src, tmp)
                else:
                    os.link(src, tmp)
                if method != "copy" and digest not in self._verified:
                    # Linked, not yet in place: verify once before the rename.
                    self.ws.store.ensure_intact(digest)
                    self._verified.add(digest)
            except ObjectCorrupted:
                _unlink_quiet(tmp)
                raise
            except OSError as exc:
                _unlink_quiet(tmp)
                if method != "copy" and exc.errno in (
                    errno.EOPNOTSUPP,
                    errno.EXDEV,
                    errno.EINVAL,
                    errno.ENOTTY,
                    errno.EPERM,
                    errno.ENOSYS,
                ):
                    self.order.remove(method)  # this filesystem cannot: stop trying
                    continue
                if method == "hardlink" and exc.errno == errno.EMLINK:
                    continue  # this blob has too many links; others may still link
                raise
            if method == "reflink":
                os.chmod(tmp, 0o755 if executable else 0o644)
            try:
                os.replace(tmp, dest)
            except OSError:
                _unlink_quiet(tmp)
                raise
            self.methods[method] = self.methods.get(method, 0) + 1
            self.placed.append((key, dest, digest))
            self.on_bytes(os.path.getsize(dest))
            return
        raise DataError(
            f"could not place {dest}: no method of checkout.link worked",
            hint="include 'copy' in checkout.link",
        )

    def finish(self) -> None:
        if not self.placed:
            return
        import time

        syncfs(self.ws.root)
        # The files just written are known: record them so the next status reads nothing.
        # Their mtimes are recent, so the racy-entry rule keeps copies out until later.
        entries = []
        for key, dest, digest in self.placed:
            entries.append((key, Stamp.of(os.lstat(dest)), digest))
        self.ws.stat_cache.record(entries, scan_start_ns=time.time_ns())


def _reflink(src: Path, dst: Path) -> None:
    with open(src, "rb") as s:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.ioctl(fd, _FICLONE, s.fileno())
        finally:
            os.close(fd)


def _unlink_quiet(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
