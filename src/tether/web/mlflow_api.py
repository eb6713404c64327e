"""``/api/2.0/mlflow/…``: MLflow's tracking REST API, for an unmodified ``mlflow`` client
(``MLFLOW_TRACKING_URI=http://HOST:PORT``, or ``…/p/NAME`` on the team server).

Each route parses the request, calls one function of ``tether.mlflow.tracking`` and
answers its JSON; refusals take MLflow's shape, ``{"error_code", "message"}``, with its
HTTP status. Anything not served here answers ``ENDPOINT_NOT_FOUND``. Writes need a UI
started ``--writable`` (the team server's are), and a JSON body: a browser page on
another site cannot send one without asking first, which this server never allows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tether.errors import TetherError
from tether.mlflow import logged_models, registry, tracking
from tether.mlflow.request import MlflowError
from tether.workspace import Workspace

MAX_BODY = 16 << 20
Handler = Callable[[Workspace, Mapping[str, Any]], dict[str, Any]]

# (path under /api/2.0/mlflow, method, handler, changes state)
ENDPOINTS: tuple[tuple[str, str, Handler, bool], ...] = (
    ("/experiments/create", "POST", tracking.create_experiment, True),
    ("/experiments/get", "GET", tracking.get_experiment, False),
    ("/experiments/get-by-name", "GET", tracking.get_experiment_by_name, False),
    ("/experiments/search", "POST", tracking.search_experiments, False),
    ("/experiments/search", "GET", tracking.search_experiments, False),
    ("/experiments/delete", "POST", tracking.delete_experiment, True),
    ("/experiments/restore", "POST", tracking.restore_experiment, True),
    ("/experiments/update", "POST", tracking.update_experiment, True),
    ("/experiments/set-experiment-tag", "POST", tracking.set_experiment_tag, True),
    ("/runs/create", "POST", tracking.create_run, True),
    ("/runs/get", "GET", tracking.get_run, False),
    ("/runs/update", "POST", tracking.update_run, True),
    ("/runs/delete", "POST", tracking.delete_run, True),
    ("/runs/restore", "POST", tracking.restore_run, True),
    ("/runs/log-metric", "POST", tracking.log_metric, True),
    ("/runs/log-parameter", "POST", tracking.log_param, True),
    ("/runs/log-batch", "POST", tracking.log_batch, True),
    ("/runs/log-inputs", "POST", tracking.log_inputs, True),
    ("/runs/outputs", "POST", logged_models.log_outputs, True),
    ("/runs/set-tag", "POST", tracking.set_tag, True),
    ("/runs/delete-tag", "POST", tracking.delete_tag, True),
    ("/runs/search", "POST", tracking.search_runs, False),
    ("/metrics/get-history", "GET", tracking.metric_history, False),
    ("/logged-models", "POST", logged_models.create_logged_model, True),
    ("/logged-models/search", "POST", logged_models.search_logged_models, False),
    ("/logged-models/{model_id}", "GET", logged_models.get_logged_model, False),
    ("/logged-models/{model_id}", "PATCH", logged_models.finalize_logged_model, True),
    ("/logged-models/{model_id}", "DELETE", logged_models.delete_logged_model, True),
    ("/logged-models/{model_id}/tags", "PATCH", logged_models.set_logged_model_tags, True),
    ("/logged-models/{model_id}/tags/{tag_key}", "DELETE",
     logged_models.delete_logged_model_tag, True),
    ("/logged-models/{model_id}/params", "POST", logged_models.log_logged_model_params, True),
    ("/registered-models/create", "POST", registry.create_registered_model, True),
    ("/registered-models/get", "GET", registry.get_registered_model, False),
    ("/registered-models/update", "PATCH", registry.update_registered_model, True),
    ("/registered-models/delete", "DELETE", registry.delete_registered_model, True),
    ("/registered-models/search", "GET", registry.search_registered_models, False),
    ("/registered-models/set-tag", "POST", registry.set_registered_model_tag, True),
    ("/registered-models/delete-tag", "DELETE", registry.delete_registered_model_tag, True),
    ("/registered-models/alias", "POST", registry.set_alias, True),
    ("/registered-models/alias", "DELETE", registry.delete_alias, True),
    ("/registered-models/alias", "GET", registry.get_by_alias, False),
    ("/model-versions/create", "POST", registry.create_model_version, True),
    ("/model-versions/get", "GET", registry.get_model_version, False),
    ("/model-versions/update", "PATCH", registry.update_model_version, True),
    ("/model-versions/delete", "DELETE", registry.delete_model_version, True),
    ("/model-versions/search", "GET", registry.search_model_versions, False),
    ("/model-versions/get-download-uri", "GET", registry.download_uri, False),
    ("/model-versions/set-tag", "POST", registry.set_model_version_tag, True),
    ("/model-versions/delete-tag", "DELETE", registry.delete_model_version_tag, True),
    ("/model-versions/transition-stage", "POST", registry.transition_stage, True),
)  # fmt: skip
# POSTs that only read: a read grant does on the team server.
QUERIES = frozenset(f"/api/2.0/mlflow{p}" for p, m, _, w in ENDPOINTS if m == "POST" and not w)

QUIET = frozenset({"/runs/log-metric", "/runs/log-parameter", "/runs/log-batch",
                   "/runs/set-tag", "/runs/delete-tag", "/runs/log-inputs"})  # fmt: skip
_CODES = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "RESOURCE_DOES_NOT_EXIST", 409: "INVALID_STATE", 413: "INVALID_PARAMETER_VALUE",
          503: "TEMPORARILY_UNAVAILABLE"}  # fmt: skip


def _error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


async def _request_body(request: Request, method: str) -> Mapping[str, Any]:
    if method == "GET":
        body: dict[str, Any] = {}
        for key in request.query_params:
            values = request.query_params.getlist(key)
            body[key] = values if len(values) > 1 or key.endswith("_ids") else values[0]
        return {**body, **request.path_params}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise MlflowError("BAD_REQUEST", "the body must be application/json")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise MlflowError("INVALID_PARAMETER_VALUE", "the request is too large", status=413)
    import orjson

    try:
        parsed = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise MlflowError("MALFORMED_REQUEST", "the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise MlflowError("MALFORMED_REQUEST", "the body must be a JSON object")
    return {**parsed, **request.path_params}


def _route(path: str, method: str, handler: Handler, writes: bool) -> Route:
    async def endpoint(request: Request) -> Response:
        site = request.app.state.site
        state = request.scope.get("state")
        if isinstance(state, dict) and path in QUIET:
            state["audit"] = None  # the team server audits a run's start and end, not each log
        try:
            if writes and not site.writable:
                raise MlflowError(
                    "PERMISSION_DENIED",
                    "this tether ui is read-only: restart it with 'tether ui --writable'",
                    status=403,
                )
            body = await _request_body(request, method)
            result = await run_in_threadpool(handler, site.workspace, body)
        except TetherError as e:
            return _refused(e)
        return JSONResponse(result)

    return Route(path, endpoint, methods=[method])


def _refused(e: TetherError) -> JSONResponse:
    from tether.web.app import status_of

    if isinstance(e, MlflowError):
        return _error(e.error_code, e.message, e.status)
    status = status_of(e)
    return _error(_CODES.get(status, "INTERNAL_ERROR"), e.message, status)


async def artifact_list(request: Request) -> Response:
    from tether.mlflow import artifacts

    try:
        where = artifacts.parse(request.query_params.get("path", ""))
    except TetherError as e:
        return _refused(e)
    return await _listing(request, where, full=False)


async def model_artifact_list(request: Request) -> Response:
    """A logged model's files (``ListLoggedModelArtifacts``)."""
    from tether.mlflow import artifacts

    try:
        path = artifacts.clean(request.query_params.get("artifact_directory_path", ""))
    except TetherError as e:
        return _refused(e)
    where = artifacts.ArtifactPath(request.path_params["model_id"], path, model=True)
    return await _listing(request, where, full=True)


