"""A fleet of reproductions: ``tether reproduce --all | -f FILTER | --alias A | RUN…``.

1. **select**: the runs named, matched by a filter, or behind a registry alias;
2. **plan**: every run is planned before anything runs; a plan with problems is
   refused with its reasons and the others go on;
3. **execute**: the plans run in parallel on an executor: threads on this machine
   (``local``, each a ``reproduce.reproduce``), or tasks on a Ray cluster (``ray``,
   ``on_ray.py``) whose new runs come back into this project's database;
4. **report**: one row per run (verdict, the worst output or metric, duration), as a
   table, JSON, or JUnit with one test case per run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tether.errors import TetherError, UsageError
from tether.reporting import SILENT, Reporter
from tether.repositories import runs as runs_repo
from tether.repro.plan import Plan, Problem, make_plan
from tether.repro.reproduce import Options, Reproduction
from tether.repro.verify import (
    DIVERGED,
    FAILED,
    REPRODUCED,
    UNVERIFIED,
    WITHIN_TOLERANCE,
    MetricCheck,
    Verification,
)
from tether.runs.record import RunRecord
from tether.workspace import Workspace

Executor = Literal["local", "ray"]
EXECUTORS: tuple[Executor, ...] = ("local", "ray")
REFUSED = "REFUSED"  # the plan had problems: nothing ran
ERROR = "ERROR"  # the executor could not finish the reproduction
GOOD = (REPRODUCED, WITHIN_TOLERANCE)
EXIT_NOT_ALL_REPRODUCED = 3


@dataclass(frozen=True)
class Selection:
    """Which runs: named ones, every run, those a filter matches, those behind an alias.
    The kinds add up; a run selected twice is reproduced once."""

    refs: tuple[str, ...] = ()
    every: bool = False
    where: str | None = None  # the runs filter language (tether runs list -f)
    alias: str | None = None  # every model version with this alias

    @property
    def empty(self) -> bool:
        return not (self.refs or self.every or self.where or self.alias)


@dataclass(frozen=True)
class Target:
    label: str  # the run's name, or MODEL:vN (alias) for a version
    run: RunRecord | None
    refusal: Problem | None = None  # found no run to plan


@dataclass(frozen=True)
class Selected:
    targets: tuple[Target, ...]
    notes: tuple[str, ...]  # what a broad selection left out, and why


@dataclass(frozen=True)
class FleetOptions:
    reproduce: Options = field(default_factory=Options)
    packages: str = "all"  # --env recreate: every recorded package, or those imported
    jobs: int = 0  # at once; 0: the executor's default (local: 1, ray: as scheduled)
    executor: Executor = "local"
    address: str | None = None  # the Ray cluster (ray://HOST:PORT or HOST:PORT)


@dataclass(frozen=True)
class Outcome:
    label: str
    run_id: str | None
    verdict: str  # a verification verdict, REFUSED or ERROR
    reason: str
    worst: str  # the worst output or metric, "" when there is nothing to single out
    duration: float
    problems: tuple[Problem, ...] = ()
    reproduction: Reproduction | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in GOOD

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "run": self.run_id,
            "verdict": self.verdict,
            "reason": self.reason,
            "worst": self.worst,
            "duration": round(self.duration, 3),
            "problems": [{"message": p.message, "hint": p.hint} for p in self.problems],
            "reproduction": None if self.reproduction is None else self.reproduction.to_json(),
        }


@dataclass(frozen=True)
class FleetReport:
    outcomes: tuple[Outcome, ...]
    executor: Executor
    jobs: int
    duration: float
    notes: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return 0 if self.outcomes and all(o.ok for o in self.outcomes) else EXIT_NOT_ALL_REPRODUCED

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.verdict] = out.get(o.verdict, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "executor": self.executor,
            "jobs": self.jobs,
            "duration": round(self.duration, 3),
            "counts": self.counts(),
            "notes": list(self.notes),
            "runs": [o.to_json() for o in self.outcomes],
        }


# -- select -------------------------------------------------------------------------------


def select(ws: Workspace, selection: Selection, *, report: Reporter = SILENT) -> Selected:
    """The runs to reproduce, in the order asked (named ones first, then by start)."""
    if selection.empty:
        raise UsageError(
            "no runs selected", hint="name RUN(s), or pass --all, -f FILTER or --alias ALIAS"
        )
    targets: list[Target] = []
    notes: list[str] = []
    for ref in selection.refs:  # a name that matches nothing is bad input: stop here
        run = runs_repo.load_run(ws.db, ref, on_ambiguous=report.warn)
        targets.append(Target(run.name or run.id[:12], run))
    if selection.alias:
        targets += _behind_alias(ws, selection.alias)
    if selection.every or selection.where:
        targets += _matching(ws, selection.where, notes)
    seen: set[str] = set()
    unique = []
    for t in targets:
        key = t.run.id if t.run is not None else t.label
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return Selected(tuple(unique), tuple(notes))


def _behind_alias(ws: Workspace, alias: str) -> list[Target]:
    from tether.repositories import models as models_repo

    with ws.db.snapshot() as conn:
        pointed = sorted(
            (model, by_alias[alias])
            for model, by_alias in models_repo.all_aliases(conn).items()
            if alias in by_alias
        )
        versions = [(m, models_repo.versions(conn, m, v)) for m, v in pointed]
    if not pointed:
        raise UsageError(
            f"no model version has the alias {alias!r}",
            hint="see the aliases with 'tether model list'; set one with "
            "'tether model alias MODEL ALIAS VERSION'",
        )
    targets = []
    for _, found in versions:
        for version in found:
            label = f"{version.ref} ({alias})"
            if version.run_id is None:
                problem = Problem(
                    f"{version.ref} was registered without a recorded run",
                    "register versions from runs: tether model register MODEL --from RUN",
                )
                targets.append(Target(label, None, problem))
                continue
            try:
                run = runs_repo.load_run(ws.db, version.run_id)
            except TetherError:
                problem = Problem(
                    f"{version.ref} was made by run {version.run_id[:12]}, which is not in "
                    "this project's database",
                    "pull it: tether sync pull (or reproduce where it was recorded)",
                )
                targets.append(Target(label, None, problem))
                continue
            targets.append(Target(label, run))
    return targets


def _matching(ws: Workspace, where: str | None, notes: list[str]) -> list[Target]:
    from tether.repositories.run_filter import list_runs

    found = list_runs(ws.db, where=where, sort="started", limit=None).runs
    runs = runs_repo.load_runs(ws.db, [r.id for r in found])
    kept, reproductions, unfinished = [], 0, 0
    for run in runs:
        if "tether.reproduces" in run.tags:
            reproductions += 1  # a reproduction is checked by reproducing its original
        elif run.status != "finished":
            unfinished += 1  # running, failed or killed: no result to reproduce
        else:
            kept.append(Target(run.name or run.id[:12], run))
    if reproductions:
        notes.append(f"left out {reproductions} reproduction(s) of other runs")
    if unfinished:
        notes.append(f"left out {unfinished} run(s) that did not finish (running, failed, killed)")
    return kept


# -- plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    target: Target
    plan: Plan | None  # None: refused before planning
    problems: tuple[Problem, ...]

    @property
    def runnable(self) -> bool:
        return self.plan is not None and not self.problems


def plan_all(
    ws: Workspace,
    targets: Sequence[Target],
    options: FleetOptions,
    *,
    extra_checks: Callable[[Plan], Sequence[Problem]] | None = None,
) -> list[Planned]:
    """A plan for each target; ``extra_checks`` adds an executor's own refusals."""
    planned = []
    for t in targets:
        if t.run is None:
            assert t.refusal is not None
            planned.append(Planned(t, None, (t.refusal,)))
            continue
        try:
            plan = make_plan(ws, t.run, options.reproduce.env_mode, options.packages)
        except TetherError as e:
            planned.append(Planned(t, None, (Problem(e.message, e.hint or ""),)))
            continue
        problems = plan.problems + tuple(extra_checks(plan) if extra_checks else ())
        planned.append(Planned(t, plan, problems))
    return planned


