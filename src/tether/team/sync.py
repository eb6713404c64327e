"""What a client sends to the server, and how the server takes it in.

A run travels whole: its record (params, tags, metric summaries, files, code, capture),
every metric point and its environment. Run ids are global, so sending a run again
replaces the server's copy with the same content: sync is idempotent. Which runs move
is settled in one round trip: the client compares its runs' fingerprints with the
server's list of (id, fingerprint), sends the runs the server lacks or holds in another
state (a run that was still running, or logged more since), and takes in the
teammates' runs it lacks. The receiving side, server or client, uses ``receive``.

The blobs a run keeps (its log, diff, code snapshot, stored outputs) go first, only
those the server lacks, each verified against its digest as it is written. A run's
upload names its blobs; the server keeps the ones it holds and lists the others as not
stored, so a run whose blobs did not all arrive stays stale and goes again.

While a run trains, its metrics also **stream** (``StreamBatch``, ``ingest``): each batch
says where it starts in the run's points (``seq``: how many the run held before it), so
a batch sent twice (its answer lost) adds only what the server lacks, and a batch past
what the server holds (one lost between) is refused as a gap, never stored out of
order. Points arrive exactly once either way; what the stream could not deliver, the
next sync replaces whole.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.errors import StreamGap, TooLarge, UsageError
from tether.hashing import Digest
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.repositories.kits import KitRunHow
from tether.runs.record import STATUSES, NewRun, RunFile, RunRecord, RunStatus
from tether.workspace import Workspace

MAX_POINTS_PER_BATCH = 100_000  # in one stream batch, and in one write
SYNCED_BY = "tether.synced_by"  # tag: the server user who sent the run


def fingerprint(run: RunRecord, edges: int = 0) -> str:
    """What changes when a run changes: status, end, the count of everything logged to
    it, and of the lineage edges from it (``repositories.lineage.edge_counts``)."""
    points = sum(m.count for m in run.metrics.values())
    stored = sum(1 for f in run.files if f.stored)
    ended = None if run.ended is None else _millis(run.ended)
    return (
        f"{run.status}|{ended}|{run.exit_code}|{len(run.params)}|"
        f"{len([k for k in run.tags if k != SYNCED_BY])}|{points}|{len(run.files)}|"
        f"{stored}|{run.env_digest}|{run.log_digest}|{edges}"
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _millis(t: float) -> int:
    """Whole milliseconds of a time, the same on both engines: SQLite keeps the double,
    PostgreSQL the microseconds Python rounded it to on the way in. Rounding the double
    to milliseconds directly disagreed, now and then, with the same on its microseconds."""
    micros = (datetime.fromtimestamp(t, UTC) - _EPOCH) // timedelta(microseconds=1)
    return int(micros) // 1000


@dataclass(frozen=True)
class RunUpload:
    run: RunRecord
    points: tuple[tuple[str, int, float, float], ...]  # (key, step, at, value)
    environment: str | None  # the environment record's canonical JSON
    blobs: tuple[tuple[str, str], ...] = ()  # (digest, purpose) the run keeps
    # Lineage edges that start at the run: (kind, target run, detail), e.g. the run it
    # reproduces with its verdict; and the ModelKits it made: (kit digest, how known).
    links: tuple[tuple[str, str, Mapping[str, Any]], ...] = ()
    kits: tuple[tuple[str, KitRunHow], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run.to_json(),
            "points": [[k, s, a, None if v != v else v] for k, s, a, v in self.points],
            "environment": self.environment,
            "blobs": [list(b) for b in self.blobs],
            "links": [[k, t, dict(d)] for k, t, d in self.links],
            "kits": [list(k) for k in self.kits],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunUpload:
        from tether.runs.record import check_run_id

        try:
            run = RunRecord.from_json(data["run"])
            points = tuple(
                (str(k), int(s), float(a), math.nan if v is None else float(v))
                for k, s, a, v in data.get("points", ())
            )
            blobs = tuple((str(Digest.parse(d)), str(p)[:64]) for d, p in data.get("blobs", ()))
            links = tuple(
                (str(k)[:64], check_run_id(str(t)), dict(d)) for k, t, d in data.get("links", ())
            )
            kits = tuple((str(Digest.parse(d)), _how(h)) for d, h in data.get("kits", ()))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(
                f"a run upload does not parse: {type(e).__name__}", hint="upgrade the client"
            ) from None
        check_run_id(run.id)
        environment = data.get("environment")
        text = environment if isinstance(environment, str) else None
        return cls(run, points, text, blobs, links, kits)


@dataclass(frozen=True)
class StreamEnd:
    status: RunStatus
    exit_code: int | None
    reason: str | None
    ended: float

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "ended": self.ended,
        }


@dataclass(frozen=True)
class Columns:
    """A batch's points as they travel: keys by index, one array per field."""

    keys: list[str]
    k: array[int]  # index into keys, per point
    steps: array[int]
    ats: array[float]
    values: array[float]  # NaN where the value is not a number