async def _listing(request: Request, where: Any, *, full: bool) -> Response:
    from tether.mlflow import artifacts

    try:
        found = await run_in_threadpool(artifacts.listing, request.app.state.site.workspace, where)
    except TetherError as e:
        return _refused(e)
    files = []
    for entry in found:
        shown = entry.path if full else entry.path.rsplit("/", 1)[-1]
        item: dict[str, Any] = {"path": shown, "is_dir": entry.is_dir}
        if entry.size is not None:
            item["file_size"] = entry.size
        files.append(item)
    return JSONResponse({"files": files})


async def artifact(request: Request) -> Response:
    """GET: the artifact's bytes; PUT: store them."""
    import tempfile

    from starlette.responses import StreamingResponse

    from tether.mlflow import artifacts

    site = request.app.state.site
    try:
        where = artifacts.parse(request.path_params["path"])
        if request.method == "GET":
            chunks = await run_in_threadpool(artifacts.read, site.workspace, where)
            return StreamingResponse(chunks, media_type="application/octet-stream")
        if not site.writable:
            raise MlflowError("PERMISSION_DENIED", "this tether ui is read-only",
                                       status=403)  # fmt: skip
        # Spooled (in memory up to 8 MiB): the store reads it in a thread.
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            async for chunk in request.stream():
                spool.write(chunk)
            spool.seek(0)
            await run_in_threadpool(artifacts.store, site.workspace, where, _read(spool))
    except TetherError as e:
        return _refused(e)
    return JSONResponse({})


def _read(f: Any) -> Any:
    while chunk := f.read(1 << 20):
        yield chunk


def artifact_routes() -> list[BaseRoute]:
    return [
        Route("/artifacts", artifact_list, methods=["GET"]),
        Route("/artifacts/{path:path}", artifact, methods=["GET", "PUT"]),
        Route("/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]


async def not_found(request: Request) -> Response:
    path = request.url.path
    return _error(
        "ENDPOINT_NOT_FOUND",
        f"tether does not serve MLflow's {request.method} {path[-120:]}"
        " (see docs/migrating.md for what it does)",
        404,
    )


def routes() -> list[BaseRoute]:
    found: list[BaseRoute] = [_route(*e) for e in ENDPOINTS]
    found.append(Route("/logged-models/{model_id}/artifacts/directories", model_artifact_list,
                       methods=["GET"]))  # fmt: skip
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    found.append(Route("/{rest:path}", not_found, methods=methods))
    return found
