"""The code a run ran: enough to rebuild the exact source tree later.

In git: the commit, branch, remote (credentials stripped), the uncommitted diff of
tracked files (``git diff --binary``, stored as a blob) and the untracked source files
(listed, and small ones snapshotted into the store). Outside git: a snapshot of the
source files under the project, identified by the digest of its manifest.

A snapshot manifest is a blob of canonical JSON ``{"format": 1, "files": {path: digest}}``
whose file blobs are kept with it.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import tempfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from tether.hashing import Digest
from tether.store.objects import ContentStore

SOURCE_SUFFIXES = frozenset(
    {
        ".py", ".pyi", ".pyx", ".pxd", ".ipynb", ".r", ".jl", ".sh", ".sql", ".scala",
        ".yaml", ".yml", ".toml", ".cfg", ".ini", ".json", ".lock", ".c", ".cc", ".cpp",
        ".h", ".hpp", ".cu", ".rs", ".go", ".java", ".js", ".ts", ".md",
    }
)  # fmt: skip
SOURCE_NAMES = frozenset({"Kitfile", "Makefile", "Dockerfile", "Justfile", ".kitignore"})
SNAPSHOT_FILE_LIMIT = 1 << 20  # a bigger file is data, not source: listed, not stored
SNAPSHOT_TOTAL_LIMIT = 32 << 20
SNAPSHOT_MAX_FILES = 5000
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", ".git", ".tether"})
GIT_TIMEOUT = 120


@dataclass(frozen=True)
class CodeState:
    """The code a run ran. ``kind`` "none": nothing recorded (or not loaded)."""

    kind: Literal["git", "files", "none"]
    commit: str | None = None
    branch: str | None = None
    remote: str | None = None
    project_in_repo: str = "."  # the project root, relative to the repository's top
    dirty: bool = False
    diff_digest: str | None = None
    diff_stat: str = ""
    untracked: tuple[str, ...] = ()  # untracked source files (repo-relative)
    snapshot_digest: str | None = None  # untracked (git) or all (files) source files
    not_stored: tuple[str, ...] = ()  # source files over the snapshot limits
    blobs: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "none":
            return {}
        data = asdict(self)
        data.pop("blobs")
        return {k: v for k, v in data.items() if v not in (None, (), "")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CodeState:
        """The record as ``to_json`` wrote it (``{}``: nothing recorded)."""
        kind = data.get("kind")
        if kind not in ("git", "files"):
            return NO_CODE

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            kind=kind,
            commit=text("commit"),
            branch=text("branch"),
            remote=text("remote"),
            project_in_repo=str(data.get("project_in_repo", ".")),
            dirty=bool(data.get("dirty", False)),
            diff_digest=text("diff_digest"),
            diff_stat=str(data.get("diff_stat", "")),
            untracked=tuple(str(p) for p in data.get("untracked", ())),
            snapshot_digest=text("snapshot_digest"),
            not_stored=tuple(str(p) for p in data.get("not_stored", ())),
        )


NO_CODE = CodeState("none")


def is_source(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    if name in SOURCE_NAMES or (name.startswith("requirements") and name.endswith(".txt")):
        return True
    return os.path.splitext(name)[1].lower() in SOURCE_SUFFIXES


def strip_credentials(url: str) -> str:
    """``https://user:token@host/x?sig=…`` → ``https://host/x``; scp-style URLs
    (``git@host:org/repo``) name a login, not a secret, and stay."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def git_bytes(cwd: Path, *args: str) -> bytes | None:
    """git's stdout, or None when git is missing, fails or hangs."""
    # GIT_OPTIONAL_LOCKS=0: reading must not take index.lock from a user's concurrent git.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, env=env, timeout=GIT_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_text(cwd: Path, *args: str) -> str | None:
    out = git_bytes(cwd, *args)
    return None if out is None else out.decode("utf-8", "surrogateescape")


def capture_code(
    store: ContentStore, project_root: Path, outputs: Collection[str] = ()
) -> CodeState:
    """The code as it is now. ``outputs`` are project-relative files that recorded runs
    wrote (an earlier run's ``metrics.json``): results, never source, so they are left
    out of the snapshot and of the untracked files."""
    top = git_text(project_root, "rev-parse", "--show-toplevel")
    if top is None:
        return _capture_files(store, project_root, frozenset(outputs))
    return _capture_git(store, project_root, Path(top.strip()), frozenset(outputs))


