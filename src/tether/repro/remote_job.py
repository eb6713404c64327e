"""One reproduction away from its project: what a Ray task (``on_ray.py``) runs on a
worker, with no project, database or repository of the original at hand.

The driver ships a ``Job``: the rebuilt code as a tar (the original's outputs removed,
inputs kept by digest out of it), the command, seed and variables, and where the
inputs can be fetched by digest: the driver's store when the worker sees its folder
(one machine, a shared file system), else the project's data remotes. The worker
rebuilds the project in a scratch folder with a scratch ``.tether/`` (SQLite, its own
store), runs the command as a recorded run, and returns that run as a sync upload
with the blobs it keeps (outputs, log, code snapshot). The driver records it in the
project's database and gives the verdict there.

Scratch layout on the worker::

    TMP/tether-job-XXXX/work/            the unpacked code
      <project>/.tether/                 scratch workspace (removed with TMP)
"""

from __future__ import annotations

import io
import os
import socket
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import ReproError, TetherError
from tether.hashing import Digest

if TYPE_CHECKING:
    from tether.workspace import Workspace

# The blobs a worker hands back travel in Ray's object store; past this, the
# reproduction is refused rather than filling it (reproduce such runs locally).
MAX_RETURNED = 4 << 30


@dataclass(frozen=True)
class Job:
    original: str  # the run being reproduced
    label: str
    archive: bytes  # tar of the rebuilt code (see ``pack_code``)
    project: str  # the project folder inside the archive, "." at its root
    argv: tuple[str, ...]
    python: bool  # argv[0] is an interpreter: the worker's own runs it
    cwd: str  # relative to the project, or absolute
    seed: int | None
    env: Mapping[str, str | None]  # variables to set (None: to unset)
    metric_files: tuple[str, ...]
    autolog: bool | None
    inputs: tuple[tuple[str, str], ...]  # (project-relative path, digest) by digest
    stores: tuple[str, ...] = ()  # store folders to read inputs from, when visible
    remotes: tuple[tuple[str, str, str | None], ...] = ()  # (name, url, endpoint)


@dataclass(frozen=True)
class JobResult:
    upload: Mapping[str, Any]  # ``team.sync.RunUpload.to_json()`` of the new run
    blobs: Mapping[str, bytes]  # digest -> bytes of each blob the run keeps
    node: str
    interpreter: str


def pack_code(folder: Path) -> bytes:
    """A tar of ``folder`` without ``.git`` (its objects are borrowed from the user's
    repository, which a worker does not have) and without any ``.tether``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if rel.parts[0] == ".git" or ".tether" in rel.parts:
                continue
            if path.is_symlink() or path.is_file() or path.is_dir():
                tar.add(path, arcname=str(rel), recursive=False)
    return buf.getvalue()


def run_job(job: Job) -> JobResult:
    """Rebuild, run and record; what runs inside a Ray task."""
    from tether.data.remote import add_remote
    from tether.repositories import runs as runs_repo
    from tether.runs.launch import RunSpec, run_command
    from tether.team.sync import upload_of
    from tether.workspace import Workspace, init_workspace

    # The scratch project keeps its own SQLite database, whatever the worker was given.
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"}
    with tempfile.TemporaryDirectory(prefix="tether-job-") as tmp:
        root = Path(tmp) / "work"
        root.mkdir()
        with tarfile.open(fileobj=io.BytesIO(job.archive), mode="r:gz") as tar:
            tar.extractall(root, filter="data")  # refuses links and paths that leave root
        project = (root / job.project).resolve()
        if not project.is_relative_to(root.resolve()):
            raise ReproError("the job's project folder leaves its archive", hint="a bad job")
        project.mkdir(parents=True, exist_ok=True)
        init_workspace(project, env=env, propose_kitfile=False)
        ws = Workspace.open(project, env=env)
        try:
            for name, url, endpoint in job.remotes:
                add_remote(ws, name, url, endpoint_url=endpoint)
            _place_inputs(ws, job, project)
            argv = list(job.argv)
            if job.python:
                argv[0] = sys.executable  # Ray's runtime_env made this interpreter
            cwd = Path(job.cwd) if os.path.isabs(job.cwd) else project / job.cwd
            cwd.mkdir(parents=True, exist_ok=True)
            with open(os.devnull, "wb") as sink:
                result = run_command(
                    ws,
                    RunSpec(
                        argv,
                        name=f"{job.label}.repro",
                        seed=job.seed,
                        cwd=cwd,
                        env={**job.env, "TETHER_DATABASE_URL": None},
                        metrics=job.metric_files,
                        autolog=job.autolog,
                    ),
                    stdout=sink,
                    stderr=sink,
                )
            run = runs_repo.load_run(ws.db, result.run_id)
            upload = upload_of(ws, run)
            blobs: dict[str, bytes] = {}
            total = 0
            for digest, _ in upload.blobs:
                with ws.store.open(Digest.parse(digest)) as f:
                    data = f.read()
                total += len(data)
                if total > MAX_RETURNED:
                    raise ReproError(
                        f"the reproduction of {job.label} kept more than 4 GiB",
                        hint="reproduce runs with outputs this big with --executor local",
                    )
                blobs[digest] = data
            return JobResult(upload.to_json(), blobs, _node(), sys.executable)
        finally:
            ws.close()


def _node() -> str:
    """This machine, and the Ray node when a Ray task runs the job."""
    ray = sys.modules.get("ray")
    context = getattr(ray, "get_runtime_context", None)
    node = context().get_node_id()[:12] if context is not None else None
    return socket.gethostname() + (f" node {node}" if node else "")


def _place_inputs(ws: Workspace, job: Job, project: Path) -> None:
    from tether.data.transfer import fetch_objects
    from tether.repro.materialize import place_blob
    from tether.store.objects import ContentStore

    # Another store is only read: whatever it writes goes through the scratch tmp/.
    stores = [
        ContentStore(folder, ws.dot / "tmp")
        for folder in job.stores
        if (Path(folder) / "oci-layout").is_file()
    ]
    for rel, text in job.inputs:
        digest = Digest.parse(text)
        source = ws.store if ws.store.has(digest) else None
        source = source or next((s for s in stores if s.has(digest)), None)
        if source is None:
            for name, _, _ in job.remotes:
                try:
                    fetch_objects(ws, [digest], remote=name)
                except TetherError:
                    continue
                source = ws.store
                break
        if source is None:
            raise ReproError(
                f"input {rel} ({text[:19]}) is on no store or remote worker "
                f"{socket.gethostname()} can reach",
                hint="push the project's data (tether data push), or share the store's "
                "folder with the workers",
            )
        place_blob(source, digest, project / rel)  # verified while it is copied
