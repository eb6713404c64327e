"""``/p/NAME/sync/…``: where clients push their runs (``tether sync``).

    POST /sync/runs/stale     {"offers": {run_id: fingerprint}} → {"stale": [run_id…]}
    POST /sync/blobs/missing  {"digests": […]} → {"missing": […]}
    PUT  /sync/blobs/DIGEST   the bytes; refused (400) unless they hash to DIGEST
    POST /sync/runs           one run upload (team.sync.RunUpload) → {"run": run_id}

Both need a write grant (checked before the request gets here); an upload is audited.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.errors import UsageError
from tether.team import sync
from tether.team.deployment import Deployment
from tether.web.api import FastJSON

MAX_UPLOAD = 512 << 20
MAX_OFFERS = 1_000_000


async def _body(request: Request) -> Any:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_UPLOAD:
        raise UsageError(
            f"an upload of {size} bytes is over the {MAX_UPLOAD >> 20} MiB limit",
            hint="a run this big needs the streaming protocol (not yet available)",
        )
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_UPLOAD:
            raise UsageError("the upload is too large", hint="split it")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        raise UsageError("the body is not JSON", hint="send application/json") from None


def _context(request: Request) -> tuple[Deployment, str, str]:
    state = request.scope["state"]
    return request.app.state.team, state["project"], state["user"].name


async def stale(request: Request) -> Response:
    team, project, _ = _context(request)
    body = await _body(request)
    offers = body.get("offers") if isinstance(body, dict) else None
    if not isinstance(offers, dict) or len(offers) > MAX_OFFERS:
        raise UsageError(
            "offers must be an object of run id → fingerprint", hint="upgrade the client"
        )
    clean = {str(k): str(v) for k, v in offers.items()}
    found = await run_in_threadpool(sync.stale, team.project(project), clean)
    return FastJSON({"stale": found})


async def missing_blobs(request: Request) -> Response:
    team, project, _ = _context(request)
    body = await _body(request)
    digests = body.get("digests") if isinstance(body, dict) else None
    if not isinstance(digests, list) or len(digests) > MAX_OFFERS:
        raise UsageError("digests must be a list", hint="upgrade the client")
    found = await run_in_threadpool(
        sync.missing_blobs, team.project(project), [str(d) for d in digests]
    )
    return FastJSON({"missing": found})


async def put_blob(request: Request) -> Response:
    team, project, _ = _context(request)
    intake = await run_in_threadpool(
        sync.BlobIntake, team.project(project), request.path_params["digest"]
    )
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(intake.write, chunk)
        size = await run_in_threadpool(intake.commit)
    except BaseException:
        await run_in_threadpool(intake.abort)
        raise
    return FastJSON({"digest": request.path_params["digest"], "size": size})


async def upload(request: Request) -> Response:
    team, project, user = _context(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise UsageError("a run upload is a JSON object", hint="upgrade the client")
    received = sync.RunUpload.from_json(body)
    await run_in_threadpool(sync.receive, team.project(project), received, user)
    return FastJSON({"run": received.run.id})


def create_sync_app(team: Deployment, error_handlers: dict[Any, Any]) -> Starlette:
    app = Starlette(
        routes=[
            Route("/sync/runs/stale", stale, methods=["POST"]),
            Route("/sync/blobs/missing", missing_blobs, methods=["POST"]),
            Route("/sync/blobs/{digest}", put_blob, methods=["PUT"]),
            Route("/sync/runs", upload, methods=["POST"]),
        ],
        exception_handlers=error_handlers,
    )
    app.state.team = team
    return app