def _capture_git(
    store: ContentStore, project_root: Path, top: Path, outputs: frozenset[str]
) -> CodeState:
    blobs: list[tuple[str, str]] = []
    commit = (git_text(top, "rev-parse", "--verify", "-q", "HEAD^{commit}") or "").strip() or None
    branch = (git_text(top, "symbolic-ref", "--short", "-q", "HEAD") or "").strip() or None
    remotes = (git_text(top, "remote") or "").split()
    remote = None
    if remotes:
        name = "origin" if "origin" in remotes else remotes[0]
        url = (git_text(top, "remote", "get-url", name) or "").strip()
        remote = strip_credentials(url) if url else None
    base = commit or (git_text(top, "hash-object", "-t", "tree", "/dev/null") or "").strip()
    diff_digest = None
    diff_stat = ""
    if base:
        diff = git_bytes(top, "diff", "--binary", "--no-color", "--no-ext-diff", base, "--")
        if diff:
            diff_digest = str(store.put_bytes(diff))
            blobs.append((diff_digest, "code-diff"))
            diff_stat = (git_text(top, "diff", "--shortstat", base, "--") or "").strip()
    listed = git_text(top, "ls-files", "--others", "--exclude-standard", "-z") or ""
    try:
        prefix = project_root.resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        prefix = "."
    produced = {posixpath.normpath(f"{prefix}/{p}") for p in outputs}
    untracked = sorted(p for p in listed.split("\0") if p and is_source(p) and p not in produced)
    snapshot, not_stored, snap_blobs = _snapshot(store, top, untracked)
    blobs += snap_blobs
    try:
        project_in_repo = project_root.resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        project_in_repo = "."
    return CodeState(
        kind="git",
        commit=commit,
        branch=branch,
        remote=remote,
        project_in_repo=project_in_repo,
        dirty=bool(diff_digest or untracked),
        diff_digest=diff_digest,
        diff_stat=diff_stat,
        untracked=tuple(untracked),
        snapshot_digest=snapshot,
        not_stored=tuple(not_stored),
        blobs=tuple(blobs),
    )


def _walk_sources(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        # Hidden folders, caches and virtualenvs are not the project's source.
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
        )
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if is_source(rel):
                yield rel


def _capture_files(store: ContentStore, project_root: Path, outputs: frozenset[str]) -> CodeState:
    files = [p for p in _walk_sources(project_root) if p not in outputs]
    snapshot, not_stored, blobs = _snapshot(store, project_root, files)
    return CodeState(
        kind="files",
        snapshot_digest=snapshot,
        not_stored=tuple(not_stored),
        blobs=tuple(blobs),
    )


def _snapshot(
    store: ContentStore, root: Path, paths: list[str]
) -> tuple[str | None, list[str], list[tuple[str, str]]]:
    if not paths:
        return None, [], []
    entries: dict[str, str] = {}
    not_stored: list[str] = []
    blobs: list[tuple[str, str]] = []
    total = 0
    for rel in paths:
        path = root / rel
        try:
            size = path.stat().st_size
        except OSError:
            continue  # vanished since listing
        if (
            size > SNAPSHOT_FILE_LIMIT
            or total + size > SNAPSHOT_TOTAL_LIMIT
            or len(entries) >= SNAPSHOT_MAX_FILES
            or path.is_symlink()
        ):
            not_stored.append(rel)
            continue
        digest = str(store.add_file(path)[0])
        total += size
        entries[rel] = digest
        blobs.append((digest, "code-file"))
    manifest = json.dumps({"format": 1, "files": entries}, sort_keys=True, separators=(",", ":"))
    snapshot = str(store.put_bytes(manifest.encode()))
    blobs.append((snapshot, "code-snapshot"))
    return snapshot, not_stored, blobs


def file_as_recorded(
    store: ContentStore, code: CodeState, project_root: Path, rel: str
) -> bytes | None:
    """The bytes project file ``rel`` had when a run recorded ``code``: from its source
    snapshot, else its commit with the recorded uncommitted diff applied. None when the
    record does not hold the file (or the repository lost the commit)."""
    git = code.kind == "git"
    repo_rel = posixpath.normpath(f"{code.project_in_repo}/{rel}") if git else rel
    if code.snapshot_digest:
        doc = json.loads(store.read_bytes(Digest.parse(code.snapshot_digest)))
        found = doc.get("files", {}).get(repo_rel)
        if found:
            return store.read_bytes(Digest.parse(found), max_size=SNAPSHOT_FILE_LIMIT)
    if not git or not code.commit:
        return None
    top = git_text(project_root, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    base = git_bytes(Path(top.strip()), "show", f"{code.commit}:{repo_rel}")
    diff = (
        store.read_bytes(Digest.parse(code.diff_digest), max_size=64 << 20)
        if code.diff_digest
        else b""
    )
    if f" b/{repo_rel}\n".encode() not in diff and f" a/{repo_rel}\n".encode() not in diff:
        return base
    # Apply the recorded diff to that one file, in a scratch folder outside any repository
    # (git apply then works as patch does).
    with tempfile.TemporaryDirectory(prefix="tether-recorded-") as tmp:
        target = Path(tmp, repo_rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        if base is not None:
            target.write_bytes(base)
        Path(tmp, ".recorded.diff").write_bytes(diff)
        if git_bytes(Path(tmp), "apply", f"--include={repo_rel}", ".recorded.diff") is None:
            return None
        return target.read_bytes() if target.is_file() else None
