"""CSRF protection for the few actions that change state (double-submit token).

A page carries a random token in a cookie (HttpOnly, SameSite=Strict) and in each form;
a POST is accepted only when both are present and equal, and when its ``Origin`` (if
the browser sent one) is this server. Another site can neither read the token nor make
the browser send the cookie along with its own form.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from tether.errors import TetherError

COOKIE = "tether_csrf"
FIELD = "csrf"


class CsrfRefused(TetherError):
    code = "csrf"


class Csrf:
    def token(self, request: Request) -> str:
        existing = request.cookies.get(COOKIE)
        if existing and len(existing) == 43:
            return existing
        fresh = getattr(request.state, "csrf_token", None)
        if fresh is None:
            fresh = secrets.token_urlsafe(32)
            request.state.csrf_token = fresh
        return str(fresh)

    def set_cookie(self, request: Request, response: Response) -> None:
        fresh = getattr(request.state, "csrf_token", None)
        if fresh is not None:
            response.set_cookie(
                COOKIE,
                fresh,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path="/",
            )

    def check(self, request: Request, submitted: str | None) -> None:
        cookie = request.cookies.get(COOKIE)
        if not cookie or not submitted or not hmac.compare_digest(cookie, submitted):
            raise CsrfRefused(
                "the form's security token is missing or stale",
                hint="reload the page and submit the form again",
            )
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise CsrfRefused(
                f"a form from {origin[:80]} may not change this project",
                hint="submit the form from the tether ui page itself",
            )
