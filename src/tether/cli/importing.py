"""tether import mlflow: another tool's history, brought into the project."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli import cli
from tether.cli._output import CliReporter, emit_json, table, warn
from tether.cli._workspace import open_workspace


@cli.group(name="import")
def import_group() -> None:
    """Bring history from another tool: MLflow (and DVC, to come)."""


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
