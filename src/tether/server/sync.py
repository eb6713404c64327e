"""``/p/NAME/sync/…``: where clients push their runs (``tether sync``).

    POST /sync/blobs/missing  {"digests": […]} → {"missing": […]}
    POST /sync/blobs/have     {"digests": […]} → {"sizes": {digest: size}} of those held
    PUT  /sync/blobs/DIGEST   the bytes; refused (400) unless they hash to DIGEST
    POST /sync/blobs/pack     many small blobs (team.blob_pack), each checked the same way
    POST /sync/blobs/fetch    {"digests": […]} → a pack of those held
    POST /sync/chunklists/have  {"digests": […]} → {"lists": {digest: chunk list}} of those
                              kept in chunks (store/chunks.py): a client fetches the
                              chunks it lacks, not the whole file
    POST /sync/chunklists     {"digest", "list"}: a big file sent as its chunk list, after
                              its chunks → {"missing": [chunks still to send]} ([]: kept,
                              its chunks checked to add up to its digest); 400 where the
                              server keeps blobs in a bucket (send the blob whole)
    POST /sync/blobs/uploads  {"digest", "size"} → how to send a big blob: through the
                              server ({"via": "server"}: PUT it here), or straight to the
                              bucket (store.bucket.UploadPlan: presigned part URLs)
    POST /sync/blobs/uploads/complete   {"digest", "size", "upload_id", "parts"}: the
                              bucket upload is checked, then recorded
    POST /sync/runs           one run upload (team.sync.RunUpload) → {"run": run_id}
    POST /sync/stream         a running run's batch (team.sync.StreamBatch), zstd or
                              gzip allowed → {"run": run_id, "held": points held}
    GET  /sync/runs           {"runs": {run_id: fingerprint}}: what a pulling client compares
    GET  /sync/models         {"models": [team.model_sync.ModelCopy…]}
    POST /sync/models         one model's copy, merged (team.model_sync.merge) → ModelMerge
    GET  /sync/runs/RUN       one run as an upload
    GET  /sync/blobs/DIGEST   the bytes of a blob of this project

Changes need a write grant, reads a read grant (checked before the request gets here);
every change is audited.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.errors import TooLarge, UsageError
from tether.team import sync
from tether.team.deployment import Deployment
from tether.web.api import FastJSON

MAX_UPLOAD = 512 << 20  # a request's JSON or pack
MAX_BLOB = 256 << 30  # one blob through the server (a bucket takes S3's 5 TiB)
MAX_OFFERS = 1_000_000
# POSTs that only read (a digest list is too long for a query string): a read grant
# does, and they are not audited.
QUERIES = frozenset({"/sync/blobs/have", "/sync/blobs/fetch", "/sync/chunklists/have"})


async def _body(request: Request) -> Any:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "zstd", "gzip"):
        raise UsageError(
            f"content-encoding {encoding[:20]!r} is not understood", hint="send zstd or gzip"
        )
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_UPLOAD:
        raise TooLarge(
            f"an upload of {size} bytes is over the {MAX_UPLOAD >> 20} MiB limit",
            hint="send big blobs on their own (PUT sync/blobs/DIGEST or a bucket upload)",
        )
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_UPLOAD:
            raise TooLarge(f"the upload is over the {MAX_UPLOAD >> 20} MiB limit", hint="split it")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding != "identity":
        body = await run_in_threadpool(_decoded, body, encoding)
    import orjson  # a stream batch of 10,000 points parses several times faster

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UsageError("the body is not JSON", hint="send application/json") from None


async def _object(request: Request, what: str) -> dict[str, Any]:
    body = await _body(request)
    if not isinstance(body, dict):
        raise UsageError(f"{what} is a JSON object", hint="upgrade the client")
    return body


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body decompressed, refused past MAX_UPLOAD (a small bomb stays small)."""
    import gzip
    import io

    import zstandard

    try:
        if encoding == "zstd":
            reader: Any = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body))
        else:
            reader = gzip.GzipFile(fileobj=io.BytesIO(body))
        with reader:
            out = reader.read(MAX_UPLOAD + 1)
    except (zstandard.ZstdError, OSError, EOFError):
        raise UsageError(f"the {encoding} body does not decompress", hint="send it again") from None
    if len(out) > MAX_UPLOAD:
        raise TooLarge(
            f"the upload is over the {MAX_UPLOAD >> 20} MiB limit once decompressed",
            hint="split it",
        )
    return out  # type: ignore[no-any-return]