Series = dict[str, tuple[Sequence[int], Sequence[float], Sequence[float]]]


@dataclass(frozen=True)
class StreamBatch:
    """Points of a running run (and its end, last), sent while it trains. ``run`` is the
    start of the run's record: enough to create it on the server; the rest (code,
    environment, files) comes with the next sync. A batch made by ``from_json`` keeps its
    points in ``columns`` (``points`` is then empty): the server never makes a Python
    object per point."""

    run: NewRun
    seq: int  # the run's points before this batch
    points: tuple[tuple[str, int, float, float], ...] = ()
    end: StreamEnd | None = None
    columns: Columns | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.points) if self.columns is None else len(self.columns.steps)

    def metric_keys(self) -> set[str]:
        if self.columns is None:
            return {p[0] for p in self.points}
        return {self.columns.keys[i] for i in set(self.columns.k)}

    def series(self, skip: int) -> Series:
        """The points after the first ``skip``, apart by key: key → (steps, ats, values)."""
        c = self.columns
        if c is None:
            c = _columns(self.points)
        found: Series = {}
        k, steps, ats, values = c.k[skip:], c.steps[skip:], c.ats[skip:], c.values[skip:]
        if not steps:
            return found
        used = set(k)
        if len(used) == 1:  # one metric: its columns whole, no loop in Python
            found[c.keys[used.pop()]] = (steps, ats, values)
            return found
        for index in sorted(used):
            # Each key's points, in order: a C-level scan per key.
            mine = [i for i, x in enumerate(k) if x == index]
            found[c.keys[index]] = (
                [steps[i] for i in mine],
                [ats[i] for i in mine],
                [values[i] for i in mine],
            )
        return found

    def to_json(self) -> dict[str, Any]:
        keys = list(dict.fromkeys(k for k, _, _, _ in self.points))
        index = {k: i for i, k in enumerate(keys)}
        run = self.run
        return {
            "run": {
                "id": run.run_id,
                "name": run.name,
                "command": list(run.command),
                "cwd": run.cwd,
                "host": run.host,
                "user": run.user,
                "pid": run.pid,
                "seed": run.seed,
                "started": run.started,
            },
            "seq": self.seq,
            # Columns, keys by index: a third of the bytes of one object per point.
            "keys": keys,
            "k": [index[k] for k, _, _, _ in self.points],
            "step": [s for _, s, _, _ in self.points],
            "at": [a for _, _, a, _ in self.points],
            "value": [None if v != v else v for _, _, _, v in self.points],
            "end": None if self.end is None else self.end.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamBatch:
        try:
            head = data["run"]
            run = NewRun(
                name=None if head.get("name") is None else str(head["name"]),
                command=tuple(str(c) for c in head["command"]),
                cwd=str(head["cwd"]),
                host=str(head["host"]),
                user=str(head["user"]),
                pid=int(head["pid"]),
                seed=None if head.get("seed") is None else int(head["seed"]),
                started=float(head["started"]),
                run_id=str(head["id"]),
            )
            keys = [str(k) for k in data["keys"]]
            # Column by column into arrays: the conversion in C checks every element's
            # type (an int step, a number where a number goes).
            k = array("l", data["k"])
            if k and (min(k) < 0 or max(k) >= len(keys)):
                raise IndexError("a key index out of range")
            steps = array("q", data["step"])
            ats = array("d", data["at"])
            try:
                values = array("d", data["value"])
            except TypeError:  # None stands for NaN
                values = array("d", [math.nan if v is None else v for v in data["value"]])
            if not len(k) == len(steps) == len(ats) == len(values):
                raise ValueError("columns of different lengths")
            if len(steps) > MAX_POINTS_PER_BATCH:
                raise TooLarge(
                    f"a stream batch holds at most {MAX_POINTS_PER_BATCH:,} points",
                    hint="send smaller batches",
                )
            end = data.get("end")
            finish = None
            if end is not None:
                if end["status"] not in STATUSES[1:]:
                    raise ValueError("not an end status")
                finish = StreamEnd(
                    end["status"],
                    None if end.get("exit_code") is None else int(end["exit_code"]),
                    None if end.get("reason") is None else str(end["reason"])[:2000],
                    float(end["ended"]),
                )
            seq = int(data["seq"])
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
            raise UsageError(
                f"a stream batch does not parse: {type(e).__name__}", hint="upgrade the client"
            ) from None
        if seq < 0:
            raise UsageError("a stream batch starts before the run", hint="upgrade the client")
        return cls(run, seq, (), finish, Columns(keys, k, steps, ats, values))


def _columns(points: Sequence[tuple[str, int, float, float]]) -> Columns:
    keys = list(dict.fromkeys(p[0] for p in points))
    index = {key: i for i, key in enumerate(keys)}
    return Columns(
        keys,
        array("l", [index[p[0]] for p in points]),
        array("q", [p[1] for p in points]),
        array("d", [p[2] for p in points]),
        array("d", [p[3] for p in points]),
    )


def ingest(ws: Workspace, batch: StreamBatch, by: str) -> int:
    """Take in one streamed batch, in one transaction: create the run if it is new here,
    add the points the server lacks, close the run on its end. Returns the run's points
    now held (what the next batch's ``seq`` should be)."""
    from tether.runs.record import check_key, check_run_id

    run_id = check_run_id(batch.run.run_id or "")
    for key in batch.metric_keys():
        check_key("metric", key)
    with ws.db.atomic(run=run_id):
        # Inside the run's write transaction: two batches of one run cannot interleave
        # (those of other runs go on beside it).
        if not runs_repo.exists(ws.db, run_id):
            runs_repo.create_run(ws.db, batch.run)
            runs_repo.set_tags(ws.db, run_id, {SYNCED_BY: by})
        held = metrics_repo.point_count(ws.db, run_id)
        if batch.seq > held:
            raise StreamGap(
                f"run {run_id[:12]}: this batch starts at point {batch.seq}, the server"
                f" holds {held}",
                hint="the stream stops here; 'tether sync' sends the whole run",
            )
        skip = held - batch.seq
        metrics_repo.insert_series(ws.db, run_id, batch.series(skip))
        end = batch.end
        if end is not None and runs_repo.load_runs(ws.db, [run_id], full=False)[0].status == (
            "running"
        ):
            runs_repo.finish_run(
                ws.db,
                run_id,
                end.status,
                exit_code=end.exit_code,
                reason=end.reason,
                ended=end.ended,
            )
    return held + max(0, len(batch) - skip)


_HOWS: dict[object, KitRunHow] = {"from-run": "from-run", "detected": "detected",
                                   "provenance": "provenance"}  # fmt: skip


def _how(text: object) -> KitRunHow:
    if text not in _HOWS:
        raise ValueError("not a way a kit is linked to a run")
    return _HOWS[text]


def upload_of(ws: Workspace, run: RunRecord) -> RunUpload:
    series = metrics_repo.metric_series(ws.db, run.id)
    points = tuple((k, s, a, v) for k, pts in series.items() for s, a, v in pts)
    environment = runs_repo.load_environment(ws.db, run.env_digest)
    blobs = tuple(
        (d, p) for d, p in runs_repo.blobs_of(ws.db, run.id) if ws.store.has(Digest.parse(d))
    )
    from tether.repositories import kits as kits_repo

    links = tuple((k, t, d) for f, k, t, d in runs_repo.links(ws.db, run.id) if f == run.id)
    kits = tuple((d, _how(h)) for d, h in kits_repo.made_by_run(ws.db, run.id))
    text = None if environment is None else environment.canonical
    return RunUpload(run, points, text, blobs, links, kits)


def missing_blobs(ws: Workspace, digests: Iterable[str]) -> list[str]:
    """The digests this project's store lacks."""
    asked = [Digest.parse(d) for d in dict.fromkeys(digests)]
    held = ws.store.sizes(asked)
    return [str(d) for d in asked if d not in held]


class BlobIntake:
    """A blob arriving in pieces: kept only if the whole hashes to its digest, so a blob
    damaged in transit is refused and nothing of it stays. With ``start`` (a resumed
    upload: the bytes from there on), the pieces an interrupted upload left are kept
    and this one goes on from them; ``start`` must be where they end."""

    def __init__(self, ws: Workspace, digest: str, start: int | None = None) -> None:
        from tether.errors import UploadOffset

        expected = Digest.parse(digest)
        if start is None:
            self._writer = ws.store.writer(expected=expected)
        else:
            self._writer = ws.store.partial(expected)
            if self._writer.offset != start:
                held = self._writer.offset
                self._writer.__exit__(RuntimeError, None, None)  # keeps what is there
                raise UploadOffset(
                    f"this upload starts at byte {start}; the server holds {held} of it",
                    hint="ask sync/blobs/uploads where to go on from",
                )
        self._done = False

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, chunk: bytes) -> None:
        self._writer.write(chunk)

    def commit(self) -> int:
        self._done = True  # a failed commit cleans up after itself
        self._writer.__exit__(None, None, None)
        return self._writer.size

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._writer.__exit__(RuntimeError, None, None)


