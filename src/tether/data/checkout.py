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
import itertools
import os
import shutil
import stat as statmod
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.data import content, paths
from tether.data.pointer import Pointer
from tether.data.tree import Entry
from tether.data.worktree import Hasher, WorkFile, walk
from tether.errors import DataError, ObjectCorrupted
from tether.hashing import Digest
from tether.reporting import SILENT, Reporter
from tether.store.objects import syncfs
from tether.store.statcache import RACY_NS, Stamp
from tether.workspace import Workspace

_FICLONE = 0x40049409  # linux/fs.h


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: the mode bits new files lose


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
        return _one_file(ws, placer, hasher, ptr, force)
    if (target.exists() and not target.is_dir()) or target.is_symlink():
        _refuse_or_remove(target, ptr.path, force)
    fresh = not target.is_dir() or _empty(target)
    target.mkdir(parents=True, exist_ok=True)
    reader = content.store_reader(ws.store)

    def pairs() -> Iterator[tuple[str, Entry | None, WorkFile | None, Digest | None]]:
        # The stored tree and the working folder, both walked in tree order and merged:
        # a million files are never all in memory.
        existing = hasher.stream(target, ptr.path, walk(target))
        return _merge(reader.walk(ptr.digest), existing)

    # First every conflict, so that a refused checkout changes nothing (an empty or new
    # folder has none: its files are placed in one pass).
    conflicts: list[str] = []
    n_conflicts = 0
    for rel, want, _wf, current in () if fresh else pairs():
        if (
            want is not None
            and current is not None
            and current != want.digest
            and not ws.store.has(current)
        ):
            n_conflicts += 1
            if len(conflicts) < 3:
                conflicts.append(rel)
    hasher.commit()  # the second walk finds what the first one hashed
    if n_conflicts and not force:
        shown = ", ".join(f"{ptr.path}/{c}" for c in conflicts)
        more = f" and {n_conflicts - 3} more" if n_conflicts > 3 else ""
        raise DataError(
            f"checkout would overwrite changes not in the store: {shown}{more}",
            hint=f"keep them with 'tether add {ptr.path}', or discard them with --force",
        )
    written = unchanged = 0
    extra: list[str] = []
    dirs_made: set[str] = set()
    todo: list[tuple[Digest, str, bool, str]] = []
    base = os.fspath(target)
    for rel, want, wf, current in pairs():
        if want is None:
            extra.append(rel)
            continue
        if wf is not None and current == want.digest and wf.executable == want.executable:
            unchanged += 1
            continue
        parent = rel.rpartition("/")[0]
        if parent and parent not in dirs_made:
            _make_dirs(target, parent, force, ws.root)
            dirs_made.add(parent)
        todo.append((want.digest, os.path.join(base, rel), want.executable, f"{ptr.path}/{rel}"))
        if len(todo) >= _PLACE_AT_ONCE:
            placer.place_many(todo)
            written += len(todo)
            todo = []
    placer.place_many(todo)
    written += len(todo)
    hasher.commit()
    return CheckoutResult(ptr, written, unchanged, n_conflicts, sorted(extra))


_PLACE_AT_ONCE = 1024  # files placed together


