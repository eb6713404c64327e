"""tether import mlflow: another tool's history, brought into the project."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli import cli
from tether.cli._output import CliReporter, emit_json, human_size, table, warn
from tether.cli._workspace import open_workspace


@cli.group(name="import")
def import_group() -> None:
    """Bring history from another tool: MLflow, DVC."""


@import_group.command(name="mlflow")
@click.argument("source")
@click.option("--dry-run", is_flag=True, help="Count what would come over; change nothing.")
@click.option(
    "--artifacts-root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where an MLflow server keeps mlflow-artifacts: (its --artifacts-destination), "
    "when reading its database directly.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def import_mlflow(
    ctx: click.Context, source: str, dry_run: bool, artifacts_root: Path | None, as_json: bool
) -> None:
    """Import an MLflow tracking store: experiments, runs (params, tags, every metric
    point, status, times, user), artifacts, logged models, registered models, versions
    and aliases.

    SOURCE is what MLFLOW_TRACKING_URI would be: sqlite:///mlflow.db, postgresql://HOST/DB,
    a ./mlruns folder or an http(s):// MLflow server (MLFLOW_TRACKING_TOKEN is used).
    Runs keep their MLflow ids. Running it again adds only what is missing, so an
    interrupted import is finished by running it again.

    \b
      tether import mlflow sqlite:///mlflow.db --dry-run
      tether import mlflow sqlite:///mlflow.db
    """
    from tether.mlflow.importer import ImportOptions, import_mlflow

    progress = CliReporter("importing runs", min_total=1, items=True)
    try:
        done = import_mlflow(
            open_workspace(ctx), ImportOptions(source, artifacts_root, dry_run), progress
        )
    finally:
        progress.stop()
    if as_json:
        emit_json(done.to_json())
        return
    rows = []
    for what in ("experiments", "runs", "params", "tags", "series", "logged_models",
                 "models", "versions", "aliases"):  # fmt: skip
        rows.append([what.replace("_", " "), str(getattr(done.found, what)),
                     str(getattr(done.added, what))])  # fmt: skip
    if not dry_run:
        rows.append(["metric points", "", str(done.added.points)])
        rows.append(["artifacts", "", f"{done.added.artifacts} ({done.added.artifact_bytes} B)"])
    table(["", "in source", "would add" if dry_run else "added"], rows, keep_case=2)
    for reason in done.skipped:
        warn(f"not imported: {reason}")


@import_group.command(name="dvc")
@click.argument("path", required=False, type=click.Path(file_okay=False, exists=True,
                                                         path_type=Path))  # fmt: skip
@click.option("--remote", help="The DVC remote to read objects the cache lacks from "
              "(default: the project's default remote).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="List what would be imported; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def import_dvc(
    ctx: click.Context, path: Path | None, remote: str | None, dry_run: bool, as_json: bool
) -> None:
    """Import a DVC project (PATH, default: this project): its tracked files and
    folders, and its pipeline.

    Each path a .dvc file or dvc.lock tracks is read from the DVC cache (else the
    workspace, else the remote), checked against DVC's md5, stored by sha256 and given
    a tether pointer; each dvc.lock stage becomes a finished run with its deps as
    inputs and outs as outputs, so 'tether lineage' works at once. The .dvc files are
    left for you to remove. Running it again changes nothing that is unchanged.

    \b
      tether import dvc --dry-run
      tether import dvc && git add '*.tether' && git rm '*.dvc' dvc.lock
    """
    from tether.dvc.importer import DvcImportOptions, import_dvc

    ws = open_workspace(ctx)
    progress = CliReporter("importing DVC data")
    try:
        done = import_dvc(ws, DvcImportOptions(path, remote, dry_run), progress)
    finally:
        progress.stop()
    if as_json:
        emit_json(done.to_json())
    else:
        rows = [[p.path, p.type, str(p.files) if p.files else "", human_size(p.size), p.status]
                for p in done.paths]  # fmt: skip
        table(["path", "type", "files", "size", "status"], rows)
        verb = "would be recorded" if dry_run else "recorded"
        if done.runs:
            click.echo(f"stages {verb} as runs: {', '.join(done.runs)}")
        if not dry_run:
            click.echo(f"verified {done.verified_files} file(s), "
                       f"{human_size(done.verified_bytes)}, against DVC's md5")  # fmt: skip
    for reason in done.failed:
        warn(f"not imported: {reason}")
    if done.failed:
        ctx.exit(1)
