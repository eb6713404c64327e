"""MLflow's artifacts (``mlflow.log_artifact``, ``download_artifacts``, ``list_artifacts``)
as tether run files.

The MLflow client addresses an artifact as ``EXPERIMENT/RUN/artifacts/PATH`` under the
server's ``/api/2.0/mlflow-artifacts/artifacts/``, and a logged model's files as
``EXPERIMENT/models/MODEL_ID/artifacts/PATH``. Each one is stored by digest in the
content store and recorded as a file of the run with the role ``artifact`` (it is kept
from ``tether gc``, travels with ``tether sync``, and shows on the run's page), or of
the logged model. Paths are checked: no ``..``, no absolute path, nothing that is not a
plain relative name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tether.errors import UsageError
from tether.hashing import Digest
from tether.mlflow import logged_models
from tether.mlflow.request import MlflowError
from tether.mlflow.tracking import load_run
from tether.repositories import logged_models as model_repo
from tether.repositories import runs as runs_repo
from tether.runs.record import RunFile, artifact_path
from tether.workspace import Workspace


@dataclass(frozen=True)
class ArtifactPath:
    owner: str  # a run's id, or a logged model's
    path: str  # relative to the owner's artifact root; "" for the root
    model: bool = False  # the owner is a logged model


def parse(text: str) -> ArtifactPath:
    """``EXPERIMENT/RUN/artifacts[/PATH]`` or ``EXPERIMENT/models/ID/artifacts[/PATH]``
    as the MLflow client sends it."""
    parts = text.strip("/").split("/", 3)
    if len(parts) >= 3 and parts[1] == "models":
        parts = text.strip("/").split("/", 4)
        if len(parts) >= 4 and parts[3] == "artifacts" and parts[2]:
            return ArtifactPath(parts[2], clean(parts[4] if len(parts) == 5 else ""), True)
    elif len(parts) >= 3 and parts[2] == "artifacts" and parts[1]:
        return ArtifactPath(parts[1], clean(parts[3] if len(parts) == 4 else ""))
    raise MlflowError(
        "INVALID_PARAMETER_VALUE",
        f"{text[:120]!r} is not an artifact path: EXPERIMENT/RUN/artifacts/PATH",
    )


def clean(path: str) -> str:
    """A relative artifact path, refused if it could climb out of the run's artifacts."""
    try:
        return artifact_path(path)
    except UsageError as e:
        raise MlflowError("INVALID_PARAMETER_VALUE", e.message) from None


def store(ws: Workspace, where: ArtifactPath, chunks: Iterable[bytes]) -> int:
    """Keep the artifact's bytes (verified into the store) as a file of the run; returns
    its size. Writing a path again replaces what it names."""
    if not where.path:
        raise MlflowError("INVALID_PARAMETER_VALUE", "an artifact needs a file name")
    if where.model:
        model = logged_models.load(ws, where.owner)
    else:
        run = load_run(ws, where.owner)
    with ws.store.writer() as w:
        for chunk in chunks:
            w.write(chunk)
    assert w.digest is not None
    if where.model:
        model_repo.add_file(
            ws.db, model.id, model_repo.ModelFile(where.path, str(w.digest), w.size)
        )
    else:
        runs_repo.add_files(
            ws.db, run.id, [RunFile("artifact", where.path, str(w.digest), w.size, "mlflow", True)]
        )
    return w.size


@dataclass(frozen=True)
class Stored:
    digest: str
    size: int


def stored(ws: Workspace, where: ArtifactPath) -> dict[str, Stored]:
    """Every artifact of ``where``'s run or logged model: path → its blob."""
    if where.model:
        files = model_repo.files(ws.db, logged_models.load(ws, where.owner).id)
        return {f.path: Stored(f.digest, f.size) for f in files}
    run = load_run(ws, where.owner)
    return {
        f.path: Stored(f.digest, f.size or 0)
        for f in run.files
        if f.role == "artifact" and f.stored and f.digest
    }


def read(ws: Workspace, where: ArtifactPath) -> Iterator[bytes]:
    """The artifact's bytes, checked against its digest before any is sent (a damaged
    blob is refused, never passed on as good)."""
    found = stored(ws, where).get(where.path)
    if found is None:
        raise MlflowError(
            "RESOURCE_DOES_NOT_EXIST", f"no artifact {where.path[:120]!r} there", status=404
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
    for path, f in stored(ws, where).items():
        if not path.startswith(prefix):
            continue
        head, _, rest = path[len(prefix) :].partition("/")
        name = prefix + head
        out[name] = Listed(name, True, None) if rest else Listed(name, False, f.size)
    return sorted(out.values(), key=lambda e: e.path)
