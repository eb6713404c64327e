"""The HTML pages: each parses its query, calls one use case and renders a template.
The page state lives in the URL (filter, sort, columns, page), so a view can be shared.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tether.api import kits, lineage, models, runs
from tether.errors import FilterError, TetherError, UsageError
from tether.runs.record import RunRecord
from tether.team.sync import SYNCED_BY
from tether.web.render import number, page, seconds, when
from tether.workspace import Workspace

if TYPE_CHECKING:
    from tether.modelkit.catalog import KitSummary
    from tether.web.app import Site

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DEFAULT_COLUMNS = 8  # chosen columns when the URL names none
LOG_TAIL = 64 << 10
# Columns every runs table has: (key as the filter grammar names it, label, numeric).
FIXED = (("name", "name", False), ("status", "status", False), ("started", "started", False),
         ("duration", "duration", True), ("user", "user", False),
         ("commit", "commit", False))  # fmt: skip


def _ws(request: Request) -> Workspace:
    return request.app.state.site.workspace  # type: ignore[no-any-return]


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise UsageError(
            f"{name}={text[:20]!r} is not a number", hint=f"{name} takes {low}–{high}"
        ) from None
    return max(low, min(high, value))


def _state_link(request: Request, base: str) -> Callable[..., str]:
    """``state(key=value, …)``: this page's URL with some of its query changed (None
    removes a key); lists (several ``col``) are kept."""
    current = list(request.query_params.multi_items())

    def link(**changes: Any) -> str:
        kept = [(k, v) for k, v in current if k not in changes]
        for k, v in changes.items():
            if v is not None and v != "":
                kept.append((k, str(v)))
        return base + ("?" + urlencode(kept) if kept else "")

    return link


def home(request: Request) -> Response:
    return RedirectResponse(request.url_for("runs").path, status_code=307)


# -- runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    numeric: bool
    arrow: str
    next_sort: str


@dataclass(frozen=True)
class Cell:
    text: str
    numeric: bool = False
    href: str | None = None
    css: str = ""
    title: str = ""


@dataclass(frozen=True)
class Row:
    id: str
    cells: tuple[Cell, ...]


def _columns(sort: str, chosen: list[str], available: set[str]) -> list[Column]:
    current, descending = sort.lstrip("-"), sort.startswith("-")
    specs = [(k, label, numeric) for k, label, numeric in FIXED]
    specs += [(k, k, k.startswith("metrics.")) for k in chosen if k in available]
    out = []
    for key, label, numeric in specs:
        if key == current:
            arrow, next_sort = (" ↓", key) if descending else (" ↑", "-" + key)
        else:
            arrow, next_sort = "", ("-" + key if numeric or key == "started" else key)
        out.append(Column(key, label, numeric, arrow, next_sort))
    return out


def _cell(run: RunRecord, key: str, run_href: str) -> Cell:
    if key == "name":
        return Cell(run.name or run.id[:12], href=run_href, title=run.id)
    if key == "status":
        return Cell(run.status, css=f"status-{run.status}")
    if key == "started":
        return Cell(when(run.started))
    if key == "duration":
        return Cell(seconds(run.duration), numeric=True)
    if key == "user":
        # Who ran it, and on a team server the account that sent it, when another.
        sent_by = run.tags.get(SYNCED_BY)
        shown = run.user if sent_by in (None, run.user) else f"{run.user} ({sent_by})"
        return Cell(shown, title=f"sent by {sent_by}" if sent_by else run.host)
    if key == "commit":
        commit = run.code.commit or ""
        return Cell(commit[:10] + ("+" if run.code.dirty else ""), css="mono", title=commit)
    kind, _, name = key.partition(".")
    if kind == "metrics":
        m = run.metrics.get(name)
        return Cell("" if m is None else number(m.last), numeric=True)
    source = run.params if kind == "params" else run.tags
    value = source.get(name)
    return Cell("" if value is None else value, title=value or "")


def runs_page(request: Request) -> Response:
    ws = _ws(request)
    q = request.query_params.get("q", "").strip()
    sort = request.query_params.get("sort", "").strip() or "-started"
    per = _int(request, "per", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page_no = _int(request, "page", 1, 1, 1_000_000)
    available = list(runs.columns(ws).fields)
    chosen = request.query_params.getlist("col")
    if not chosen:
        chosen = available[:DEFAULT_COLUMNS]
    filter_error: TetherError | None = None
    try:
        listing = runs.list_runs(
            ws, runs.RunQuery(where=q or None, sort=sort, limit=per, offset=(page_no - 1) * per)
        )
    except FilterError as e:
        filter_error = e
        listing = runs.RunListing((), 0)
    columns = _columns(sort, chosen, set(available))
    # One route lookup for the page, not one per cell.
    base = str(request.url_for("runs").path)
    rows = []
    for r in listing.runs:
        href = f"{base}/{quote(r.id)}"
        rows.append(Row(r.id, tuple(_cell(r, c.key, href) for c in columns)))
    return page(
        request,
        "runs.html",
        {
            "q": q,
            "sort": sort,
            "page": page_no,
            "first": (page_no - 1) * per,
            "runs": listing.runs,
            "rows": rows,
            "matched": listing.matched,
            "columns": columns,
            "chosen": chosen,
            "available": available,
            "filter_error": filter_error,
            "state": _state_link(request, str(request.url_for("runs").path)),
        },
        status_code=400 if filter_error else 200,
    )


@dataclass(frozen=True)
class DiffLine:
    text: str
    css: str


def _diff_lines(text: str | None) -> list[DiffLine]:
    if not text:
        return []
    out = []
    for line in text.splitlines():
        css = ""
        if line.startswith("+") and not line.startswith("+++"):
            css = "diff-add"
        elif line.startswith("-") and not line.startswith("---"):
            css = "diff-del"
        elif line.startswith("@@"):
            css = "diff-hunk"
        out.append(DiffLine(line, css))
    return out


# The first draw of a run's charts asks for this many points, a width the server knows
# before any layout, so the page can name the requests in its head (rel=preload) and the
# browser fetches the data while it reads the page rather than after its scripts ran.
CHART_WIDTH = 1000
MAX_PRELOADS = 20
URI_COMPONENT_SAFE = "!*'()~"  # what JavaScript's encodeURIComponent leaves as it is


def run_page(request: Request) -> Response:
    ws = _ws(request)
    view = runs.view(ws, request.path_params["ref"], log_tail=LOG_TAIL)
    detail = view.detail
    r = detail.run
    return page(
        request,
        "run.html",
        {
            "run": r,
            "env": detail.environment,
            "links": detail.links,
            "command": " ".join(r.command),
            "diff_lines": _diff_lines(view.code_diff),
            "log_text": None if view.log is None else view.log.text,
            "log_size": 0 if view.log is None else view.log.size,
            "log_truncated": view.log is not None and view.log.truncated,
            "chart_width": CHART_WIDTH,
            "chart_urls": [
                f"runs/{quote(r.id, safe='')}/metrics/{quote(k, safe=URI_COMPONENT_SAFE)}"
                f"/chart?width={CHART_WIDTH}&x=step"
                for k in list(r.metrics)[:MAX_PRELOADS]
            ],
        },
    )


def env_diff_page(request: Request) -> Response:
    ws = _ws(request)
    against = request.query_params.get("against", "").strip()
    if not against:
        raise UsageError("name a run to compare the environment with", hint="a run id or name")
    a = runs.get(ws, request.path_params["ref"])
    b = runs.get(ws, against)
    diff = runs.environment_diff(ws, a.id, b.id)
    return page(request, "env_diff.html", {"a": a.id, "b": b.id, "diff": diff})


@dataclass(frozen=True)
class Labeled:
    id: str
    name: str | None
    label: str


def compare_page(request: Request) -> Response:
    ws = _ws(request)
    refs = [r for r in request.query_params.getlist("run") if r.strip()]
    if len(refs) < 2:
        raise UsageError(
            "pick at least two runs to compare", hint="tick their boxes on the Runs page"
        )
    everything = request.query_params.get("all") == "1"
    view = runs.compare_view(ws, refs)
    comparison = view.comparison
    rows = comparison.rows if everything else tuple(comparison.differing())
    labeled = [Labeled(r.id, r.name, r.name or r.id[:12]) for r in view.runs]
    return page(
        request,
        "compare.html",
        {
            "runs": labeled,
            "rows": rows,
            "total_rows": len(comparison.rows),
            "everything": everything,
            "explanation": view.explanation,
            "metric_keys": list(view.metric_keys),
            "state": _state_link(request, str(request.url_for("compare").path)),
        },
    )


async def run_delete(request: Request) -> Response:
    site, _ = await _action(request)
    ref = request.path_params["ref"]
    await run_in_threadpool(runs.delete, site.workspace, [ref])
    return RedirectResponse(request.url_for("runs").path, status_code=303)


# -- models -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KitRow:
    ref: str
    summary: KitSummary


def models_page(request: Request) -> Response:
    found = models.catalog(_ws(request))
    rows = [KitRow(f"{k.repository}:{k.tag}" if k.tag else k.digest, k) for k in found.kits]
    return page(request, "models.html", {"models": found.models, "kits": rows})


def model_page(request: Request) -> Response:
    name = request.path_params["name"]
    overview = models.overview(_ws(request), name)
    aliases = sorted({a for v in overview.versions for a in v.aliases})
    return page(
        request,
        "model.html",
        {
            "name": name,
            "versions": overview.versions,
            "history": overview.history,
            "aliases": aliases,
            "remote": overview.remote,
        },
    )


async def alias_set(request: Request) -> Response:
    site, form = await _action(request)
    name = request.path_params["name"]
    move = models.AliasMove(
        name,
        form.get("alias", "").strip(),
        form.get("version", "").strip(),
        form.get("reason") or None,
    )
    await run_in_threadpool(site.guard_alias, request.scope, move.alias)
    await run_in_threadpool(models.set_alias, site.workspace, move)
    return RedirectResponse(request.url_for("model", name=name).path, status_code=303)


async def alias_rollback(request: Request) -> Response:
    site, form = await _action(request)
    name, alias = request.path_params["name"], request.path_params["alias"]
    rollback = models.RollbackRequest(name, alias, reason=form.get("reason") or None)
    await run_in_threadpool(site.guard_alias, request.scope, alias)
    await run_in_threadpool(models.rollback, site.workspace, rollback)
    return RedirectResponse(request.url_for("model", name=name).path, status_code=303)


def kit_page(request: Request) -> Response:
    import yaml

    contents = kits.contents(_ws(request), request.path_params["ref"])
    doc = contents.description.document
    return page(
        request,
        "kit.html",
        {
            "ref": request.path_params["ref"],
            "doc": doc,
            "files": contents.files,
            "kitfile_text": yaml.safe_dump(doc["kitfile"], sort_keys=False),
        },
    )


def kit_diff_page(request: Request) -> Response:
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    if not a or not b:
        raise UsageError("name two ModelKits to diff", hint="pick them on the Models page")
    return page(request, "kit_diff.html", {"diff": kits.diff(_ws(request), a, b)})


# -- lineage ------------------------------------------------------------------------------


def lineage_page(request: Request) -> Response:
    ws = _ws(request)
    subject = request.query_params.get("subject", "").strip()
    downstream = request.query_params.get("downstream") == "1"
    depth_text = request.query_params.get("depth", "")
    depth = _int(request, "depth", 0, 0, 1000) if depth_text else None
    graph_json, count = "", 0
    if subject:
        graph = lineage.trace(ws, lineage.Trace(subject, downstream, depth))
        data = graph.to_json()
        for node in data["nodes"]:
            node["href"] = _node_href(request, node)
        graph_json, count = json.dumps(data), len(data["nodes"])
    return page(
        request,
        "lineage.html",
        {
            "subject": subject,
            "downstream": downstream,
            "depth": depth,
            "graph_json": graph_json,
            "node_count": count,
        },
    )


def _node_href(request: Request, node: dict[str, Any]) -> str | None:
    kind = node["kind"]
    if kind == "run":
        return str(request.url_for("run", ref=node["id"].split(":", 1)[1]).path)
    if kind == "modelkit":
        return str(request.url_for("kit", ref=node["digest"]).path)
    if kind in ("version", "alias") and node.get("model"):
        return str(request.url_for("model", name=node["model"]).path)
    if kind == "data" and node.get("path") and node.get("digest"):
        base = str(request.url_for("lineage").path)
        return (
            base
            + "?"
            + urlencode({"subject": f"path:{node['path']}@{node['digest']}", "downstream": "1"})
        )
    return None


# -- shared -------------------------------------------------------------------------------


async def _action(request: Request) -> tuple[Site, dict[str, str]]:
    """The site and the form of a POST that changes state, once it is allowed: the UI
    is writable and the form carries this browser's CSRF token."""
    site: Site = request.app.state.site
    form = await _form(request)
    site.require_writable()
    site.csrf.check(request, form.get("csrf"))
    return site, form


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form body (the only kind our forms send), at most 64 KiB."""
    body = await request.body()
    if len(body) > 64 << 10:
        raise UsageError("the form is too large", hint="forms here send a few fields only")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items() if v}


@dataclass(frozen=True)
class Shown:
    """An error as a page shows it."""

    message: str
    hint: str | None


def error_page(request: Request, status: int, message: str, hint: str | None) -> HTMLResponse:
    return page(
        request, "error.html", {"error": Shown(message, hint), "status": status}, status_code=status
    )