def _empty(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return not any(True for _ in it)


def _merge(
    wanted: Iterator[tuple[str, Entry]], existing: Iterator[tuple[WorkFile, Digest]]
) -> Iterator[tuple[str, Entry | None, WorkFile | None, Digest | None]]:
    """Join two streams of files in tree order by path: (path, stored entry or None,
    working file or None, its digest or None). Tree order is the order of the paths'
    component lists, so comparing those merges them."""
    w = next(wanted, None)
    e = next(existing, None)
    while w is not None or e is not None:
        w_key = w[0].split("/") if w is not None else None
        e_key = e[0].path.split("/") if e is not None else None
        if e is None or (w is not None and w_key < e_key):  # type: ignore[operator]
            assert w is not None
            yield w[0], w[1], None, None
            w = next(wanted, None)
        elif w is None or e_key < w_key:  # type: ignore[operator]
            yield e[0].path, None, e[0], e[1]
            e = next(existing, None)
        else:
            yield w[0], w[1], e[0], e[1]
            w = next(wanted, None)
            e = next(existing, None)


def _one_file(
    ws: Workspace, placer: _Placer, hasher: Hasher, ptr: Pointer, force: bool
) -> CheckoutResult:
    target = ws.root / ptr.path
    existing = _existing_file(target, force)
    current = hasher.digests(target, ptr.path, list(existing.values())).get("")
    hasher.commit()
    conflict = current is not None and current != ptr.digest and not ws.store.has(current)
    if conflict and not force:
        raise DataError(
            f"checkout would overwrite changes not in the store: {ptr.path}",
            hint=f"keep them with 'tether add {ptr.path}', or discard them with --force",
        )
    wf = existing.get("")
    if wf is not None and current == ptr.digest and not wf.executable:
        return CheckoutResult(ptr, 0, 1, 0, [])
    placer.place_many([(ptr.digest, os.fspath(target), False, ptr.path)])
    return CheckoutResult(ptr, 1, 0, int(conflict), [])


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
        self.placed: list[tuple[str, str, Digest]] = []
        self._verified: set[Digest] = set()
        self._count = itertools.count()

    def place_many(self, files: list[tuple[Digest, str, bool, str]]) -> None:
        """Place (digest, dest, executable, key) each. One thread: placing a small file
        is a few metadata calls on the same folders, and threads only queued on the
        folders' locks (measured: 50,000 files took twice as long on two)."""
        for digest, dest, executable, key in files:
            self.place(digest, dest, executable, key=key)
        if len(self.placed) >= _RECORD_EVERY:
            self._record()

    def place(self, digest: Digest, dest: str | Path, executable: bool, *, key: str) -> None:
        try:
            self._place(digest, os.fspath(dest), executable, key)
        except ObjectCorrupted as exc:
            raise ObjectCorrupted(
                f"{key}: {exc.message}; {key} was left as it was",
                hint=f"fetch a good copy with 'tether data pull {key}' (the bad one is set "
                "aside); without a remote, 'tether fsck' sets it aside so that adding the "
                "original file again restores it",
                digest=exc.digest,
            ) from None

    def _place(self, digest: Digest, dest: str, executable: bool, key: str) -> None:
        # Strings, not Paths: this runs once per file, and pathlib's objects cost more
        # than the system calls for a small file.
        src = self.ws.store.path(digest)
        whole = self.ws.store.has_blob(digest)  # else kept in chunks: only a copy will do
        count = next(self._count)
        mode = 0o755 if executable else 0o644
        if (
            whole
            and "hardlink" in self.order
            and os.path.exists(dest)
            and os.path.samefile(src, dest)
        ):
            # Renaming a link over another link of the same inode does nothing (POSIX),
            # which would strand the temp file: drop the old link first.
            os.unlink(dest)
        parent, name = os.path.split(dest)
        tmp = os.path.join(parent, f".{name[:200]}.tether-{os.getpid()}-{count}")
        for method in list(self.order) if whole else ["copy"]:
            if method == "hardlink" and executable:
                continue  # the store's blobs are 0444: a link cannot carry the exec bit
            try:
                if method == "copy":
                    size = self.ws.store.copy_out(digest, tmp, mode=mode)
                    if mode & _UMASK:
                        os.chmod(tmp, mode)  # the mode asked for, whatever the umask
                elif method == "reflink":
                    _reflink(src, tmp)
                    size = os.path.getsize(tmp)
                else:
                    os.link(src, tmp)
                    size = os.path.getsize(tmp)
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
                os.chmod(tmp, mode)
            try:
                os.replace(tmp, dest)
            except OSError:
                _unlink_quiet(tmp)
                raise
            self.methods[method] = self.methods.get(method, 0) + 1
            self.placed.append((key, dest, digest))
            self.on_bytes(size)
            return
        raise DataError(
            f"could not place {dest}: no method of checkout.link worked",
            hint="include 'copy' in checkout.link",
        )

    def finish(self) -> None:
        self._record(final=True)

    def _record(self, *, final: bool = False) -> None:
        """Make the files placed so far durable and record them in the stat cache, so
        the next status reads nothing. A file written less than ``RACY_NS`` ago may not
        be recorded yet (store/statcache.py): it waits for the next round, and at the
        end of a big checkout, for that second to pass, rather than leave thousands of
        files for the next status to read again."""
        placed, self.placed = self.placed, []
        if not placed:
            return
        syncfs(self.ws.root)
        stamped = [(key, Stamp.of(os.lstat(dest)), digest) for key, dest, digest in placed]
        newest = max(stamp.mtime_ns for _, stamp, _ in stamped)
        if final and len(stamped) >= _WAIT_FOR_AT_LEAST:
            time.sleep(max(0.0, (newest + RACY_NS - time.time_ns()) / 1e9) + 0.01)
        now = time.time_ns()
        self.ws.stat_cache.record(stamped, scan_start_ns=now)
        if not final:  # the fresh ones go again with the next round
            fresh = {key for key, stamp, _ in stamped if stamp.mtime_ns >= now - RACY_NS}
            self.placed = [p for p in placed if p[0] in fresh]


_WAIT_FOR_AT_LEAST = 1000  # files still too fresh to record at the end: worth a second
_RECORD_EVERY = 32768


def _reflink(src: Path, dst: str) -> None:
    with open(src, "rb") as s:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.ioctl(fd, _FICLONE, s.fileno())
        finally:
            os.close(fd)


def _unlink_quiet(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
