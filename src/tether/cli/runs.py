"""Run commands: run, runs list/show/compare/metrics/log/delete, env show/diff."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tether.cli import cli
from tether.cli._output import (
    emit_json,
    human_size,
    info,
    lines,
    short_digest,
    table,
    timestamp,
    warn,
)
from tether.cli._workspace import open_workspace

if TYPE_CHECKING:
    pass

_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        if key in out and out[key] != value:
            raise click.BadParameter(f"{key!r} given twice with different values", param_hint=what)
        out[key] = value
    return out


def _duration(seconds: float | None) -> str:
    from tether import units

    return "-" if seconds is None else units.duration(seconds)


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--name", help="A name for the run (several runs may share one).")
@click.option(
    "--seed", type=int, help="Set PYTHONHASHSEED and TETHER_SEED for the command; recorded."
)
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter.")
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    type=click.Path(),
    help="A file or folder the command writes (stored even if not seen being opened).",
)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (mutable).")
@click.option(
    "--store-inputs", is_flag=True, help="Also keep a copy of every input file in the store."
)
@click.option(
    "--metrics",
    "metric_files",
    multiple=True,
    type=click.Path(),
    help="A metrics file the script writes (JSON, JSON Lines, CSV, TSV, or a dvclive "
    "folder), read into the run after it ends. Repeatable.",
)
@click.option(
    "--autolog/--no-autolog",
    default=None,
    help="Record what a training means (params, metrics, the model) with no code, for "
    "scikit-learn, Lightning, Transformers, Keras, XGBoost and LightGBM; default: on when "
    "the script calls tether.start_run().",
)
@click.option(
    "--no-autoparams",
    is_flag=True,
    help="Do not record the command line the script parses (argparse, click) or its "
    "Hydra config as params.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    name: str | None,
    seed: int | None,
    params: tuple[str, ...],
    outputs: tuple[str, ...],
    tags: tuple[str, ...],
    store_inputs: bool,
    metric_files: tuple[str, ...],
    autolog: bool | None,
    no_autoparams: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND and record it: code, inputs, outputs, environment, seed, output.

    \b
      tether run --seed 42 -p k=20 -- python train.py --k 20

    Recorded without changes to the script: the git commit, branch and uncommitted
    diff (or a snapshot of the sources outside git); every file the Python processes
    read or wrote (outputs inside the project are stored); the interpreter's packages,
    lock files, OS, CPU, GPU and result-changing variables; seeding calls; stdout and
    stderr (still shown live). The command's exit status is tether's; a crash, Ctrl-C
    or SIGTERM is recorded as failed or killed. Scripts can log metrics with
    tether.start_run(), which joins this run.

    Params come without code too: what the script's argparse parser or click command
    parsed, and the config Hydra composed (flattened with dots), tagged
    tether.autoparams. A -p or start_run(params=...) value wins; --no-autoparams
    turns this off.
    """
    from tether.runs.launch import RunSpec, run_command

    ws = open_workspace(ctx)
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    spec = RunSpec(
        argv,
        name=name,
        seed=seed,
        params=_pairs(params, "-p"),
        tags=_pairs(tags, "--tag"),
        outputs=outputs,
        store_inputs=store_inputs,
        cwd=ctx.find_root().obj.get("project"),  # -C DIR: as if started there
        autoparams=not no_autoparams,
        metrics=metric_files,
        autolog=autolog,
    )
    result = run_command(ws, spec, report=lines())
    for message in result.warnings:
        warn(message)
    inputs = sum(1 for f in result.files if f.role == "input")
    outs = sum(1 for f in result.files if f.role == "output")
    status = result.status + (f" ({result.reason})" if result.reason else "")
    info(
        f"tether: run {result.run_id[:12]} {status} in {_duration(result.duration)}; "
        f"{inputs} input(s), {outs} output(s); 'tether runs show {result.run_id[:12]}'"
    )
    ctx.exit(result.exit_code or 0)


@cli.group()
def runs() -> None:
    """List, show, compare and delete recorded runs."""