def _context(request: Request) -> tuple[Deployment, str, str]:
    state = request.scope["state"]
    return request.app.state.team, state["project"], state["user"].name


async def _digests(request: Request) -> list[str]:
    body = await _body(request)
    digests = body.get("digests") if isinstance(body, dict) else None
    if not isinstance(digests, list) or len(digests) > MAX_OFFERS:
        raise UsageError(
            f"digests must be a list of at most {MAX_OFFERS:,}", hint="upgrade the client"
        )
    return [str(d) for d in digests]


async def _about_digests(request: Request, answer: Callable[..., Any], key: str) -> Response:
    """A question about a list of digests, answered by ``answer(project, digests)``."""
    team, project, _ = _context(request)
    digests = await _digests(request)
    found = await run_in_threadpool(answer, team.project(project), digests)
    return FastJSON({key: found})


async def missing_blobs(request: Request) -> Response:
    return await _about_digests(request, sync.missing_blobs, "missing")


async def blob_sizes(request: Request) -> Response:
    return await _about_digests(request, sync.blob_sizes, "sizes")


async def chunk_lists(request: Request) -> Response:
    return await _about_digests(request, sync.chunk_lists, "lists")


async def keep_chunk_list(request: Request) -> Response:
    team, project, _ = _context(request)
    body = await _object(request, "a chunk list")
    digest = body.get("digest")
    if not isinstance(digest, str):
        raise UsageError("a chunk list names its file's digest", hint="upgrade the client")
    ws = team.project(project)
    missing = await run_in_threadpool(sync.keep_chunk_list, ws, digest, body.get("list"))
    if not missing:
        request.scope["state"]["audit"] = ("sync.blobs", f"{project}:{digest} in chunks")
    return FastJSON({"missing": missing})


async def put_pack(request: Request) -> Response:
    team, project, _ = _context(request)
    intake = sync.PackIntake(team.project(project))
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_UPLOAD:
                raise TooLarge(
                    f"a pack is over the {MAX_UPLOAD >> 20} MiB limit", hint="send smaller packs"
                )
            if chunk:
                await run_in_threadpool(intake.write, chunk)
        count = await run_in_threadpool(intake.commit)
    except BaseException:
        await run_in_threadpool(intake.abort)
        raise
    request.scope["state"]["audit"] = ("sync.blobs", f"{project}:{count} blob(s)")
    return FastJSON({"stored": count})


async def fetch_pack(request: Request) -> Response:
    from starlette.responses import StreamingResponse

    from tether.team.blob_pack import frames

    team, project, _ = _context(request)
    digests = await _digests(request)
    store = team.project(project).store
    # A sync iterator: Starlette reads it in its thread pool, a blob at a time.
    return StreamingResponse(
        frames(store, digests, skip_damaged=True), media_type="application/octet-stream"
    )


def _bucket(request: Request) -> Any:
    from tether.store.bucket import BucketStore

    team, project, _ = _context(request)
    store = team.project(project).store
    return store if isinstance(store, BucketStore) else None


async def upload_plan(request: Request) -> Response:
    from tether.hashing import Digest

    body = await _object(request, "an upload request")
    try:
        digest, size = Digest.parse(str(body["digest"])), int(body["size"])
    except (KeyError, TypeError, ValueError):
        raise UsageError(
            "an upload request names a digest and a size", hint="upgrade the client"
        ) from None
    if size < 0:
        raise UsageError("a blob's size is not negative", hint="upgrade the client")
    store = await run_in_threadpool(_bucket, request)
    if store is None:
        # Through the server; an upload cut off before goes on from where it stopped.
        team, project, _ = _context(request)
        offset = team.project(project).store.partial_size(digest)
        return FastJSON({"via": "server", "offset": offset if offset < size else 0})
    if await run_in_threadpool(store.has, digest):
        return FastJSON({"via": "bucket", "digest": str(digest), "stored": True})
    plan = await run_in_threadpool(store.bucket.plan, digest, size)
    return FastJSON(plan.to_json())


