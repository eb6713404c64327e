"""Use cases on recorded runs: what the CLI's ``runs`` and ``env`` commands, the web UI
and the server call. Each returns a typed result that owns its JSON form; the rules
(refuse to delete a running run, a run without an environment) live here, once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.errors import RunError, RunNotFound, UsageError
from tether.reporting import SILENT, Reporter
from tether.repositories import metrics as metrics_repo
from tether.repositories import run_filter
from tether.repositories import runs as repo
from tether.repositories.metrics import ChartQuery as ChartQuery
from tether.repositories.metrics import ChartSeries as ChartSeries
from tether.runs.record import HOST, RunRecord

if TYPE_CHECKING:
    from tether.envcapture.diff import EnvDiff
    from tether.envcapture.environment import Environment
    from tether.envcapture.export import Export
    from tether.repro.explain import Explanation
    from tether.runs.compare import Comparison
    from tether.workspace import Workspace


@dataclass(frozen=True)
class RunQuery:
    """A filter (``docs/runs.md``), a sort key and a limit (None: every match)."""

    where: str | None = None
    sort: str | None = None
    limit: int | None = 50
    offset: int = 0  # matches skipped (a page's start)


@dataclass(frozen=True)
class RunListing:
    runs: tuple[RunRecord, ...]
    matched: int  # before the limit

    def to_json(self) -> dict[str, Any]:
        return {"matched": self.matched, "runs": [summary_json(r) for r in self.runs]}


def summary_json(run: RunRecord) -> dict[str, Any]:
    """A run as a listing shows it: without files, capture, code and pid."""
    return run.to_json(summary=True)


def list_runs(ws: Workspace, query: RunQuery = RunQuery()) -> RunListing:
    found = run_filter.list_runs(
        ws.db, where=query.where, sort=query.sort, limit=query.limit, offset=query.offset
    )
    return RunListing(tuple(found.runs), found.matched)


@dataclass(frozen=True)
class RunColumns:
    """Every param, metric and tag key any run has: what a runs table can show."""

    params: tuple[str, ...]
    metrics: tuple[str, ...]
    tags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"params": list(self.params), "metrics": list(self.metrics), "tags": list(self.tags)}

    @property
    def fields(self) -> tuple[str, ...]:
        """As the filter grammar names them: metrics.KEY, params.KEY, tags.KEY."""
        return (
            *(f"metrics.{k}" for k in self.metrics),
            *(f"params.{k}" for k in self.params),
            *(f"tags.{k}" for k in self.tags),
        )


def columns(ws: Workspace) -> RunColumns:
    return RunColumns(
        tuple(repo.distinct_keys(ws.db, "run_params")),
        tuple(repo.distinct_keys(ws.db, "run_metric_summary")),
        tuple(repo.distinct_keys(ws.db, "run_tags")),
    )


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
    series = metrics_repo.metric_series(ws.db, run_id, key)
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


def export_environment(ws: Workspace, ref: str, fmt: str, *, report: Reporter = SILENT) -> Export:
    """RUN's recorded environment as files another tool builds (requirements.txt, a
    uv project, environment.yml, a Dockerfile)."""
    from tether.envcapture.export import export, subject_of

    return export(subject_of(ws, get(ws, ref, report=report)), fmt)


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


def chart(ws: Workspace, ref: str, query: ChartQuery) -> ChartSeries:
    """One metric of a run as a chart ``query.width`` columns wide draws it: every point
    when the range holds few, else min/max/mean buckets (never more than ``width``)."""
    run_id = repo.resolve(ws.db, ref)
    found = metrics_repo.chart(ws.db, run_id, query)
    if found is None:
        raise RunNotFound(
            f"run {run_id[:12]} has no metric {query.key!r}",
            hint="its metrics are listed by 'tether runs show'",
        )
    return found


@dataclass(frozen=True)
class LogTail:
    text: str  # the end of the log, decoded (undecodable bytes replaced)
    size: int  # of the whole log, in bytes
    truncated: bool


@dataclass(frozen=True)
class RunView:
    """What a run's page shows: its detail, the uncommitted diff it ran with and the end
    of its log."""

    detail: RunDetail
    code_diff: str | None
    log: LogTail | None


MAX_DIFF_SHOWN = 1 << 20


def view(ws: Workspace, ref: str, *, log_tail: int = 64 << 10) -> RunView:
    from tether.hashing import Digest

    detail = show(ws, ref)
    run = detail.run
    diff = None
    if run.code.diff_digest and ws.store.has(Digest.parse(run.code.diff_digest)):
        with ws.store.open(Digest.parse(run.code.diff_digest)) as f:
            diff = f.read(MAX_DIFF_SHOWN).decode("utf-8", "replace")
    tail = None
    if run.log_digest and ws.store.has(Digest.parse(run.log_digest)):
        digest = Digest.parse(run.log_digest)
        with ws.store.open(digest) as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - log_tail))
            tail = LogTail(f.read().decode("utf-8", "replace"), size, size > log_tail)
    return RunView(detail, diff, tail)


@dataclass(frozen=True)
class ComparisonView:
    """A comparison with what a page draws next to it: the runs, the metrics they
    share, and for two runs the ``explain`` ranking of why their results differ."""

    runs: tuple[RunRecord, ...]
    comparison: Comparison
    metric_keys: tuple[str, ...]
    explanation: Explanation | None

    def to_json(self, *, everything: bool = False) -> dict[str, Any]:
        out = self.comparison.to_json(everything=everything)
        out["metric_keys"] = list(self.metric_keys)
        out["explanation"] = None if self.explanation is None else self.explanation.to_json()
        return out


def compare_view(ws: Workspace, refs: Sequence[str]) -> ComparisonView:
    from tether.repro.explain import explain
    from tether.runs.compare import compare_runs

    ids = list(dict.fromkeys(repo.resolve(ws.db, r) for r in refs))
    if len(ids) < 2:
        raise UsageError("compare needs at least two different runs", hint="name another run")
    records = tuple(repo.load_runs(ws.db, ids))
    keys = sorted(set().union(*(set(r.metrics) for r in records)))
    why = explain(ws, records[0], records[1]) if len(records) == 2 else None
    return ComparisonView(records, compare_runs(ws.db, records), tuple(keys), why)
