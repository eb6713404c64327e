"""MLflow's artifacts (``mlflow.log_artifact``, ``download_artifacts``, ``list_artifacts``)
as tether run files.

The MLflow client addresses an artifact as ``EXPERIMENT/RUN/artifacts/PATH`` under the
server's ``/api/2.0/mlflow-artifacts/artifacts/``. Each one is stored by digest in the
content store and recorded as a file of the run with the role ``artifact`` (it is kept
from ``tether gc``, travels with ``tether sync``, and shows on the run's page). Paths are
checked: no ``..``, no absolute path, nothing that is not a plain relative name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from tether.hashing import Digest
from tether.mlflow.tracking import MlflowError, load_run
from tether.repositories import runs as runs_repo
from tether.runs.record import RunFile, RunRecord
from tether.workspace import Workspace

MAX_PATH = 1024


@dataclass(frozen=True)
class ArtifactPath:
    run_id: str
    path: str  # relative to the run's artifact root; "" for the root


def parse(text: str) -> ArtifactPath:
    """``EXPERIMENT/RUN/artifacts[/PATH]`` as the MLflow client sends it."""
    parts = text.strip("/").split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts" or not parts[1]:
        raise MlflowError(
            "INVALID_PARAMETER_VALUE",
            f"{text[:120]!r} is not an artifact path: EXPERIMENT/RUN/artifacts/PATH",
        )
    return ArtifactPath(parts[1], clean(parts[3] if len(parts) == 4 else ""))


def clean(path: str) -> str:
    """A relative artifact path, refused if it could climb out of the run's artifacts."""
    if len(path) > MAX_PATH or "\\" in path or "\0" in path:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"invalid artifact path {path[:120]!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(p in ("..", ".") for p in pure.parts):
        raise MlflowError("INVALID_PARAMETER_VALUE", f"invalid artifact path {path[:120]!r}")
    return "/".join(pure.parts)


def store(ws: Workspace, where: ArtifactPath, chunks: Iterable[bytes]) -> int:
    """Keep the artifact's bytes (verified into the store) as a file of the run; returns
    its size. Writing a path again replaces what it names."""
    if not where.path:
        raise MlflowError("INVALID_PARAMETER_VALUE", "an artifact needs a file name")
    run = load_run(ws, where.run_id)
    with ws.store.writer() as w:
        for chunk in chunks:
            w.write(chunk)
    assert w.digest is not None
    runs_repo.add_files(
        ws.db, run.id, [RunFile("artifact", where.path, str(w.digest), w.size, "mlflow", True)]
    )
    return w.size


def _artifacts(run: RunRecord) -> dict[str, RunFile]:
    return {f.path: f for f in run.files if f.role == "artifact" and f.stored and f.digest}


def read(ws: Workspace, where: ArtifactPath) -> Iterator[bytes]:
    """The artifact's bytes, checked against its digest before any is sent (a damaged
    blob is refused, never passed on as good)."""
    found = _artifacts(load_run(ws, where.run_id)).get(where.path)
    if found is None or found.digest is None:
        raise MlflowError(
            "RESOURCE_DOES_NOT_EXIST", f"no artifact {where.path[:120]!r} in this run", status=404
        )
    digest = Digest.parse(found.digest)
    ws.store.ensure_intact(digest)
    return _chunks(ws, digest)


def _chunks(ws: Workspace, digest: Digest) -> Iterator[bytes]:
    with ws.store.open(digest) as f:
        while chunk := f.read(1 << 20):
            yield chunk


@dataclass(frozen=True)
class Listed:
    path: str
    is_dir: bool
    size: int | None


def listing(ws: Workspace, where: ArtifactPath) -> list[Listed]:
    """What is directly under ``where.path`` (a folder of the artifacts, "" the root)."""
    prefix = f"{where.path}/" if where.path else ""
    out: dict[str, Listed] = {}
    for path, f in _artifacts(load_run(ws, where.run_id)).items():
        if not path.startswith(prefix):
            continue
        head, _, rest = path[len(prefix) :].partition("/")
        name = prefix + head
        out[name] = Listed(name, True, None) if rest else Listed(name, False, f.size)
    return sorted(out.values(), key=lambda e: e.path)