# -- execute ------------------------------------------------------------------------------


def reproduce_fleet(
    ws: Workspace,
    selection: Selection,
    options: FleetOptions,
    *,
    report: Reporter = SILENT,
) -> FleetReport:
    """Select, plan and reproduce; one outcome per selected run."""
    started = time.time()
    if options.jobs < 0:
        raise UsageError(f"--jobs {options.jobs} is not a positive number", hint="e.g. --jobs 4")
    if options.executor == "local" and options.jobs == 0:
        options = replace(options, jobs=1)
    # N builds of recreated environments must not draw N progress bars over each other.
    options = replace(options, reproduce=replace(options.reproduce, show_progress=False))
    if options.reproduce.workdir is not None:
        raise UsageError(
            "--workdir names one folder; a fleet needs one per run",
            hint="use --keep to keep each rebuilt project in its own temporary folder",
        )
    selected = select(ws, selection, report=report)
    for note in selected.notes:
        report.note(note)
    if options.executor == "ray":
        from tether.repro import on_ray

        cluster = on_ray.connect(options.address, report=report)
        planned = plan_all(ws, selected.targets, options, extra_checks=cluster.problems)
        ran = cluster.execute(ws, [p.plan for p in planned if p.runnable and p.plan], options)
    elif options.executor == "local":
        planned = plan_all(ws, selected.targets, options)
        ran = _execute_local(ws, [p.plan for p in planned if p.runnable and p.plan], options)
    else:
        raise UsageError(f"unknown executor {options.executor!r}", hint="local or ray")
    outcomes: dict[str, Outcome] = {}
    total = sum(1 for p in planned if p.runnable)
    for run_id, outcome in ran:
        outcomes[run_id] = outcome
        report.note(f"[{len(outcomes)}/{total}] {outcome.verdict}: {outcome.label}")
    ordered = []
    for p in planned:
        if not p.runnable:
            first = p.problems[0]
            ordered.append(
                Outcome(
                    p.target.label,
                    p.target.run.id if p.target.run else None,
                    REFUSED,
                    f"{first.message} (fix: {first.hint})" if first.hint else first.message,
                    "",
                    0.0,
                    p.problems,
                )
            )
        else:
            assert p.plan is not None
            ordered.append(replace(outcomes[p.plan.run.id], label=p.target.label))
    return FleetReport(
        tuple(ordered),
        options.executor,
        options.jobs,
        time.time() - started,
        selected.notes,
    )


