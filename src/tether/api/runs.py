"""Use cases on recorded runs: what the CLI's ``runs`` and ``env`` commands, the web UI
and the server call. Each returns a typed result that owns its JSON form; the rules
(refuse to delete a running run, a run without an environment) live here, once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.errors import RunError, UsageError
from tether.reporting import SILENT, Reporter
from tether.repositories import run_filter
from tether.repositories import runs as repo
from tether.runs.record import HOST, RunRecord

if TYPE_CHECKING:
    from tether.envcapture.diff import EnvDiff
    from tether.envcapture.environment import Environment
    from tether.runs.compare import Comparison
    from tether.workspace import Workspace


@dataclass(frozen=True)
class RunQuery:
    """A filter (``docs/runs.md``), a sort key and a limit (None: every match)."""

    where: str | None = None
    sort: str | None = None
    limit: int | None = 50


@dataclass(frozen=True)
class RunListing:
    runs: tuple[RunRecord, ...]
    matched: int  # before the limit

    def to_json(self) -> dict[str, Any]:
        return {"matched": self.matched, "runs": [summary_json(r) for r in self.runs]}


def summary_json(run: RunRecord) -> dict[str, Any]:
    """A run as a listing shows it: without files, capture, code and pid."""
    data = run.to_json()
    for key in ("files", "capture", "code", "pid"):
        data.pop(key, None)
    return data


def list_runs(ws: Workspace, query: RunQuery = RunQuery()) -> RunListing:
    found = run_filter.list_runs(ws.db, where=query.where, sort=query.sort, limit=query.limit)
    return RunListing(tuple(found.runs), found.matched)


@dataclass(frozen=True)
class RunLink:
    source: str
    kind: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"from": self.source, "kind": self.kind, "to": self.target, "detail": self.detail}


@dataclass(frozen=True)
class RunDetail:
    """Everything recorded about one run: the record, its environment and its links."""

    run: RunRecord
    environment: Environment | None
    links: tuple[RunLink, ...]

    def to_json(self) -> dict[str, Any]:
        data = self.run.to_json()
        data["environment"] = None if self.environment is None else self.environment.to_json()
        data["links"] = [link.to_json() for link in self.links]
        return data


def get(ws: Workspace, ref: str, *, report: Reporter = SILENT) -> RunRecord:
    """The run ``ref`` names (id, unique prefix, name, ``NAME~N``, ``latest``)."""
    return repo.load_run(ws.db, ref, on_ambiguous=report.warn)


def find(ws: Workspace, run_id: str) -> RunRecord | None:
    """The run with this exact id, without its files (None: deleted)."""
    found = repo.load_runs(ws.db, [run_id], full=False)
    return found[0] if found else None


def show(ws: Workspace, ref: str, *, report: Reporter = SILENT) -> RunDetail:
    run = get(ws, ref, report=report)
    edges = tuple(RunLink(a, kind, b, detail) for a, kind, b, detail in repo.links(ws.db, run.id))
    return RunDetail(run, repo.load_environment(ws.db, run.env_digest), edges)


@dataclass(frozen=True)
class DeleteReport:
    deleted: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"deleted": list(self.deleted)}


def delete(
    ws: Workspace, refs: Sequence[str], *, force: bool = False, report: Reporter = SILENT
) -> DeleteReport:
    """Delete runs and what was logged to them; refused for a run still running unless
    ``force``. Their stored files stay in the store until gc."""
    repo.reap_stale(ws.db, HOST)
    ids = list(dict.fromkeys(repo.resolve(ws.db, ref, on_ambiguous=report.warn) for ref in refs))
    running = [r.id[:12] for r in repo.load_runs(ws.db, ids, full=False) if r.status == "running"]
    if running and not force:
        raise RunError(
            f"run {', '.join(running)} is still running",
            hint="wait for it to end, or pass --force",
        )
    repo.delete_runs(ws.db, ids)
    return DeleteReport(tuple(ids))


def compare(ws: Workspace, refs: Sequence[str], *, report: Reporter = SILENT) -> Comparison:
    from tether.runs.compare import compare_runs

    if len(refs) < 2:
        raise UsageError("compare needs at least two runs", hint="tether runs compare RUN RUN")
    ids = [repo.resolve(ws.db, ref, on_ambiguous=report.warn) for ref in refs]
    return compare_runs(ws.db, repo.load_runs(ws.db, ids))


@dataclass(frozen=True)
class MetricPoint:
    step: int
    at: float
    value: float


@dataclass(frozen=True)
class MetricSeries:
    run_id: str
    series: dict[str, tuple[MetricPoint, ...]]

    def to_json(self) -> dict[str, Any]:
        return {
            key: [{"step": p.step, "timestamp": p.at, "value": p.value} for p in points]
            for key, points in self.series.items()
        }


def metrics(
    ws: Workspace, ref: str, key: str | None = None, *, report: Reporter = SILENT
) -> MetricSeries:
    run_id = repo.resolve(ws.db, ref, on_ambiguous=report.warn)
    series = repo.metric_series(ws.db, run_id, key)
    return MetricSeries(
        run_id,
        {k: tuple(MetricPoint(s, t, v) for s, t, v in points) for k, points in series.items()},
    )


def log(ws: Workspace, ref: str, *, report: Reporter = SILENT) -> Iterator[bytes]:
    """What the run wrote to stdout and stderr, in chunks; the blob is verified before
    the first byte comes."""
    from tether.hashing import Digest

    run = get(ws, ref, report=report)
    if not run.log_digest:
        raise RunError(
            f"run {run.id[:12]} has no captured output",
            hint="output is captured by 'tether run'; runs started from Python have none",
        )
    digest = Digest.parse(run.log_digest)
    ws.store.ensure_intact(digest)

    def chunks() -> Iterator[bytes]:
        with ws.store.open(digest) as f:
            while chunk := f.read(1 << 20):
                yield chunk

    return chunks()


def environment(ws: Workspace, ref: str, *, report: Reporter = SILENT) -> Environment:
    run = get(ws, ref, report=report)
    found = repo.load_environment(ws.db, run.env_digest)
    if found is None:
        raise RunError(
            f"run {run.id[:12]} has no captured environment",
            hint="see the warnings in 'tether runs show'",
        )
    return found


def current_environment(ws: Workspace, python: str | None = None) -> Environment:
    """The environment a run started now would record: tether's own interpreter, or
    the one at ``python``."""
    from tether.envcapture.environment import capture, capture_current

    return capture_current(ws.root) if python is None else capture(python, ws.root)


def environment_diff(
    ws: Workspace, ref_a: str, ref_b: str, *, report: Reporter = SILENT
) -> EnvDiff:
    from tether.envcapture.diff import diff_environments

    return diff_environments(
        environment(ws, ref_a, report=report), environment(ws, ref_b, report=report)
    )