async def upload_complete(request: Request) -> Response:
    from tether.hashing import Digest

    body = await _object(request, "an upload's end")
    try:
        digest, size = Digest.parse(str(body["digest"])), int(body["size"])
        upload_id = None if body.get("upload_id") is None else str(body["upload_id"])
        parts = [(int(p["number"]), str(p["etag"])) for p in body.get("parts", ())]
    except (KeyError, TypeError, ValueError):
        raise UsageError("an upload's end does not parse", hint="upgrade the client") from None
    store = await run_in_threadpool(_bucket, request)
    if store is None:
        raise UsageError("this server keeps blobs in a folder", hint="PUT the blob instead")

    def finish() -> None:
        if not store.has(digest):
            store.bucket.complete(digest, size, upload_id, parts)
            store.ledger.record(str(digest), size)

    await run_in_threadpool(finish)
    return FastJSON({"digest": str(digest), "size": size})


async def put_blob(request: Request) -> Response:
    team, project, _ = _context(request)
    if await run_in_threadpool(_bucket, request) is not None:
        # Big bodies go to the bucket, never through the server.
        raise UsageError(
            "this server keeps blobs in a bucket", hint="ask POST sync/blobs/uploads for URLs"
        )
    span = _content_range(request.headers.get("content-range"))
    end = span[2] if span else int(request.headers.get("content-length") or 0)
    if end > MAX_BLOB:
        raise TooLarge(f"a blob is at most {MAX_BLOB >> 30} GiB here", hint="split the file")
    intake = await run_in_threadpool(
        sync.BlobIntake, team.project(project), request.path_params["digest"],
        span[0] if span else None,
    )  # fmt: skip
    try:
        async for chunk in request.stream():
            if intake.size + len(chunk) > (span[2] if span else MAX_BLOB):
                raise TooLarge("the upload runs past its stated size", hint="send it again")
            if chunk:
                await run_in_threadpool(intake.write, chunk)
        if span and intake.size < span[2]:
            # A piece of it: kept for the next piece (a client sending in parts).
            await run_in_threadpool(intake.abort)
            return FastJSON({"digest": request.path_params["digest"], "offset": intake.size},
                            status_code=202)  # fmt: skip
        size = await run_in_threadpool(intake.commit)
    except BaseException:
        await run_in_threadpool(intake.abort)
        raise
    return FastJSON({"digest": request.path_params["digest"], "size": size})


def _content_range(header: str | None) -> tuple[int, int, int] | None:
    """``bytes START-END/TOTAL`` as (START, END, TOTAL); None without the header."""
    if header is None:
        return None
    import re

    found = re.fullmatch(r"bytes (\d{1,15})-(\d{1,15})/(\d{1,15})", header.strip())
    if not found:
        raise UsageError(f"Content-Range {header[:60]!r} does not parse",
                         hint="bytes START-END/TOTAL")  # fmt: skip
    start, end, total = (int(g) for g in found.groups())
    if not start <= end < total:
        raise UsageError(f"Content-Range {header[:60]!r} is not a range of the blob",
                         hint="START <= END < TOTAL")  # fmt: skip
    return start, end, total


async def upload(request: Request) -> Response:
    team, project, user = _context(request)
    body = await _object(request, "a run upload")
    received = sync.RunUpload.from_json(body)
    await run_in_threadpool(sync.receive, team.project(project), received, user)
    return FastJSON({"run": received.run.id})


async def stream(request: Request) -> Response:
    team, project, user = _context(request)
    body = await _object(request, "a stream batch")
    batch = sync.StreamBatch.from_json(body)
    action = "sync.stream.end" if batch.end else "sync.stream.start" if batch.seq == 0 else None
    # What the dispatcher audits: a stream where it starts and ends, not every batch.
    request.scope["state"]["audit"] = action and (action, f"{project}:run/{batch.run.run_id}")
    ws = team.project(project)
    held = await run_in_threadpool(sync.ingest, ws, batch, user)
    return FastJSON({"run": batch.run.run_id, "held": held})


