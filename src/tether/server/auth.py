"""Who is asking: a bearer token (scripts, clients) or the session cookie a browser got
from the login page. Pure ASGI middleware, so no route can be reached around it; the
few public paths (health, readiness, login, the stylesheet) are listed here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from tether.errors import TetherError, Unauthenticated
from tether.team import accounts
from tether.team.deployment import Deployment
from tether.web.app import status_of

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
SESSION = "tether_session"
PUBLIC = ("/healthz", "/readyz", "/login", "/static/")


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION)


class Authenticate:
    def __init__(self, app: ASGIApp, team: Deployment) -> None:
        self.app = app
        self.team = team

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in PUBLIC[:3] or (path.startswith(PUBLIC[3]) and ".." not in path):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = presented_token(request)
        try:
            if token is None:
                raise Unauthenticated("sign in first", hint="send 'Authorization: Bearer TOKEN'")
            user = await run_in_threadpool(accounts.authenticate, self.team, token)
        except Unauthenticated as e:
            response = _refusal(request, e)
            await response(scope, receive, send)
            return
        except TetherError as e:
            # The database briefly away (a restart): 503, which clients retry, never a
            # 500 or a 401 that would send them to sign in again.
            await JSONResponse(e.to_json(), status_code=status_of(e))(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


def _refusal(request: Request, error: Unauthenticated) -> Response:
    wants_page = "text/html" in request.headers.get("accept", "") and (
        "authorization" not in request.headers
    )
    if wants_page and request.method in ("GET", "HEAD"):
        response: Response = RedirectResponse("/login", status_code=303)
        if request.cookies.get(SESSION):
            response.delete_cookie(SESSION, path="/")
        return response
    return JSONResponse(
        error.to_json(),
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="tether"'},
    )
