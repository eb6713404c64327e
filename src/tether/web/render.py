"""HTML rendering: the Jinja2 environment with autoescaping on, and the formatting
helpers pages share (times, sizes, numbers). Everything a run recorded reaches a page
through ``{{ }}``, which escapes it; no template marks user data safe."""

from __future__ import annotations

import math
import time
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from tether import units

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(when=when, seconds=seconds, size=size, number=number)
    return env


def when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def seconds(value: float | None) -> str:
    return "" if value is None else units.duration(value)


def size(n: int | float | None) -> str:
    return "" if n is None else units.size(n)


def number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan" if value is not None else ""
    return f"{value:.6g}"


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    site = request.app.state.site

    def url(route: str, /, **params: Any) -> str:
        return str(request.url_for(route, **params).path)

    html = (
        environment()
        .get_template(template)
        .render(
            url=url,
            static=lambda path: str(request.url_for("static", path=path).path),
            api_base=request.scope.get("root_path", "") + "/api/",
            project=site.project,
            writable=site.writable,
            csrf=site.csrf.token(request),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    site.csrf.set_cookie(request, response)
    return response