class PackIntake:
    """A pack of small blobs arriving (``team.blob_pack``): each hashed and compared with
    its header; all of them made durable together on ``commit``. A blob that does not
    match refuses the pack, and nothing of it is kept."""

    def __init__(self, ws: Workspace) -> None:
        from tether.team.blob_pack import PACKED_BELOW, PackReader

        self._batch = ws.store.batch()
        self._digest = ""
        self._parts: list[bytes] = []
        self._reader = PackReader(self._start, self._parts.append, self._end,
                                  max_blob=PACKED_BELOW)  # fmt: skip

    def _start(self, digest: str, size: int) -> None:
        self._digest = digest
        self._parts.clear()

    def _end(self) -> None:
        import hashlib

        from tether.errors import ObjectCorrupted

        data = b"".join(self._parts)
        found = Digest(hashlib.sha256(data).hexdigest())
        if str(found) != self._digest:
            raise ObjectCorrupted(
                f"a blob in the pack hashes to {found}, its header says {self._digest}",
                hint="it was damaged on the way; send the pack again",
                digest=self._digest,
            )
        self._batch.add(data, found)

    def write(self, chunk: bytes) -> None:
        self._reader.feed(chunk)

    def commit(self) -> int:
        """Keep the pack's blobs; returns how many it held."""
        self._reader.close()
        self._batch.commit()
        return self._reader.count

    def keep_received(self) -> int:
        """Keep the blobs that arrived whole before the pack was cut off (each one was
        verified); returns how many."""
        self._batch.commit()
        return self._reader.count

    def abort(self) -> None:
        self._batch.discard()


