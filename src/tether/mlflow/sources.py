"""Where a model version's files are, from the ``source`` MLflow's client gives it.

Understood: a logged model (``models:/m-…``, or its ``model_id``), a run's artifacts
(``runs:/RUN/PATH``) and the server's own artifact URIs
(``mlflow-artifacts:/EXPERIMENT/RUN/artifacts/PATH``, ``…/models/ID/artifacts``). A
source elsewhere (``s3://…``, a local path) is refused: a tether version is a ModelKit
of files tether holds and has checked, never a pointer to bytes that may change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tether.hashing import Digest
from tether.mlflow import artifacts
from tether.mlflow.request import invalid
from tether.modelkit.pack import StoredFile
from tether.workspace import Workspace

_ARTIFACTS = re.compile(r"^mlflow-artifacts:(?://[^/]*)?/(?P<path>.+)$")


@dataclass(frozen=True)
class ModelFiles:
    folder: str  # the model's folder in the ModelKit
    files: tuple[StoredFile, ...]  # relative to that folder
    run_id: str | None


def model_files(ws: Workspace, source: str, run_id: str | None, model_id: str | None) -> ModelFiles:
    from tether.mlflow import logged_models

    if model_id is None and source.startswith("models:/m-"):
        model_id = source.removeprefix("models:/").strip("/")
    if model_id is not None:
        model = logged_models.load(ws, model_id)
        where = artifacts.ArtifactPath(model.id, "", model=True)
        return _collect(ws, where, model.name, run_id or model.run_id, source)
    if source.startswith("runs:/"):
        owner, _, path = source.removeprefix("runs:/").strip("/").partition("/")
        where = artifacts.ArtifactPath(owner, artifacts.clean(path))
    elif m := _ARTIFACTS.match(source):
        where = artifacts.parse(m.group("path"))
    else:
        raise invalid(
            f"tether registers models from files it holds: {source[:120]!r} is not a logged"
            " model (models:/m-…) or a run's artifacts (runs:/RUN/PATH)"
        )
    if not where.model:
        run_id = run_id or where.owner
    folder = where.path.rsplit("/", 1)[-1] or "model"
    return _collect(ws, where, folder, run_id, source)


def _collect(
    ws: Workspace, where: artifacts.ArtifactPath, folder: str, run_id: str | None, source: str
) -> ModelFiles:
    found = artifacts.stored(ws, where)
    if where.path in found:  # one file: the model's folder holds it alone
        f = found[where.path]
        name = where.path.rsplit("/", 1)[-1]
        return ModelFiles("model", (StoredFile(name, Digest.parse(f.digest), f.size),), run_id)
    prefix = f"{where.path}/" if where.path else ""
    files = tuple(
        StoredFile(path[len(prefix) :], Digest.parse(f.digest), f.size)
        for path, f in sorted(found.items())
        if path.startswith(prefix)
    )
    if not files:
        raise invalid(f"no files at {source[:120]!r}: log the model before registering it")
    return ModelFiles(folder, files, run_id)