@runs.command("list")
@click.option(
    "-f",
    "--filter",
    "where",
    metavar="EXPR",
    help="e.g. \"metrics.rmse < 0.9 and params.model = 'svd'\" (see docs/runs.md).",
)
@click.option("--sort", metavar="KEY", help="e.g. metrics.rmse, -started, 'params.k desc'.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True)
@_json
@click.pass_context
def runs_list(
    ctx: click.Context, where: str | None, sort: str | None, limit: int, as_json: bool
) -> None:
    """List runs, newest first, optionally filtered and sorted.

    The filter language: comparisons (= != < <= > >=, in (...), like, is null) of
    metrics.KEY (last value), params.KEY, tags.KEY, status, name, id, user, host, seed,
    exit_code, started, ended, duration, commit, branch, env; joined with and, or,
    not and parentheses. Quote text values: name = 'svd'.
    """
    from tether.api import runs

    result = runs.list_runs(open_workspace(ctx), runs.RunQuery(where, sort, limit))
    if as_json:
        emit_json(result.to_json())
        return
    if not result.runs:
        info("no runs match" if where else "no runs yet: record one with 'tether run -- CMD'")
        return
    mentioned = re.findall(r"(metrics|params)\.(`[^`]+`|[A-Za-z0-9_./:-]+)", f"{where} {sort}")
    metric_cols = [k.strip("`") for t, k in mentioned if t == "metrics"]
    param_cols = [k.strip("`") for t, k in mentioned if t == "params"]
    for r in result.runs:
        for k in r.metrics:
            if len(metric_cols) < 4 and k not in metric_cols:
                metric_cols.append(k)
    metric_cols = list(dict.fromkeys(metric_cols))
    param_cols = list(dict.fromkeys(param_cols))
    columns = ["id", "name", "status", "started", "duration"]
    columns += [f"params.{k}" for k in param_cols] + [f"metrics.{k}" for k in metric_cols]
    rows = []
    for r in result.runs:
        row = [r.id[:12], r.name or "-", r.status, timestamp(r.started), _duration(r.duration)]
        row += [r.params.get(k, "-") for k in param_cols]
        row += [f"{r.metrics[k].last:.6g}" if k in r.metrics else "-" for k in metric_cols]
        rows.append(row)
    table(columns, rows)
    if result.matched > len(result.runs):
        info(f"({len(result.runs)} of {result.matched} shown; --limit to see more)")


@runs.command("show")
@click.argument("run_ref", metavar="RUN")
@_json
@click.pass_context
def runs_show(ctx: click.Context, run_ref: str, as_json: bool) -> None:
    """Everything recorded about RUN (an id, id prefix, name, or 'latest').

    Shows the command, status, code state, params, metrics, the files read and
    written with their digests, the environment summarized, and seeding.
    """
    from tether.api import runs

    detail = runs.show(open_workspace(ctx), run_ref, report=lines())
    if as_json:
        emit_json(detail.to_json())
        return
    r, env = detail.run, detail.environment
    click.echo(f"run      {r.id}" + (f"  ({r.name})" if r.name else ""))
    status = r.status + (f": {r.reason}" if r.reason else "")
    click.echo(f"status   {status}")
    click.echo(f"command  {' '.join(r.command)}   (in {r.cwd})")
    click.echo(
        f"started  {timestamp(r.started)}, took {_duration(r.duration)}, by {r.user}@{r.host}"
    )
    seeding = [f"{s.call}({s.seed})" for s in r.capture.seeding]
    if r.capture.seed_everything:
        seeding.append(f"tether.seed_everything({r.capture.seed_everything.get('seed')})")
    click.echo(
        f"seed     {r.seed if r.seed is not None else '-'}; script seeding: "
        + (", ".join(seeding) if seeding else "none seen")
    )
    for link in detail.links:
        verdict = f" ({link.detail['verdict']})" if link.detail.get("verdict") else ""
        if link.source == r.id:
            click.echo(f"{link.kind:<8} {link.target[:12]}{verdict}")
        else:
            click.echo(f"{link.kind.removesuffix('s') + 'd by':<8} {link.source[:12]}{verdict}")
    code = r.code
    if code.kind == "git":
        line = f"{code.commit or '(no commit yet)'}"
        if code.branch:
            line += f" on {code.branch}"
        if code.dirty:
            line += f", uncommitted changes ({code.diff_stat or 'untracked files'})"
        click.echo(f"code     git {line}")
        if code.remote:
            click.echo(f"         remote {code.remote}")
        for path in code.untracked[:10]:
            click.echo(f"         untracked {path}")
    elif code.kind == "files":
        click.echo(f"code     not in git; source snapshot {short_digest(code.snapshot_digest)}")
    if r.params:
        click.echo("params")
        for k, v in r.params.items():
            click.echo(f"  {k} = {v}")
    if r.tags:
        click.echo("tags")
        for k, v in r.tags.items():
            click.echo(f"  {k} = {v}")
    if r.metrics:
        click.echo("metrics")
        table(
            ["  key", "last", "step", "min", "max", "points"],
            [
                [
                    f"  {m.key}",
                    f"{m.last:.6g}",
                    str(m.step),
                    f"{m.min:.6g}",
                    f"{m.max:.6g}",
                    str(m.count),
                ]
                for m in r.metrics.values()
            ],
        )
    for role, heading in (
        ("input", "inputs"),
        ("output", "outputs"),
        ("artifact", "artifacts"),
        ("side-effect", "side effects (written outside the project; not verified)"),
    ):
        files = r.files_with_role(role)
        if files:
            click.echo(heading)
            table(
                ["  path", "digest", "size", "how"],
                [
                    [
                        f"  {f.path}",
                        short_digest(f.digest),
                        human_size(f.size),
                        f.source + (", stored" if f.stored else ""),
                    ]
                    for f in files
                ],
            )
    if env is not None:
        click.echo(
            f"env      {short_digest(r.env_digest)}: {env.python.label}, "
            f"{len(env.packages)} packages, {env.os.distro or env.os.system} {env.os.release}"
        )
        if env.env_vars:
            click.echo("         " + " ".join(f"{k}={v}" for k, v in env.env_vars.items()))
    for message in r.capture.warnings:
        warn(message)


@runs.command("compare")
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@click.option("--all", "show_all", is_flag=True, help="Show equal rows too.")
@_json
@click.pass_context
def runs_compare(
    ctx: click.Context, run_refs: tuple[str, ...], show_all: bool, as_json: bool
) -> None:
    """Show RUNs side by side: only what differs (params, metrics, code, inputs,
    outputs, environment, packages) unless --all."""
    from tether.api import runs

    comparison = runs.compare(open_workspace(ctx), run_refs, report=lines())
    if as_json:
        emit_json(comparison.to_json(everything=show_all))
        return
    rows = list(comparison.rows) if show_all else comparison.differing()
    if not rows:
        click.echo("the runs recorded the same params, metrics, code, data and environment")
        return
    table(
        ["section", "key", *[i[:12] for i in comparison.run_ids]],
        [[r.section, r.key, *[_cell(v) for v in r.values]] for r in rows],
        keep_case=len(comparison.run_ids),
    )


def _cell(value: str | None) -> str:
    if value is None:
        return "-"
    if value.startswith("sha256:"):
        return value[7:19]
    return value if len(value) <= 40 else value[:37] + "..."


@runs.command("metrics")
@click.argument("run_ref", metavar="RUN")
@click.argument("key", required=False)
@_json
@click.pass_context
def runs_metrics(ctx: click.Context, run_ref: str, key: str | None, as_json: bool) -> None:
    """Print RUN's metric series (every step), or only KEY's, as CSV."""
    from tether.api import runs

    found = runs.metrics(open_workspace(ctx), run_ref, key, report=lines())
    if as_json:
        emit_json(found.to_json())
        return
    click.echo("key,step,timestamp,value")
    for k, points in found.series.items():
        for p in points:
            click.echo(f"{k},{p.step},{p.at:.3f},{p.value!r}")


@runs.command("log")
@click.argument("run_ref", metavar="RUN")
@click.pass_context
def runs_log(ctx: click.Context, run_ref: str) -> None:
    """Print what RUN wrote to stdout and stderr (as captured)."""
    from tether.api import runs

    for chunk in runs.log(open_workspace(ctx), run_ref, report=lines()):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


@runs.command("delete")
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Also delete runs that are still running.")
@click.pass_context
def runs_delete(ctx: click.Context, run_refs: tuple[str, ...], force: bool) -> None:
    """Delete RUNs and what was logged to them. Their stored files stay in the store
    until 'tether gc' (if nothing else uses them)."""
    from tether.api import runs

    report = runs.delete(open_workspace(ctx), run_refs, force=force, report=lines())
    click.echo(f"deleted {len(report.deleted)} run(s); 'tether gc' frees their stored files")


@cli.group()
def env() -> None:
    """Show and compare captured environments."""


@env.command("show")
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option(
    "--python",
    "python",
    type=click.Path(dir_okay=False),
    help="Capture this interpreter's environment instead (default: tether's own).",
)
@_json
@click.pass_context
def env_show(ctx: click.Context, run_ref: str | None, python: str | None, as_json: bool) -> None:
    """Show RUN's environment, or the current one: interpreter, packages (and conda
    packages, in a conda environment), lock files, OS, CPU, memory, GPU and the
    variables that change results."""
    from tether.api import runs

    ws = open_workspace(ctx)
    if run_ref:
        environment = runs.environment(ws, run_ref, report=lines())
    else:
        environment = runs.current_environment(ws, python)
    if as_json:
        emit_json(environment.to_json())
        return
    py, os_, cpu, gpu = environment.python, environment.os, environment.cpu, environment.gpu
    click.echo(f"environment {environment.digest}")
    click.echo(f"python      {py.label}" + (" (virtualenv)" if py.virtualenv else ""))
    click.echo(f"os          {os_.label} {os_.libc}".rstrip())
    click.echo(f"cpu         {cpu.model} x{cpu.count}, {len(cpu.flags)} flags")
    click.echo(f"memory      {human_size(environment.memory_bytes)}")
    for device in gpu.devices if gpu else ():
        click.echo(f"gpu         {device.name}, driver {device.driver}, {device.memory_mib} MiB")
    if gpu and gpu.cuda_driver_api:
        click.echo(f"cuda        {gpu.cuda_driver_api} (driver API)")
    for name, version in environment.cuda_libraries.items():
        click.echo(f"{name:<11} {version}")
    for var, value in environment.env_vars.items():
        click.echo(f"env         {var}={value}")
    for path, digest in environment.lock_files.items():
        click.echo(f"lock file   {path} {short_digest(digest)}")
    click.echo(f"packages    {len(environment.packages)}")
    for name, version in environment.packages.items():
        click.echo(f"  {name}=={version}")
    conda = environment.conda
    if conda is not None:
        channels = ", ".join(conda.channels) or "no channel recorded"
        click.echo(f"conda       {len(conda.packages)} package(s) from {channels}")
        for name, pkg in sorted(conda.packages.items()):
            click.echo(f"  {name}={pkg.label}")


@env.command("export")
@click.argument("run_ref", metavar="RUN")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["requirements", "uv-lock", "conda", "dockerfile"]),
    default="requirements",
    show_default=True,
    help="requirements.txt, a uv project (pyproject.toml + uv.lock), a conda "
    "environment.yml, or a Dockerfile.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write here (a folder for uv-lock, which is two files); default: stdout.",
)
@click.pass_context
def env_export(ctx: click.Context, run_ref: str, fmt: str, output: Path | None) -> None:
    """Write RUN's recorded environment as files other tools build: every distribution
    at its version, the interpreter version, the result-changing variables and the
    seed's PYTHONHASHSEED.

    \b
    The Dockerfile starts from python:VERSION-slim, or from the nvidia/cuda image of the
    recorded CUDA version when the run had a GPU. uv-lock writes the run's own uv.lock
    when it pins exactly what was installed, else locks the recorded versions with uv.
    Conda environments are exported with their channels and builds.
    """
    from tether.api import runs
    from tether.store.atomic import write_atomic

    result = runs.export_environment(open_workspace(ctx), run_ref, fmt, report=lines())
    for note in result.notes:
        warn(note)
    if output is None:
        if len(result.files) > 1:
            from tether.errors import UsageError

            raise UsageError(
                f"--format {fmt} writes {len(result.files)} files",
                hint="give a folder: -o DIR",
            )
        click.echo(result.files[0].text, nl=False)
        return
    if len(result.files) > 1 or output.is_dir():
        output.mkdir(parents=True, exist_ok=True)
        targets = [(output / f.name, f) for f in result.files]
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        targets = [(output, result.files[0])]
    for path, f in targets:
        write_atomic(path.resolve(), f.text.encode())
        info(f"wrote {path}")


@env.command("diff")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@_json
@click.pass_context
def env_diff(ctx: click.Context, run_a: str, run_b: str, as_json: bool) -> None:
    """What differs between the environments of RUN_A and RUN_B: packages added,
    removed and changed (numerical libraries first), interpreter, lock files,
    variables, OS and hardware."""
    from tether.api import runs

    d = runs.environment_diff(open_workspace(ctx), run_a, run_b, report=lines())
    if as_json:
        emit_json(d.to_json())
        return
    if d.same:
        click.echo(f"same environment ({short_digest(d.a)})")
        return
    table(
        ["section", "name", "change", "a", "b"],
        [[c.section, c.name, c.kind, _cell(c.old), _cell(c.new)] for c in d.changes],
    )