def blob_sizes(ws: Workspace, digests: Iterable[str]) -> dict[str, int]:
    """The size of each of ``digests`` this project's store holds (the others are absent)."""
    held = ws.store.sizes([Digest.parse(d) for d in dict.fromkeys(digests)])
    return {str(d): size for d, size in held.items()}


def chunk_lists(ws: Workspace, digests: Iterable[str]) -> dict[str, dict[str, object]]:
    """The chunk list of each of ``digests`` this project keeps in chunks (the others,
    held whole or not at all, are absent): a client fetches only the chunks it lacks."""
    out: dict[str, dict[str, object]] = {}
    for d in dict.fromkeys(digests):
        digest = Digest.parse(d)
        if not ws.store.has_blob(digest) and ws.store.chunks.has(digest):
            out[str(digest)] = ws.store.chunks.load(digest).to_json()
    return out


def keep_chunk_list(ws: Workspace, digest: str, doc: object) -> list[str]:
    """Keep a file a client sends as its chunk list, once the chunks it names are here
    and add up to its digest; returns the chunks still to send (none: kept). A list
    whose good chunks are not the file is refused (ObjectCorrupted)."""
    from tether.store.bucket import BucketStore
    from tether.store.chunks import ChunkList

    if isinstance(ws.store, BucketStore):
        raise UsageError(
            "this server keeps blobs whole in a bucket", hint="send the blob whole instead"
        )
    listed = ChunkList.from_json(Digest.parse(digest), doc)
    if ws.store.has(listed.digest):
        return []
    return [str(c) for c in dict.fromkeys(ws.store.chunks.adopt(listed))]