def outcome_of(label: str, result: Reproduction) -> Outcome:
    v = result.verification
    return Outcome(
        label, result.plan.run.id, v.verdict, v.reason, worst(v), result.duration, (), result
    )


def failed_outcome(plan: Plan, error: BaseException, duration: float) -> Outcome:
    message = (
        error.message if isinstance(error, TetherError) else f"{type(error).__name__}: {error}"
    )
    hint = error.hint if isinstance(error, TetherError) else None
    reason = f"{message} (fix: {hint})" if hint else message
    return Outcome(label_of(plan.run), plan.run.id, ERROR, reason, "", duration)


def label_of(run: RunRecord) -> str:
    return run.name or run.id[:12]


def _execute_local(
    ws: Workspace, plans: Sequence[Plan], options: FleetOptions
) -> Iterator[tuple[str, Outcome]]:
    """Threads, each running one reproduction at a time: the work is in the commands'
    processes, so threads only wait. Their output is in each new run's log, not on the
    terminal, where N commands would interleave."""
    from tether.repro.reproduce import reproduce

    def one(plan: Plan) -> Outcome:
        started = time.time()
        try:
            with open(os.devnull, "wb") as sink:
                result = reproduce(ws, plan, options.reproduce, stdout=sink, stderr=sink)
        except Exception as e:  # one broken reproduction must not stop the fleet
            return failed_outcome(plan, e, time.time() - started)
        return outcome_of(label_of(plan.run), result)

    with ThreadPoolExecutor(max_workers=options.jobs, thread_name_prefix="reproduce") as pool:
        futures = {pool.submit(one, plan): plan for plan in plans}
        for future in as_completed(futures):
            yield futures[future].run.id, future.result()


# -- report -------------------------------------------------------------------------------


def worst(v: Verification) -> str:
    """The output or metric that most needs a look: a missing or differing output, else
    the metric furthest from its recorded value (relative), if any moved."""
    for status in ("missing", "differs"):
        for o in v.outputs:
            if o.status == status:
                return f"output {o.path} {status}"
    moved = [
        m
        for m in v.metrics
        if m.status in ("outside", "missing", "within")
        or (m.expected is not None and m.actual is not None and m.expected != m.actual)
    ]
    if not moved:
        return ""

    def distance(m: MetricCheck) -> float:
        if m.status == "missing" or m.expected is None or m.actual is None:
            return math.inf
        if math.isnan(m.expected) or math.isnan(m.actual):
            return math.inf
        scale = max(abs(m.expected), 1e-12)
        return abs(m.actual - m.expected) / scale

    m = max(moved, key=lambda m: (m.status == "outside", distance(m)))
    if m.status == "missing":
        return f"metric {m.key} missing"
    d = distance(m)
    change = f"{m.expected:.6g} -> {m.actual:.6g}"
    rel = "" if math.isinf(d) else f" ({d:+.2%})".replace("+", "")
    return f"metric {m.key} {change}{rel} {m.status}"


def junit_xml(report: FleetReport) -> bytes:
    """One test suite, one test case per run: a CI page lists the fleet."""
    import xml.etree.ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name="tether.reproduce",
        tests=str(len(report.outcomes)),
        time=f"{report.duration:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="executor", value=report.executor)
    ET.SubElement(props, "property", name="jobs", value=str(report.jobs))
    failures = errors = 0
    for o in report.outcomes:
        case = ET.SubElement(
            suite, "testcase", name=o.label, classname="tether.reproduce", time=f"{o.duration:.3f}"
        )
        message = o.reason + (f"; worst: {o.worst}" if o.worst else "")
        if o.verdict in (REFUSED, ERROR):
            errors += 1
            ET.SubElement(case, "error", message=message, type=o.verdict).text = (
                "\n".join(f"{p.message}\nfix: {p.hint}" for p in o.problems) or message
            )
        elif o.verdict in (DIVERGED, FAILED, UNVERIFIED):
            failures += 1
            ET.SubElement(case, "failure", message=message, type=o.verdict).text = message
        out = f"verdict: {o.verdict}\nrun: {o.run_id or '-'}"
        if o.reproduction is not None:
            out += f"\nreproduction: {o.reproduction.run_id}"
        ET.SubElement(case, "system-out").text = out
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    text: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return text + b"\n"
