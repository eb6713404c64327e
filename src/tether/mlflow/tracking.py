"""MLflow's tracking calls (the JSON its client sends) on tether's runs.

What maps to what:

- an experiment is a row of ``experiments`` (repositories/experiments.py); a run belongs
  to one through its tag ``mlflow.experiment_id`` (tether's own runs carry none: they
  are in experiment 0, "Default");
- an MLflow run is a tether run: its name, user, start and end (MLflow counts
  milliseconds), params, tags and metrics (every point, with its step and time);
- statuses map both ways (RUNNING/SCHEDULED ↔ running, FINISHED, FAILED, KILLED);
- deleting a run hides it (tag ``tether.lifecycle`` = deleted), as MLflow does, until
  ``restore``; ``tether runs delete`` is what removes one.

Each function takes the request's fields and returns the response's, as MLflow's REST
API spells them; a refusal is an ``MlflowError`` with MLflow's error code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from tether.errors import ParamConflict, UsageError
from tether.mlflow.request import MlflowError, pairs
from tether.mlflow.request import invalid as _invalid
from tether.mlflow.request import millis as _millis
from tether.mlflow.request import missing as _missing
from tether.mlflow.request import page as _page
from tether.mlflow.request import required as _required
from tether.mlflow.request import text as _text
from tether.mlflow.request import token as _token
from tether.repositories import experiments as exp_repo
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.runs.record import MAX_VALUE_LENGTH, NewRun, RunRecord, RunStatus
from tether.workspace import Workspace

EXPERIMENT_TAG = "mlflow.experiment_id"
LIFECYCLE_TAG = "tether.lifecycle"
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
INPUT_TAG = "tether.mlflow.input."
_DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")
# tether's own bookkeeping, which MLflow keeps elsewhere (run_info), not among its tags.
_HIDDEN = frozenset({LIFECYCLE_TAG, EXPERIMENT_TAG})
STATUS_OUT: dict[RunStatus, str] = {
    "running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED",
}  # fmt: skip
STATUS_IN: dict[str, RunStatus] = {
    "RUNNING": "running", "SCHEDULED": "running", "FINISHED": "finished",
    "FAILED": "failed", "KILLED": "killed",
}  # fmt: skip


# -- experiments ---------------------------------------------------------------------------


def _experiment_json(e: exp_repo.Experiment) -> dict[str, Any]:
    return {
        "experiment_id": str(e.id),
        "name": e.name,
        "artifact_location": e.artifact_location or f"mlflow-artifacts:/{e.id}",
        "lifecycle_stage": e.lifecycle,
        "creation_time": _millis(e.created),
        "last_update_time": _millis(e.updated),
        "tags": [{"key": k, "value": v} for k, v in sorted(e.tags.items())],
    }


def _experiment_id(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise _invalid(f"Invalid experiment ID: {str(text)[:40]!r}") from None


def _experiment(ws: Workspace, experiment_id: int) -> exp_repo.Experiment:
    exp_repo.ensure_default(ws.db, at=time.time())
    found = exp_repo.by_id(ws.db, experiment_id)
    if found is None:
        raise _missing(f"No Experiment with id={experiment_id} exists")
    return found


def experiment_of(ws: Workspace, experiment_id: str) -> exp_repo.Experiment:
    """The experiment MLflow names ``experiment_id``; RESOURCE_DOES_NOT_EXIST if none."""
    return _experiment(ws, _experiment_id(experiment_id))


def create_experiment(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    name = _required(body, "name")
    tags = pairs(body, "tags")
    exp_repo.ensure_default(ws.db, at=time.time())
    made = exp_repo.create(ws.db, name, _text(body, "artifact_location", required=False),
                           tags, at=time.time())  # fmt: skip
    if made is None:
        raise MlflowError(
            "RESOURCE_ALREADY_EXISTS", f"Experiment '{name}' already exists.", status=400
        )
    return {"experiment_id": str(made)}


def get_experiment(ws: Workspace, query: Mapping[str, Any]) -> dict[str, Any]:
    found = _experiment(ws, _experiment_id(_text(query, "experiment_id")))
    return {"experiment": _experiment_json(found)}


def get_experiment_by_name(ws: Workspace, query: Mapping[str, Any]) -> dict[str, Any]:
    name = _required(query, "experiment_name")
    exp_repo.ensure_default(ws.db, at=time.time())
    found = exp_repo.by_name(ws.db, name)
    if found is None:
        raise _missing(f"Could not find experiment with name '{name}'")
    return {"experiment": _experiment_json(found)}


def search_experiments(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    exp_repo.ensure_default(ws.db, at=time.time())
    view = str(body.get("view_type") or "ACTIVE_ONLY")
    views: dict[str, tuple[exp_repo.Lifecycle, ...]] = {
        "ACTIVE_ONLY": ("active",), "DELETED_ONLY": ("deleted",), "ALL": ("active", "deleted"),
    }  # fmt: skip
    lifecycles = views.get(view, ("active",))
    found = exp_repo.listed(ws.db, lifecycles)
    limit, offset = _page(body)
    shown = found[offset : offset + limit]
    out: dict[str, Any] = {"experiments": [_experiment_json(e) for e in shown]}
    if offset + limit < len(found):
        out["next_page_token"] = _token(offset + limit)
    return out


def delete_experiment(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    found = _experiment(ws, _experiment_id(_text(body, "experiment_id")))
    exp_repo.set_lifecycle(ws.db, found.id, "deleted", at=time.time())
    return {}


def restore_experiment(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    found = _experiment(ws, _experiment_id(_text(body, "experiment_id")))
    exp_repo.set_lifecycle(ws.db, found.id, "active", at=time.time())
    return {}


def update_experiment(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    found = _experiment(ws, _experiment_id(_text(body, "experiment_id")))
    name = _required(body, "new_name")
    if not exp_repo.rename(ws.db, found.id, name, at=time.time()):
        raise MlflowError("RESOURCE_ALREADY_EXISTS", f"Experiment '{name}' already exists.")
    return {}


def set_experiment_tag(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    found = _experiment(ws, _experiment_id(_text(body, "experiment_id")))
    key = _required(body, "key")
    exp_repo.set_tag(ws.db, found.id, key, str(body.get("value") or ""))
    return {}


# -- runs ----------------------------------------------------------------------------------


def run_json(run: RunRecord) -> dict[str, Any]:
    experiment = run.tags.get(EXPERIMENT_TAG, str(exp_repo.DEFAULT_ID))
    info = {
        "run_id": run.id,
        "run_uuid": run.id,
        "run_name": run.name or "",
        "experiment_id": experiment,
        "user_id": run.user,
        "status": STATUS_OUT[run.status],
        "start_time": _millis(run.started),
        "artifact_uri": f"mlflow-artifacts:/{experiment}/{run.id}/artifacts",
        "lifecycle_stage": "deleted" if run.tags.get(LIFECYCLE_TAG) == "deleted" else "active",
    }
    if run.ended is not None:
        info["end_time"] = _millis(run.ended)
    metrics = [
        {"key": m.key, "value": _number(m.last), "timestamp": _millis(m.at), "step": m.step}
        for m in run.metrics.values()
    ]
    return {
        "info": info,
        "data": {
            "metrics": metrics,
            "params": [{"key": k, "value": v} for k, v in run.params.items()],
            "tags": [
                {"key": k, "value": v}
                for k, v in run.tags.items()
                if k not in _HIDDEN and not k.startswith(INPUT_TAG)
            ],
        },
        "inputs": {"dataset_inputs": _inputs(run)},
    }


def _number(value: float) -> float | str:
    # MLflow's JSON spells the values JSON lacks as strings.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def load_run(ws: Workspace, run_id: str, *, full: bool = True) -> RunRecord:
    """The run MLflow names ``run_id``; RESOURCE_DOES_NOT_EXIST when there is none.
    Without ``full``, no files (what logging calls need)."""
    found = runs_repo.load_runs(ws.db, [run_id], full=full) if len(run_id) <= 64 else []
    if not found:
        raise _missing(f"Run '{run_id[:64]}' not found")
    return found[0]


def _run(ws: Workspace, body: Mapping[str, Any]) -> RunRecord:
    run_id = _text(body, "run_id", required=False) or _required(body, "run_uuid")
    return load_run(ws, run_id)


def _open_run(ws: Workspace, body: Mapping[str, Any]) -> RunRecord:
    run_id = _text(body, "run_id", required=False) or _required(body, "run_uuid")
    run = load_run(ws, run_id, full=False)
    if run.tags.get(LIFECYCLE_TAG) == "deleted":
        raise _invalid(f"The run {run.id} must be in the 'active' state.")
    return run


def create_run(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    experiment = _experiment(ws, _experiment_id(_text(body, "experiment_id", required=False)
                                                 or str(exp_repo.DEFAULT_ID)))  # fmt: skip
    if experiment.lifecycle != "active":
        raise _invalid(f"The experiment {experiment.id} must be in the 'active' state.")
    tags = pairs(body, "tags")
    name = _text(body, "run_name", required=False) or tags.get(RUN_NAME_TAG)
    user = _text(body, "user_id", required=False) or tags.get(USER_TAG) or "unknown"
    start = body.get("start_time")
    started = float(start) / 1000 if isinstance(start, int | float | str) and start else None
    try:
        run_id = runs_repo.create_run(ws.db, NewRun(
            name=name, command=(), cwd="", host="", user=user, pid=0, started=started,
        ))  # fmt: skip
    except (ValueError, UsageError) as e:
        raise _invalid(str(e)) from None
    extra = {EXPERIMENT_TAG: str(experiment.id)} | ({RUN_NAME_TAG: name} if name else {})
    _set_tags(ws, run_id, {**tags, **extra})
    return {"run": run_json(runs_repo.load_runs(ws.db, [run_id])[0])}


def get_run(ws: Workspace, query: Mapping[str, Any]) -> dict[str, Any]:
    return {"run": run_json(_run(ws, query))}


def update_run(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    run = _open_run(ws, body)
    status = _text(body, "status", required=False)
    name = _text(body, "run_name", required=False)
    if name:
        runs_repo.rename_run(ws.db, run.id, name)
        _set_tags(ws, run.id, {RUN_NAME_TAG: name})
    if status:
        if status not in STATUS_IN:
            raise _invalid(f"Invalid run status {status[:20]!r}")
        end = body.get("end_time")
        ended = float(end) / 1000 if isinstance(end, int | float | str) and end else None
        if STATUS_IN[status] != "running":
            runs_repo.finish_run(ws.db, run.id, STATUS_IN[status], ended=ended)
    return {"run_info": run_json(runs_repo.load_runs(ws.db, [run.id])[0])["info"]}


def delete_run(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    run = _run(ws, body)
    runs_repo.set_tags(ws.db, run.id, {LIFECYCLE_TAG: "deleted"})
    return {}


def restore_run(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    run = _run(ws, body)
    runs_repo.delete_tags(ws.db, run.id, [LIFECYCLE_TAG])
    return {}


def _set_tags(ws: Workspace, run_id: str, tags: Mapping[str, str]) -> None:
    try:
        runs_repo.set_tags(ws.db, run_id, tags)
    except UsageError as e:
        raise _invalid(e.message) from None


def set_tag(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    run = _open_run(ws, body)
    key = _required(body, "key")
    _set_tags(ws, run.id, {key: str(body.get("value") or "")})
    return {}


def delete_tag(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    run = _open_run(ws, body)
    key = _required(body, "key")
    if key not in run.tags:
        raise _missing(f"No tag with name: {key} in run with id {run.id}")
    runs_repo.delete_tags(ws.db, run.id, [key])
    return {}


def _params(ws: Workspace, run_id: str, params: Mapping[str, str]) -> None:
    try:
        runs_repo.log_params(ws.db, run_id, params)
    except ParamConflict as e:
        raise _invalid(f"Changing param values is not allowed. {e.message}") from None
    except UsageError as e:
        raise _invalid(e.message) from None


def log_param(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    run = _open_run(ws, body)
    key = _required(body, "key")
    _params(ws, run.id, {key: str(body.get("value") if body.get("value") is not None else "")})
    return {}


def _point(m: Mapping[str, Any]) -> tuple[str, int, float, float]:
    try:
        key = str(m["key"])
        value = float(m["value"])  # "NaN", "Infinity" too
        at = float(m.get("timestamp") or time.time() * 1000) / 1000
        step = int(m.get("step") or 0)
    except (KeyError, TypeError, ValueError):
        raise _invalid("a metric needs a key and a numeric value") from None
    return key, step, at, value


def _metrics(ws: Workspace, run_id: str, points: list[tuple[str, int, float, float]]) -> None:
    from tether.runs.record import check_key

    try:
        for key in {p[0] for p in points}:
            check_key("metric", key)
    except UsageError as e:
        raise _invalid(e.message) from None
    metrics_repo.insert_metrics(ws.db, run_id, points)


def log_metric(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    run = _open_run(ws, body)
    _metrics(ws, run.id, [_point(body)])
    return {}


MAX_BATCH_METRICS = 1_000  # MLflow's own limits for one log_batch
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100


def log_batch(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    run = _open_run(ws, body)
    metrics = list(body.get("metrics") or ())
    params = list(body.get("params") or ())
    tags = list(body.get("tags") or ())
    if (
        len(metrics) > MAX_BATCH_METRICS
        or len(params) > MAX_BATCH_PARAMS
        or (len(tags) > MAX_BATCH_TAGS)
    ):
        raise _invalid(
            f"A batch logging request can contain at most {MAX_BATCH_METRICS} metrics,"
            f" {MAX_BATCH_PARAMS} params and {MAX_BATCH_TAGS} tags"
        )
    if params:
        _params(ws, run.id, pairs(body, "params"))
    if tags:
        _set_tags(ws, run.id, pairs(body, "tags"))
    if metrics:
        _metrics(ws, run.id, [_point(m) for m in metrics])
    return {}


def log_inputs(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    """The datasets a run used, each kept as a tag ``tether.mlflow.input.DIGEST`` holding
    its name, digest and source (schema and profile when they fit)."""
    import orjson

    run = _open_run(ws, body)
    tags: dict[str, str] = {}
    for item in body.get("datasets") or ():
        dataset = item.get("dataset") if isinstance(item, dict) else None
        if not isinstance(dataset, dict) or not dataset.get("name"):
            raise _invalid("a dataset input needs a dataset with a name")
        kept: dict[str, Any] = {
            k: str(dataset[k]) for k in _DATASET_FIELDS if dataset.get(k) is not None
        }
        kept["tags"] = [t for t in item.get("tags") or () if isinstance(t, dict)]
        text = orjson.dumps(kept).decode()
        if len(text) > MAX_VALUE_LENGTH:
            kept.pop("profile", None)
            kept.pop("schema", None)
            text = orjson.dumps(kept).decode()
        key = f"{INPUT_TAG}{kept.get('digest') or kept['name']}"[:250]
        tags[key] = text
    _set_tags(ws, run.id, tags)
    return {}


def _inputs(run: RunRecord) -> list[dict[str, Any]]:
    import orjson

    out = []
    for key, value in run.tags.items():
        if key.startswith(INPUT_TAG):
            try:
                kept = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            tags = kept.pop("tags", [])
            out.append({"tags": tags, "dataset": kept})
    return out


def metric_history(ws: Workspace, query: Mapping[str, Any]) -> dict[str, Any]:
    run = _run(ws, query)
    key = _required(query, "metric_key")
    points = metrics_repo.metric_series(ws.db, run.id, key).get(key, [])
    limit, offset = _page(query, default=25_000)
    shown = points[offset : offset + limit]
    out: dict[str, Any] = {
        "metrics": [
            {"key": key, "value": _number(v), "timestamp": _millis(a), "step": s}
            for s, a, v in shown
        ]
    }
    if offset + limit < len(points):
        out["next_page_token"] = _token(offset + limit)
    return out


def search_runs(ws: Workspace, body: Mapping[str, Any]) -> dict[str, Any]:
    from tether.errors import FilterError
    from tether.mlflow.search import translate_filter, translate_order
    from tether.repositories.run_filter import list_runs

    ids = [str(_experiment_id(str(i))) for i in body.get("experiment_ids") or ()]
    terms = [f"tags.`{EXPERIMENT_TAG}` = '{i}'" for i in ids]
    if str(exp_repo.DEFAULT_ID) in ids:
        terms.append(f"tags.`{EXPERIMENT_TAG}` is null")
    view = str(body.get("run_view_type") or "ACTIVE_ONLY")
    where = [f"({' or '.join(terms)})"] if terms else []
    if view == "ACTIVE_ONLY":
        where.append(f"tags.`{LIFECYCLE_TAG}` is null")
    elif view == "DELETED_ONLY":
        where.append(f"tags.`{LIFECYCLE_TAG}` = 'deleted'")
    limit, offset = _page(body)
    try:
        text = translate_filter(str(body.get("filter") or ""))
        if text:
            where.append(f"({text})")
        order = translate_order([str(o) for o in body.get("order_by") or ()])
        found = list_runs(ws.db, where=" and ".join(where), sort=order, limit=limit,
                          offset=offset)  # fmt: skip
    except FilterError as e:
        raise _invalid(f"Invalid filter or order: {e.message}") from None
    # The listing's records hold what MLflow shows of a run (params, tags, last metrics).
    out: dict[str, Any] = {"runs": [run_json(r) for r in found.runs]}
    if offset + limit < found.matched:
        out["next_page_token"] = _token(offset + limit)
    return out