def fingerprints(ws: Workspace) -> dict[str, str]:
    """Every run of this project with its fingerprint (what a pulling client compares)."""
    from tether.repositories.lineage import edge_counts
    from tether.repositories.run_filter import list_runs

    ids = [r.id for r in list_runs(ws.db, limit=None).runs]
    edges = edge_counts(ws.db)
    return {r.id: fingerprint(r, edges.get(r.id, 0)) for r in runs_repo.load_runs(ws.db, ids)}


def upload_of_id(ws: Workspace, run_id: str) -> RunUpload:
    found = runs_repo.load_runs(ws.db, [run_id])
    if not found:
        from tether.errors import RunNotFound

        raise RunNotFound(f"no run {run_id[:40]!r} here", hint="list them: GET sync/runs")
    return upload_of(ws, found[0])


def receive(ws: Workspace, upload: RunUpload, by: str | None) -> None:
    """Replace the project's copy of the run with the uploaded one, in one transaction.
    ``by``: the server user who sent it (None when pulling: the tags already say)."""
    from tether.envcapture.environment import Environment
    from tether.repositories import kits as kits_repo

    run = upload.run
    environment = None
    if upload.environment is not None:
        environment = Environment.from_json(upload.environment)
        if environment.digest != run.env_digest:
            raise UsageError(
                f"run {run.id[:12]}: its environment does not match its digest",
                hint="the upload was damaged; sync again",
            )
    held = {d for d, _ in upload.blobs if ws.store.has(Digest.parse(d))}
    log_digest = run.log_digest if run.log_digest in held else None
    with ws.db.atomic():
        runs_repo.delete_runs(ws.db, [run.id])
        if environment is not None:
            runs_repo.save_environment(ws.db, environment.digest, environment.canonical)
        env_digest = run.env_digest if environment is not None else None
        runs_repo.create_run(ws.db, run.start(env_digest=env_digest))
        runs_repo.set_env_and_log(ws.db, run.id, env_digest, log_digest)
        runs_repo.add_blobs(ws.db, run.id, [(d, p) for d, p in upload.blobs if d in held])
        runs_repo.log_params(ws.db, run.id, dict(run.params))
        runs_repo.set_tags(ws.db, run.id, {**run.tags, **({SYNCED_BY: by} if by else {})})
        for batch in _batches(upload.points, MAX_POINTS_PER_BATCH):
            metrics_repo.insert_metrics(ws.db, run.id, batch)
        runs_repo.add_files(ws.db, run.id, _files_held(run.files, held))
        for kind, target, detail in upload.links:
            runs_repo.link_runs(ws.db, run.id, kind, target, detail)
        for kit, how in upload.kits:
            kits_repo.link_run(ws.db, kit, run.id, how)
        if run.status != "running":
            runs_repo.finish_run(
                ws.db,
                run.id,
                run.status,
                exit_code=run.exit_code,
                reason=run.reason,
                ended=run.ended,
            )


def _files_held(files: Iterable[RunFile], held: set[str]) -> list[RunFile]:
    # A file is stored here only if its blob arrived; otherwise it is listed.
    return [
        RunFile(f.role, f.path, f.digest, f.size, f.source, f.stored and f.digest in held)
        for f in files
    ]


def _batches(
    points: Sequence[tuple[str, int, float, float]], size: int
) -> Iterable[Sequence[tuple[str, int, float, float]]]:
    for i in range(0, len(points), size):
        yield points[i : i + size]
