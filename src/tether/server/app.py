"""The team server's ASGI app.

    /healthz, /readyz            liveness; readiness (the database answers, schema current)
    /login, /logout              browser sessions: a token in, an HttpOnly cookie out
    /, /api/projects             the projects this user was granted
    /p/NAME/…                    the project's UI and /api, exactly as 'tether ui' serves
                                 them; reads need a read grant, changes a write grant

Every other path needs a token (``auth.Authenticate`` wraps the whole app). A project the
user was not granted answers 404, as one that does not exist. Every change made through
a project (a POST that succeeded) is written to the audit table with who and from where.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Mapping, MutableMapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tether.errors import TetherError, Unauthenticated
from tether.server.auth import SESSION, Authenticate, Scope
from tether.server.sync import QUERIES, create_sync_app
from tether.team import accounts, projects
from tether.team.audit import Actor, record
from tether.team.deployment import Deployment
from tether.team.records import Role, User
from tether.web.app import ERROR_HANDLERS as _ERRORS
from tether.web.app import STATIC, Site, create_app, status_of
from tether.web.mlflow_api import QUERIES as MLFLOW_QUERIES

log = logging.getLogger("tether.server")
TEMPLATES = Path(__file__).parent / "templates"


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True)
    )


def _team(request: Request) -> Deployment:
    return request.app.state.team  # type: ignore[no-any-return]


def _user(request: Request) -> User:
    return request.scope["state"]["user"]  # type: ignore[no-any-return]


def _remote(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def readyz(request: Request) -> Response:
    from tether.db.migrations import state

    try:
        current = not state(_team(request).team).pending
    except TetherError as e:
        return JSONResponse({"status": "unavailable", "message": e.message}, status_code=503)
    if not current:
        return JSONResponse(
            {"status": "unavailable", "message": "the database needs 'tether server migrate'"}, 503
        )
    return JSONResponse({"status": "ready"})


async def login(request: Request) -> Response:
    if request.method == "GET":
        return HTMLResponse(_templates().get_template("login.html").render(error=None))
    body = (await request.body())[: 8 << 10].decode("utf-8", "replace")
    token = (parse_qs(body).get("token") or [""])[0]
    try:
        await run_in_threadpool(accounts.authenticate, _team(request), token)
    except Unauthenticated as e:
        page = _templates().get_template("login.html").render(error=e.message)
        return HTMLResponse(page, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION,
        token,
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
        path="/",
        max_age=12 * 3600,
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION, path="/")
    return response


def home(request: Request) -> Response:
    visible = projects.visible(_team(request), _user(request))
    html = (
        _templates()
        .get_template("projects.html")
        .render(user=_user(request).name, projects=visible)
    )
    return HTMLResponse(html)


def project_list(request: Request) -> Response:
    visible = projects.visible(_team(request), _user(request))
    return JSONResponse(
        {
            "user": _user(request).name,
            "projects": [{"name": n, "role": r} for n, r in visible],
        }
    )


class Projects:
    """``/p/NAME/…``: authorize, then hand the request to the project's UI app."""

    def __init__(self, team: Deployment) -> None:
        self.team = team
        self._apps: dict[str, Starlette] = {}
        self._lock = threading.Lock()
        self._sync = create_sync_app(team, _ERRORS)

    def _app(self, name: str) -> Starlette:
        with self._lock:
            app = self._apps.get(name)
            if app is None:
                site = Site(
                    self.team.project(name),
                    writable=True,
                    label=name,
                    alias_guard=functools.partial(self._guard_alias, name),
                )
                app = self._apps[name] = create_app(site)
            return app

    def _guard_alias(self, project: str, scope: Mapping[str, Any], alias: str) -> None:
        projects.may_move(self.team, scope["state"]["user"], project, alias)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        name = scope["path_params"]["project"]
        user: User = scope["state"]["user"]
        method = scope.get("method", "GET")
        route = scope.get("path", "")[len(scope.get("root_path", "")) :]
        reads = method in ("GET", "HEAD") or route in QUERIES or route in MLFLOW_QUERIES
        need: Role = "read" if reads else "write"
        try:
            await run_in_threadpool(projects.authorize, self.team, user, name, need)
        except TetherError as e:
            response = JSONResponse(
                e.to_json(),
                status_code=status_of(e),
            )
            await response(scope, receive, send)
            return
        scope["state"]["project"] = name
        app = self._sync if route.startswith("/sync/") else self._app(name)
        # Links are the project app's own: url_for looks names up in scope["router"]
        # (which the outer app set first) and prefixes app_root_path (the outer app's).
        scope = {**scope, "router": app.router, "app_root_path": scope.get("root_path", "")}
        if need == "read":
            await app(scope, receive, send)
            return
        status: list[int] = []

        async def watch(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await app(scope, receive, watch)
        # A route may name its change itself, or ask for none: a running run's stream is
        # audited where it starts and ends, not at each of its batches.
        action = "sync.push" if app is self._sync else f"ui.{method.lower()}"
        entry = scope["state"].pop("audit", (action, f"{name}:{scope.get('path', '')}"))
        if status and status[0] < 400 and entry is not None:
            actor = Actor(user.name, _remote(scope))
            await run_in_threadpool(record, self.team, actor, entry[0], entry[1], {})


def _lifespan(team: Deployment) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        team.close()

    return lifespan


def create_server_app(team: Deployment) -> Any:
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/", home),
            Route("/api/projects", project_list),
            Mount("/p/{project}", app=Projects(team)),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=_lifespan(team),
    )
    app.state.team = team
    return Authenticate(app, team)


def factory() -> Any:
    """For uvicorn workers (``--workers N``): the deployment from the environment the
    ``tether server`` command set."""
    import os

    env = os.environ
    cache = env.get("TETHER_SERVER_CACHE")
    team = Deployment(
        env["TETHER_SERVER_DB"],
        env["TETHER_SERVER_BLOBS"],
        cache=Path(cache) if cache else None,
        part_mb=int(env.get("TETHER_SERVER_PART_MB", "64")),
    )
    return create_server_app(team)
