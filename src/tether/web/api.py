"""The JSON API under ``/api`` that the pages' scripts use, and that scripts may call:
each route returns the library's own serializer, the same JSON as the CLI's ``--json``
(``docs/ui.md`` lists them)."""

from __future__ import annotations

from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from tether.api import kits, lineage, models, runs
from tether.errors import UsageError
from tether.workspace import Workspace

MAX_LIMIT = 100_000


class FastJSON(JSONResponse):
    """JSON written by orjson: every run of a 10,000-run listing in a fraction of the
    standard library's time. Same JSON (shortest float repr, UTF-8); the library's
    serializers already turn NaN into null."""

    def render(self, content: object) -> bytes:
        import orjson

        return orjson.dumps(content, default=_plain)


def _plain(value: object) -> object:
    # orjson takes exact floats only; a time read back from the database may be a
    # float subclass.
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _ws(request: Request) -> Workspace:
    return request.app.state.site.workspace  # type: ignore[no-any-return]


def _number(request: Request, name: str, default: float | None) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return float(text)
    except ValueError:
        raise UsageError(
            f"{name}={text[:20]!r} is not a number", hint=f"give {name} as a number"
        ) from None


def run_list(request: Request) -> Response:
    limit_text = request.query_params.get("limit", "50")
    limit = None if limit_text in ("all", "0") else int(_number(request, "limit", 50) or 50)
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit {limit} is out of range", hint="1–100000, or 'all'")
    query = runs.RunQuery(
        where=request.query_params.get("q") or None,
        sort=request.query_params.get("sort") or None,
        limit=limit,
        offset=int(_number(request, "offset", 0) or 0),
    )
    return FastJSON(runs.list_runs(_ws(request), query).to_json())


def run_columns(request: Request) -> Response:
    return FastJSON(runs.columns(_ws(request)).to_json())


def run_detail(request: Request) -> Response:
    return FastJSON(runs.show(_ws(request), request.path_params["ref"]).to_json())


def run_chart(request: Request) -> Response:
    axis = request.query_params.get("x", "step")
    if axis not in ("step", "time"):
        raise UsageError(f"x={axis[:20]!r} is not an axis", hint="x=step or x=time")
    query = runs.ChartQuery(
        key=request.path_params["key"],
        axis="step" if axis == "step" else "time",
        low=_number(request, "lo", None),
        high=_number(request, "hi", None),
        width=int(_number(request, "width", 1000) or 1000),
    )
    series = runs.chart(_ws(request), request.path_params["ref"], query)
    return FastJSON(series.to_json())


def run_metrics(request: Request) -> Response:
    key = request.query_params.get("key") or None
    return FastJSON(runs.metrics(_ws(request), request.path_params["ref"], key).to_json())


def run_log(request: Request) -> Response:
    chunks: Iterator[bytes] = runs.log(_ws(request), request.path_params["ref"])
    # text/plain with nosniff: a browser shows a log as text even if it holds markup.
    return StreamingResponse(
        chunks,
        media_type="text/plain; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def compare(request: Request) -> Response:
    refs = request.query_params.getlist("run")
    everything = request.query_params.get("all") == "1"
    return FastJSON(runs.compare_view(_ws(request), refs).to_json(everything=everything))


def env_diff(request: Request) -> Response:
    ws = _ws(request)
    found = runs.environment_diff(ws, request.path_params["ref"], request.path_params["other"])
    return FastJSON(found.to_json())


def model_catalog(request: Request) -> Response:
    return FastJSON(models.catalog(_ws(request)).to_json())


def model_overview(request: Request) -> Response:
    return FastJSON(models.overview(_ws(request), request.path_params["name"]).to_json())


def kit_detail(request: Request) -> Response:
    return FastJSON(kits.contents(_ws(request), request.path_params["ref"]).to_json())


def kit_diff(request: Request) -> Response:
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    if not a or not b:
        raise UsageError("name two ModelKits", hint="?a=REPO:TAG&b=REPO:TAG")
    return FastJSON(kits.diff(_ws(request), a, b).to_json())


def lineage_graph(request: Request) -> Response:
    subject = request.query_params.get("subject", "")
    if not subject:
        raise UsageError("name a subject", hint="?subject=recs:production")
    depth = _number(request, "depth", None)
    trace = lineage.Trace(
        subject,
        request.query_params.get("downstream") == "1",
        None if depth is None else int(depth),
    )
    return FastJSON(lineage.trace(_ws(request), trace).to_json())


async def not_found(request: Request) -> Response:
    return FastJSON(
        {"error": "http", "message": f"no API route {request.url.path}", "hint": "see docs/ui.md"},
        status_code=404,
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/runs", run_list, name="runs"),
        Route("/runs/columns", run_columns, name="run_columns"),
        Route("/runs/{ref}", run_detail, name="run"),
        Route("/runs/{ref}/metrics", run_metrics, name="run_metrics"),
        Route("/runs/{ref}/metrics/{key:path}/chart", run_chart, name="run_chart"),
        Route("/runs/{ref}/log", run_log, name="run_log"),
        Route("/runs/{ref}/env-diff/{other}", env_diff, name="env_diff"),
        Route("/compare", compare, name="compare"),
        Route("/models", model_catalog, name="models"),
        Route("/models/{name}", model_overview, name="model"),
        Route("/kits/diff", kit_diff, name="kit_diff"),
        Route("/kits/{ref:path}", kit_detail, name="kit"),
        Route("/lineage", lineage_graph, name="lineage"),
        Route("/{rest:path}", not_found),
    ]
