"""MLflow 3's logged models (``mlflow.<flavor>.log_model``, autolog) on tether.

A logged model is the set of files a flavor writes (``MLmodel``, the weights, its
environment files) with its params and tags, made by a run. Its files are stored by
digest like a run's artifacts (``EXPERIMENT/models/ID/artifacts/PATH``); it becomes an
immutable ModelKit only when registered (``mlflow/registry.py``). Its search accepts
what MLflow's client asks: conditions on ``name``, ``source_run_id``, ``status``,
``model_type`` and ``model_id`` joined by ``AND``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from tether.mlflow.request import invalid, millis, missing, page, paged, pairs, required, text
from tether.repositories import logged_models as repo
from tether.workspace import Workspace

STATUS_OUT: dict[repo.Status, str] = {
    "pending": "LOGGED_MODEL_PENDING", "ready": "LOGGED_MODEL_READY",
    "failed": "LOGGED_MODEL_UPLOAD_FAILED",
}  # fmt: skip
STATUS_IN = {v: k for k, v in STATUS_OUT.items()}
_CONDITION = re.compile(
    r"""^\s*`?(?P<field>[a-z_]+)`?\s*(?P<op>=|!=)\s*(?P<q>['"])(?P<value>.*?)(?P=q)\s*$""",
    re.IGNORECASE,
)


def model_json(m: repo.LoggedModel) -> dict[str, Any]:
    info: dict[str, Any] = {
        "model_id": m.id,
        "experiment_id": str(m.experiment_id),
        "name": m.name,
        "creation_timestamp_ms": millis(m.created),
        "last_updated_timestamp_ms": millis(m.updated),
        "artifact_uri": f"mlflow-artifacts:/{m.experiment_id}/models/{m.id}/artifacts",
        "status": STATUS_OUT[m.status],
        "tags": [{"key": k, "value": v} for k, v in sorted(m.tags.items())],
    }
    if m.model_type:
        info["model_type"] = m.model_type
    if m.run_id:
        info["source_run_id"] = m.run_id
    params = [{"key": k, "value": v} for k, v in sorted(m.params.items())]
    return {"info": info, "data": {"params": params, "metrics": []}}


def load(ws: Workspace, model_id: str) -> repo.LoggedModel:
    found = repo.get(ws.db, model_id) if len(model_id) <= 64 else None
    if found is None:
        raise missing(f"Logged model with ID '{model_id[:64]}' not found.")
    return found


def create_logged_model(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    from tether.mlflow.tracking import experiment_of, load_run

    experiment = experiment_of(ws, required(body, "experiment_id"))
    run_id = text(body, "source_run_id", required=False)
    if run_id is not None:
        run_id = load_run(ws, run_id).id
    model_id = f"m-{uuid.uuid4().hex}"
    now = time.time()
    made = repo.LoggedModel(
        model_id,
        experiment.id,
        text(body, "name", required=False) or model_id,
        run_id,
        "pending",
        text(body, "model_type", required=False),
        now,
        now,
        ws.user,
        pairs(body, "tags"),
        pairs(body, "params"),
    )
    repo.create(ws.db, made)
    return {"model": model_json(made)}


def get_logged_model(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"model": model_json(load(ws, required(body, "model_id")))}


def finalize_logged_model(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model = load(ws, required(body, "model_id"))
    status = required(body, "status")
    if status not in STATUS_IN:
        raise invalid(f"Invalid logged model status {status[:40]!r}")
    repo.set_status(ws.db, model.id, STATUS_IN[status], at=time.time())
    return {"model": model_json(load(ws, model.id))}


def delete_logged_model(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    repo.delete(ws.db, load(ws, required(body, "model_id")).id)
    return {}


def set_logged_model_tags(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model = load(ws, required(body, "model_id"))
    repo.set_values(ws.db, model.id, "tag", pairs(body, "tags"))
    return {}


def delete_logged_model_tag(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model = load(ws, required(body, "model_id"))
    key = required(body, "tag_key")
    if not repo.delete_value(ws.db, model.id, "tag", key):
        raise missing(f"No tag with key {key[:80]!r} on logged model {model.id}")
    return {}


def log_logged_model_params(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    model = load(ws, required(body, "model_id"))
    repo.set_values(ws.db, model.id, "param", pairs(body, "params"))
    return {}


def search_logged_models(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    from tether.mlflow.tracking import experiment_of

    ids = [experiment_of(ws, str(i)).id for i in body.get("experiment_ids") or ()]
    conditions = _conditions(str(body.get("filter") or ""))
    limit, offset = page(body)
    found = repo.search(ws.db, ids, conditions, limit=limit + 1, offset=offset)
    shown, more = paged(found, limit, offset)
    return {"models": [model_json(m) for m in shown], **more}


def _conditions(text: str) -> list[tuple[str, bool, str]]:
    out = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        m = _CONDITION.match(part)
        field = m.group("field").lower() if m else ""
        if m is None or field not in repo.SEARCHABLE:
            raise invalid(
                f"tether searches logged models by {', '.join(repo.SEARCHABLE)} with = or !=;"
                f" cannot read {part[:80]!r}"
            )
        value = m.group("value")
        if field == "status":
            value = STATUS_IN.get(value, value)
        out.append((field, m.group("op") == "=", value))
    return out


def log_outputs(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    """``runs/outputs``: the run made these models; a model logged outside the run is
    tied to it now."""
    from tether.mlflow.tracking import load_run

    run = load_run(ws, required(body, "run_id"))
    for item in body.get("models") or ():
        model = load(ws, str(item.get("model_id") if isinstance(item, dict) else ""))
        if model.run_id is None:
            repo.set_run(ws.db, model.id, run.id)
    return {}
