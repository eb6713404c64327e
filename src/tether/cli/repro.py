"""Reproducibility commands: reproduce, explain, doctor."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tether.cli import cli
from tether.cli._output import emit_json, human_size, info, lines, secho, short_digest, table, warn
from tether.cli._workspace import open_workspace

if TYPE_CHECKING:
    from tether.repro.fleet import FleetOptions, Selection
    from tether.repro.plan import Plan
    from tether.repro.reproduce import Reproduction
    from tether.workspace import Workspace


def _show_plan(plan: Plan) -> None:
    run = plan.run
    code = plan.code
    info(f"plan: reproduce run {run.id[:12]}" + (f" ({run.name})" if run.name else ""))
    if code.kind == "git":
        line = f"  code      commit {str(code.commit or '(none)')[:12]}"
        if code.diff_digest:
            line += f" + uncommitted diff ({code.diff_stat or 'binary'})"
        if code.untracked:
            line += f" + {len(code.untracked)} untracked source file(s)"
        info(line)
    else:
        info(f"  code      snapshot {short_digest(code.snapshot_digest)} (not a git project)")
    for item in plan.inputs:
        where = item.source + (f" {item.remote}" if item.remote else "")
        digest = short_digest(item.digest)
        info(f"  input     {item.path}  {digest}  {human_size(item.size)}  from {where}")
    for path in plan.outputs:
        info(f"  output    {path}  (removed, then verified)")
    if plan.environment is not None:
        info(
            f"  env       {plan.env_mode}: recorded {plan.environment.python.label}, "
            f"{len(plan.environment.packages)} package(s)"
            + (
                f", installing the {len(plan.spec.install)} imported and their dependencies"
                if plan.spec and plan.spec.install
                else ""
            )
            + (f" -> uv venv {plan.spec.key}" if plan.spec else "")
        )
    info(f"  seed      {plan.seed if plan.seed is not None else '(none recorded)'}")
    if plan.env_vars:
        info("  variables " + " ".join(f"{k}={v}" for k, v in sorted(plan.env_vars.items())))
    info(f"  command   {' '.join(plan.command)}  (in {plan.cwd})")
    for message in plan.warnings:
        warn(message)
    for problem in plan.problems:
        secho(f"  cannot: {problem.message}", fg="red", err=True)
        click.echo(f"          fix: {problem.hint}", err=True)


def _number(x: float | None) -> str:
    if x is None:
        return "-"
    return "nan" if math.isnan(x) else f"{x:.6g}"


def _show_result(result: Reproduction) -> None:
    v = result.verification
    rows = [[o.path, o.status, short_digest(o.expected), short_digest(o.actual)] for o in v.outputs]
    if rows:
        click.echo("")
        table(["output", "status", "recorded", "reproduced"], rows)
    mrows = [
        [
            m.key,
            m.status,
            _number(m.expected),
            _number(m.actual),
            "-" if m.delta is None else f"{m.delta:+.3g}",
            m.tolerance or "exact",
        ]
        for m in v.metrics
    ]
    if mrows:
        click.echo("")
        table(["metric", "status", "recorded", "reproduced", "delta", "tolerance"], mrows)
    if result.drift is not None and not result.drift.same:
        changed = [c for c in result.drift.changes if c.section in ("python", "packages")]
        if changed:
            click.echo("")
            click.echo(
                "environment drift: "
                + "; ".join(f"{c.name} {c.old or '-'} -> {c.new or '-'}" for c in changed[:8])
                + (f" (+{len(changed) - 8} more)" if len(changed) > 8 else "")
            )
    for message in result.warnings:
        warn(message)
    colour = "green" if v.reproduced else "yellow" if v.verdict == "UNVERIFIED" else "red"
    click.echo("")
    secho(f"{v.verdict}: {v.reason}", fg=colour, bold=True)
    label = result.plan.run.name or result.plan.run.id[:12]
    click.echo(f"reproduction recorded as run {result.run_id[:12]}")
    if not v.reproduced:
        click.echo(f"why: tether explain {label} {result.run_id[:12]}")
    if result.workdir is not None:
        click.echo(f"rebuilt project kept in {result.workdir}")


@cli.command()
@click.argument("run_refs", metavar="[RUN]...", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every finished run (not reproductions).")
@click.option(
    "-f",
    "--filter",
    "where",
    metavar="FILTER",
    help="The finished runs FILTER matches, as in 'tether runs list -f'.",
)
@click.option(
    "--alias",
    metavar="ALIAS",
    help="The runs behind every model version with ALIAS (e.g. production).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    help="Reproductions at once (local default: 1; ray default: as many as the cluster runs).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: on this machine; ray: one Ray task per run (pip install 'tether-ml[ray]').",
)
@click.option(
    "--address",
    metavar="ADDRESS",
    help="With --executor ray: the cluster (ray://HOST:10001 or HOST:6379; default "
    "RAY_ADDRESS, else a Ray started for this command).",
)
@click.option(
    "--env",
    "env_mode",
    type=click.Choice(["current", "recreate"]),
    default="current",
    show_default=True,
    help="current: this interpreter, after showing the drift; recreate: a uv virtualenv "
    "of the recorded Python and package versions (cached).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Rebuild the project here (new or empty folder; kept). Default: a temporary folder.",
)
@click.option("--keep", is_flag=True, help="Keep the temporary folder(s) with the rebuilt project.")
@click.option(
    "-t",
    "--tolerance",
    "tolerances",
    multiple=True,
    metavar="KEY=ABS|KEY=REL%",
    help="Allowed difference of a metric (KEY may be a glob), e.g. rmse=0.001 or 'recall=1%'.",
)
@click.option("--exact", is_flag=True, help="Accept only bit-identical outputs and equal metrics.")
@click.option("--series", is_flag=True, help="Compare every step of every metric, not the last.")
@click.option(
    "--packages",
    type=click.Choice(["all", "imported"]),
    default="all",
    show_default=True,
    help="With --env recreate: every recorded package, or only those the run imported "
    "(and their dependencies, at the recorded versions).",
)
@click.option(
    "--verify-outside",
    is_flag=True,
    help="Also verify the side effects: files the run wrote outside the project.",
)
@click.option("--plan", "plan_only", is_flag=True, help="Print the plan and stop.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a JUnit XML report: one test case per output and metric of RUN, or "
    "one per run for several.",
)
@click.pass_context
def reproduce(
    ctx: click.Context,
    run_refs: tuple[str, ...],
    every: bool,
    where: str | None,
    alias: str | None,
    jobs: int | None,
    executor: str,
    address: str | None,
    env_mode: str,
    workdir: Path | None,
    keep: bool,
    tolerances: tuple[str, ...],
    exact: bool,
    series: bool,
    packages: str,
    verify_outside: bool,
    plan_only: bool,
    as_json: bool,
    junit: Path | None,
) -> None:
    """Re-run RUN from its recorded code, inputs, environment and seed, and verify the
    result: outputs bit for bit, metrics within tolerances.

    \b
    The plan is printed first; anything that cannot be rebuilt (a blob on no store or
    remote, a lost commit, a missing interpreter) stops it before anything runs.
    The reproduction is recorded as a new run linked to RUN.

    \b
    A fleet: several RUNs, --all, -f FILTER or --alias ALIAS (they add up). Every run
    is planned first; those that cannot be rebuilt are refused with their reasons and
    the others run, --jobs at a time, here or on a Ray cluster (--executor ray). One
    report: a row per run with its verdict, worst output or metric and duration;
    --junit writes one test case per run. Exit status 0 only if every run reproduced.

    \b
    Verdicts: REPRODUCED (bit-identical), WITHIN TOLERANCE, DIVERGED, UNVERIFIED (the
    run recorded no output or metric: no evidence), FAILED.
    Exit status: 0 when reproduced or within tolerance, 3 when not (UNVERIFIED
    included), 1 or 2 on errors.
    """
    from tether.repro.reproduce import Options, prepare
    from tether.repro.reproduce import reproduce as run_reproduction
    from tether.repro.verify import parse_tolerance

    parsed = tuple(parse_tolerance(t) for t in tolerances)
    options = Options(
        env_mode=env_mode,
        workdir=workdir,
        keep=keep,
        tolerances=parsed,
        exact=exact,
        series=series,
        verify_outside=verify_outside,
        show_progress=sys.stderr.isatty(),
    )
    if address is not None and executor != "ray":
        from tether.errors import UsageError

        raise UsageError("--address is for --executor ray", hint="add --executor ray")
    ws = open_workspace(ctx)
    if len(run_refs) != 1 or every or where or alias or jobs or executor != "local":
        from tether.repro.fleet import FleetOptions, Selection

        fleet = FleetOptions(
            options, packages, jobs or 0, "ray" if executor == "ray" else "local", address
        )
        _reproduce_fleet(ctx, ws, Selection(run_refs, every, where, alias), fleet, plan_only,
                         as_json, junit)  # fmt: skip
        return
    plan = prepare(ws, run_refs[0], env_mode, packages=packages, report=lines())
    _show_plan(plan)
    plan.check()
    if plan_only:
        if as_json:
            emit_json(plan.to_json())
        return
    # With --json, stdout carries only the report: the command's output goes to stderr.
    out = sys.stderr.buffer if as_json else None
    result = run_reproduction(ws, plan, options, report=lines(), stdout=out)
    if junit is not None:
        from tether.repro.report import junit_xml
        from tether.store.atomic import write_atomic

        junit.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(junit.resolve(), junit_xml(result))
    if as_json:
        emit_json(result.to_json())
    else:
        _show_result(result)
    ctx.exit(result.exit_code)


def _reproduce_fleet(
    ctx: click.Context,
    ws: Workspace,
    selection: Selection,
    options: FleetOptions,
    plan_only: bool,
    as_json: bool,
    junit: Path | None,
) -> None:
    from tether.repro import fleet

    if plan_only:
        selected = fleet.select(ws, selection, report=lines())
        planned = fleet.plan_all(ws, selected.targets, options)
        for note in selected.notes:
            info(note)
        if as_json:
            emit_json(
                [
                    {
                        "label": p.target.label,
                        "run": p.target.run.id if p.target.run else None,
                        "plan": p.plan.to_json() if p.plan else None,
                        "problems": [{"message": x.message, "hint": x.hint} for x in p.problems],
                    }
                    for p in planned
                ]
            )
            return
        rows = [
            [p.target.label, "ready" if p.runnable else "refused",
             "" if p.runnable else p.problems[0].message]
            for p in planned
        ]  # fmt: skip
        table(["run", "plan", "why not"], rows)
        return
    report = fleet.reproduce_fleet(ws, selection, options, report=lines())
    if junit is not None:
        from tether.store.atomic import write_atomic

        junit.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(junit.resolve(), fleet.junit_xml(report))
    if as_json:
        emit_json(report.to_json())
        ctx.exit(report.exit_code)
    rows = [
        [o.label, o.verdict, o.worst or "-", f"{o.duration:.1f} s",
         o.reproduction.run_id[:12] if o.reproduction else "-"]
        for o in report.outcomes
    ]  # fmt: skip
    if rows:
        click.echo("")
        table(["run", "verdict", "worst output/metric", "duration", "reproduction"], rows)
    for o in report.outcomes:
        if not o.ok:
            colour = "yellow" if o.verdict == "UNVERIFIED" else "red"
            secho(f"{o.label}: {o.verdict}: {o.reason}", fg=colour, err=True)
    counts = ", ".join(f"{n} {v.lower()}" for v, n in sorted(report.counts().items()))
    jobs = f"{report.jobs} at a time" if report.jobs else "as the cluster schedules them"
    click.echo(
        f"\n{len(report.outcomes)} run(s): {counts or 'none'} in {report.duration:.1f} s "
        f"({report.executor}, {jobs})"
    )
    if junit is not None:
        click.echo(f"JUnit report: {junit}")
    ctx.exit(report.exit_code)


@cli.command()
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@click.pass_context
def explain(ctx: click.Context, run_a: str, run_b: str, as_json: bool) -> None:
    """Why the results of RUN_A and RUN_B differ: causes ranked by likely impact.

    \b
    Compares input data (files, sizes, CSV/Parquet rows), code (commits, uncommitted
    changes), parameters, seeds, packages (numerical libraries first), interpreter,
    thread settings, variables and hardware. When everything recorded is equal but
    results differ, it says so and names the nondeterminism the runs were exposed to.
    """
    from tether.api import runs
    from tether.repro.explain import explain as explain_runs

    ws = open_workspace(ctx)
    a, b = runs.get(ws, run_a, report=lines()), runs.get(ws, run_b, report=lines())
    result = explain_runs(ws, a, b)
    if as_json:
        emit_json(result.to_json())
        return
    name_a, name_b = a.name or a.id[:12], b.name or b.id[:12]
    click.echo(f"A = {name_a} ({a.id[:12]}), B = {name_b} ({b.id[:12]})")
    if result.results_differ:
        click.echo("results that differ:")
        for o in result.outputs:
            change = f"{short_digest(o.expected)} -> {short_digest(o.actual)}"
            click.echo(f"  output  {o.path}: {o.status} ({change})")
        for m in result.metrics:
            click.echo(f"  metric  {m.key}: {_number(m.expected)} -> {_number(m.actual)}")
    else:
        click.echo("results: every output and metric is the same")
    if result.nondeterminism:
        secho(
            "everything recorded is the same, yet the results differ: the cause is "
            "nondeterminism, not a change",
            fg="yellow",
            bold=True,
        )
    if not result.causes:
        click.echo("causes: nothing recorded differs")
        return
    click.echo("likely causes, most likely first:")
    for i, cause in enumerate(result.causes, 1):
        secho(f"{i:>3}. [{cause.category}] {cause.title}", bold=i == 1)
        for line in cause.details[:12]:
            click.echo(f"       {line}")
        if len(cause.details) > 12:
            click.echo(f"       … and {len(cause.details) - 12} more (--json lists all)")


@cli.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def doctor(ctx: click.Context, run_ref: str | None, as_json: bool) -> None:
    """Reproducibility hazards of the project, and of RUN when given, each with a fix.

    \b
    Project: no lock file, unpinned requirements, not in git, uncommitted or untracked
    source files, tracked data not added, pointers not committed.
    Run: inputs that are not versioned, read from absolute paths or fetched from URLs;
    no seed; random PYTHONHASHSEED; torch without deterministic algorithms;
    pickle-format models; source files too big to snapshot.

    Exit status: 0 when nothing was found, 1 otherwise.
    """
    from tether.api import runs
    from tether.repro.doctor import check_project, check_run

    ws = open_workspace(ctx)
    findings = check_project(ws)
    if run_ref is not None:
        findings += check_run(ws, runs.get(ws, run_ref, report=lines()))
    if as_json:
        emit_json({"ok": not findings, "findings": [f.to_json() for f in findings]})
    elif not findings:
        secho("no reproducibility hazards found", fg="green")
        if run_ref is None:
            click.echo("check a run too: tether doctor latest")
    else:
        for f in findings:
            where = "project" if f.subject == "project" else f"run {f.subject[:12]}"
            secho(f"! {f.message}", fg="yellow")
            click.echo(f"  {where} · {f.code} · fix: {f.fix}")
        click.echo(f"\n{len(findings)} hazard(s)")
    ctx.exit(1 if findings else 0)