def model_copies(request: Request) -> Response:
    from tether.team import model_sync

    team, project, _ = _context(request)
    found = model_sync.copies(team.project(project))
    return FastJSON({"models": [c.to_json() for c in found]})


async def model_merge(request: Request) -> Response:
    from tether.team import model_sync
    from tether.team.projects import may_move

    team, project, _ = _context(request)
    body = await _object(request, "a model's copy")
    incoming = model_sync.ModelCopy.from_json(body)
    request.scope["state"]["audit"] = ("sync.model", f"{project}:model/{incoming.name}")
    guard = functools.partial(may_move, team, request.scope["state"]["user"], project)
    merged = await run_in_threadpool(
        functools.partial(model_sync.merge, team.project(project), incoming, may_move=guard)
    )
    return FastJSON(merged.to_json())


def run_fingerprints(request: Request) -> Response:
    team, project, _ = _context(request)
    return FastJSON({"runs": sync.fingerprints(team.project(project))})


def run_upload(request: Request) -> Response:
    team, project, _ = _context(request)
    found = sync.upload_of_id(team.project(project), request.path_params["run"])
    return FastJSON(found.to_json())


def get_blob(request: Request) -> Response:
    from starlette.responses import FileResponse, RedirectResponse

    from tether.errors import ObjectNotFound
    from tether.hashing import Digest
    from tether.store.bucket import BucketStore

    team, project, _ = _context(request)
    ws = team.project(project)
    digest = Digest.parse(request.path_params["digest"])
    if not ws.store.has(digest):
        raise ObjectNotFound(f"no blob {digest.short} here", hint="push it first")
    if isinstance(ws.store, BucketStore):
        # Straight from the bucket, with a short-lived URL: no body passes through here.
        return RedirectResponse(ws.store.bucket.download_url(digest), status_code=307)
    if not ws.store.has_blob(digest):  # kept in chunks: streamed as they are read
        from starlette.responses import StreamingResponse

        def chunks() -> Iterator[bytes]:
            with ws.store.open(digest) as f:
                while data := f.read(1 << 20):
                    yield data

        size = str(ws.store.size(digest))
        return StreamingResponse(chunks(), media_type="application/octet-stream",
                                 headers={"Content-Length": size})  # fmt: skip
    return FileResponse(ws.store.path(digest), media_type="application/octet-stream")


def create_sync_app(team: Deployment, error_handlers: dict[Any, Any]) -> Starlette:
    app = Starlette(
        routes=[
            Route("/sync/blobs/missing", missing_blobs, methods=["POST"]),
            Route("/sync/blobs/have", blob_sizes, methods=["POST"]),
            Route("/sync/blobs/pack", put_pack, methods=["POST"]),
            Route("/sync/blobs/fetch", fetch_pack, methods=["POST"]),
            Route("/sync/chunklists/have", chunk_lists, methods=["POST"]),
            Route("/sync/chunklists", keep_chunk_list, methods=["POST"]),
            Route("/sync/blobs/uploads", upload_plan, methods=["POST"]),
            Route("/sync/blobs/uploads/complete", upload_complete, methods=["POST"]),
            Route("/sync/blobs/{digest}", put_blob, methods=["PUT"]),
            Route("/sync/runs", upload, methods=["POST"]),
            Route("/sync/stream", stream, methods=["POST"]),
            Route("/sync/models", model_copies, methods=["GET"]),
            Route("/sync/models", model_merge, methods=["POST"]),
            Route("/sync/runs", run_fingerprints, methods=["GET"]),
            Route("/sync/runs/{run}", run_upload, methods=["GET"]),
            Route("/sync/blobs/{digest}", get_blob, methods=["GET"]),
        ],
        exception_handlers=error_handlers,
    )
    app.state.team = team
    return app
