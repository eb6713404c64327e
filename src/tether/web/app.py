"""The ASGI app: routes, the error mapping and the site's settings.

One Workspace serves every request; Starlette runs the (synchronous) handlers in its
thread pool and the database gives each thread its own connection. Errors from the
library become a status and a message (JSON under ``/api``, a page elsewhere); anything
else is a 500 that says to look at the server's log, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tether.errors import (
    DatabaseError,
    FilterError,
    Forbidden,
    LineageError,
    LockTimeout,
    ModelError,
    RunError,
    StreamGap,
    TagConflict,
    TetherError,
    TooLarge,
    Unauthenticated,
    UploadOffset,
    UsageError,
)
from tether.web import api, mlflow_api, pages
from tether.web.csrf import Csrf, CsrfRefused
from tether.workspace import Workspace

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("tether.web")


class ReadOnly(TetherError):
    code = "read-only"


@dataclass(frozen=True)
class Site:
    """What every handler needs besides the request."""

    workspace: Workspace
    writable: bool = False  # actions that change state (alias moves, deletes) allowed
    csrf: Csrf = field(default_factory=Csrf)
    label: str | None = None  # how the header names the project (default: its folder)
    # Raises Forbidden when the request's user may not move the alias (the team server's
    # protected aliases); None: anyone who may write may.
    alias_guard: Callable[[Mapping[str, Any], str], None] | None = None

    def guard_alias(self, scope: Mapping[str, Any], alias: str) -> None:
        if self.alias_guard is not None:
            self.alias_guard(scope, alias)

    @property
    def project(self) -> str:
        return self.label or str(self.workspace.root)

    def require_writable(self) -> None:
        if not self.writable:
            raise ReadOnly(
                "this UI was started read-only",
                hint="restart it with 'tether ui --writable' to move aliases or delete runs",
            )


def status_of(error: TetherError) -> int:
    if isinstance(error, LookupError | LineageError | FileNotFoundError):
        return 404
    if isinstance(error, Unauthenticated):
        return 401
    if isinstance(error, CsrfRefused | ReadOnly | Forbidden):
        return 403
    if isinstance(error, DatabaseError | LockTimeout):
        return 503
    if isinstance(error, TooLarge):
        return 413
    if isinstance(error, UsageError | FilterError):
        return 400
    if isinstance(error, TagConflict | ModelError | RunError | StreamGap | UploadOffset):
        return 409  # refused by a rule: an alias that points there, a running run
    return 400


def _wants_json(request: Request) -> bool:
    # The path inside this app (under the team server it is mounted at /p/NAME, which
    # app_root_path holds; root_path has by now grown by the inner mounts, /api too).
    route = request.url.path[len(request.scope.get("app_root_path", "")) :]
    return route.startswith(("/api/", "/sync/"))


async def _tether_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TetherError)
    status = status_of(exc)
    if _wants_json(request):
        return JSONResponse(exc.to_json(), status_code=status)
    return pages.error_page(request, status, exc.message, exc.hint)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "no such page" if exc.status_code == 404 else str(exc.detail)
    if _wants_json(request):
        return JSONResponse(
            {"error": "http", "message": message, "hint": None}, status_code=exc.status_code
        )
    return pages.error_page(request, exc.status_code, message, "see the Runs page")


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s", request.url.path, exc_info=exc)
    message = "tether failed on this request"
    hint = "the details are in the terminal that runs 'tether ui'"
    if _wants_json(request):
        return JSONResponse({"error": "internal", "message": message, "hint": hint}, 500)
    return pages.error_page(request, 500, message, hint)


def routes() -> list[BaseRoute]:
    return [
        Route("/", pages.home, name="home"),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/runs", pages.runs_page, name="runs"),
        Route("/runs/{ref}", pages.run_page, name="run"),
        Route("/runs/{ref}/env-diff", pages.env_diff_page, name="env_diff"),
        Route("/runs/{ref}/delete", pages.run_delete, methods=["POST"], name="run_delete"),
        Route("/compare", pages.compare_page, name="compare"),
        Route("/models", pages.models_page, name="models"),
        Route("/models/{name}", pages.model_page, name="model"),
        Route("/models/{name}/aliases", pages.alias_set, methods=["POST"], name="alias_set"),
        Route(
            "/models/{name}/aliases/{alias}/rollback",
            pages.alias_rollback,
            methods=["POST"],
            name="alias_rollback",
        ),
        Route("/kits/diff", pages.kit_diff_page, name="kit_diff"),
        Route("/kits/{ref:path}", pages.kit_page, name="kit"),
        Route("/lineage", pages.lineage_page, name="lineage"),
        # MLflow's REST API, before tether's own /api (which answers anything else).
        Mount("/api/2.0/mlflow", routes=mlflow_api.routes()),
        Mount("/api/2.0/mlflow-artifacts", routes=mlflow_api.artifact_routes()),
        Mount("/api", routes=api.routes(), name="api"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


ERROR_HANDLERS: dict[Any, Any] = {
    TetherError: _tether_error,
    HTTPException: _http_error,
    Exception: _crash,
}


def create_app(site: Site) -> Starlette:
    app = Starlette(routes=routes(), exception_handlers=ERROR_HANDLERS)
    app.state.site = site
    return app
