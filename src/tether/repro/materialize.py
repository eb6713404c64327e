"""Rebuilding a run's project in an isolated folder: its code as it was, its inputs by
digest, and none of its outputs.

Layout of a reproduction's work folder::

    WORKDIR/                 a shared clone of the repository (git runs), or the snapshot
      <project_in_repo>/     the project as the run saw it; the command runs in its cwd

Git runs: ``git clone --shared`` (objects are borrowed from the original repository, so
even a commit no branch reaches is there, and the user's repository is not touched),
checkout of the recorded commit, ``git apply`` of the recorded diff, then the
snapshotted untracked sources. Runs outside git: the snapshot's files. Every input is
then placed from the store (fetched from a remote first when the plan says so) or the
project, and checked against its digest (store blobs while they are copied); a mismatch
or a corrupt blob stops the reproduction before the command runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tether.errors import ReproError
from tether.hashing import Digest, hash_file
from tether.reporting import SILENT, Reporter
from tether.repro.plan import Plan
from tether.store.objects import ContentStore
from tether.workspace import Workspace

GIT_TIMEOUT = 600
BY_DIGEST = ("store", "remote", "server")  # input sources placed from a store


def snapshot_files(store: ContentStore, snapshot_digest: str) -> dict[str, str]:
    """path → digest of a code snapshot manifest (see ``runs/code.py``)."""
    doc = json.loads(store.read_bytes(Digest.parse(snapshot_digest)))
    files: dict[str, str] = doc.get("files", {})
    for rel in files:
        _check_relative(rel)
    return files


def _check_relative(rel: str) -> None:
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\0" in rel:
        raise ReproError(
            f"refusing a recorded path that leaves the project: {rel[:200]!r}",
            hint="the run record is damaged or was tampered with",
        )


def materialize(
    ws: Workspace,
    plan: Plan,
    workdir: Path,
    *,
    report: Reporter = SILENT,
    by_digest: bool = True,
) -> Path:
    """Build the project in ``workdir`` (empty or absent); returns the project folder.
    ``by_digest=False`` leaves out the inputs that come by digest (from a store, a
    remote or the server): a worker elsewhere places them (``remote_job.py``)."""
    say = report.note
    workdir.mkdir(parents=True, exist_ok=True)
    code = plan.code
    if code.kind == "git":
        assert plan.git_top is not None
        diff = f" + diff ({code.diff_stat})" if code.diff_digest else ""
        say(f"code: commit {str(code.commit or '(none)')[:12]}{diff}")
        _clone(plan.git_top, workdir, code.commit, code.remote)
        if code.diff_digest:
            _apply_diff(ws.store, workdir, code.diff_digest)
        project = workdir / code.project_in_repo
        untracked_root = workdir  # untracked paths are repository-relative
    else:
        say("code: the recorded snapshot of the project's source files")
        project = workdir
        untracked_root = workdir
    project = Path(os.path.normpath(project))
    project.mkdir(parents=True, exist_ok=True)
    if code.snapshot_digest:
        for rel, digest in snapshot_files(ws.store, code.snapshot_digest).items():
            place_blob(ws.store, Digest.parse(digest), untracked_root / rel)
    for rel in code.not_stored:
        _check_relative(rel)
        source = (plan.git_top or ws.root) / rel if code.kind == "git" else ws.root / rel
        if source.is_file():
            dest = untracked_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
    for rel in plan.outputs:
        _check_relative(rel)
        target = project / rel
        if target.is_file() or target.is_symlink():
            target.unlink()
    _place_inputs(ws, plan, project, say, by_digest)
    return project


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, env=env, timeout=GIT_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReproError(f"git {args[0]} failed: {exc}", hint="check that git works") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ReproError(
            f"git {args[0]} failed: {lines[-1] if lines else proc.returncode}",
            hint="the repository may have lost the recorded commit; see 'git fsck'",
        )


def _clone(top: Path, workdir: Path, commit: str | None, remote: str | None) -> None:
    _git(workdir, "clone", "--quiet", "--shared", "--no-checkout", str(top), ".")
    # The clone's origin is the local repository; the run recorded the real one.
    _git(workdir, "remote", "remove", "origin")
    if remote:
        _git(workdir, "remote", "add", "origin", remote)
    if commit:
        _git(workdir, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit)


def _apply_diff(store: ContentStore, workdir: Path, diff_digest: str) -> None:
    patch = workdir / ".git" / "tether-recorded.diff"
    patch.unlink(missing_ok=True)
    store.copy_out(Digest.parse(diff_digest), patch)
    try:
        _git(workdir, "apply", "--binary", "--whitespace=nowarn", str(patch))
    finally:
        patch.unlink(missing_ok=True)


def place_blob(store: ContentStore, digest: Digest, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.is_dir():
        raise ReproError(
            f"{dest} is a link or folder in the rebuilt code, where the run read a file",
            hint="the recorded code and inputs disagree; check the run record",
        )
    tmp = dest.with_name(f".{dest.name}.tether-tmp")
    tmp.unlink(missing_ok=True)
    store.copy_out(digest, tmp)  # verified while copying: a rotten blob never runs
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)


def _place_inputs(
    ws: Workspace, plan: Plan, project: Path, say: Callable[[str], None], by_digest: bool
) -> None:
    from tether.data.transfer import fetch_objects

    if not by_digest:
        plan = replace(plan, inputs=tuple(i for i in plan.inputs if i.source not in BY_DIGEST))

    by_remote: dict[str, list[Digest]] = {}
    for item in plan.inputs:
        if item.source == "remote" and item.remote:
            by_remote.setdefault(item.remote, []).append(Digest.parse(item.digest))
    for remote, digests in sorted(by_remote.items()):
        say(f"inputs: fetching {len(digests)} object(s) from remote {remote}")
        fetch_objects(ws, digests, remote=remote)
    from_server = [i.digest for i in plan.inputs if i.source == "server"]
    if from_server:
        from tether.team.client import fetch_from_server

        say(f"inputs: fetching {len(from_server)} object(s) from the team server")
        fetch_from_server(ws, from_server)
    placed = 0
    for item in plan.inputs:
        if item.source == "absolute":
            continue
        _check_relative(item.path)
        dest = project / item.path
        digest = Digest.parse(item.digest)
        if item.source in BY_DIGEST:
            place_blob(ws.store, digest, dest)  # verified by the copy itself
            placed += 1
            continue
        if item.source == "project":
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ws.root / item.path, dest)
            placed += 1
        try:
            ok = dest.is_file() and hash_file(dest)[0] == digest
        except OSError:
            ok = False
        if not ok:
            raise ReproError(
                f"input {item.path} in the rebuilt project is not the recorded {item.digest[:19]}",
                hint="the code at the recorded commit holds another version; version the "
                "input with 'tether add' so it can be restored by digest",
            )
    if placed:
        say(f"inputs: {placed} file(s) placed by digest, every one verified")
