"""Project commands: init, gc."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli import cli
from tether.cli._output import emit_json, human_size, info, warn
from tether.cli._workspace import open_workspace


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--no-kitfile", is_flag=True, help="Do not propose a Kitfile.")
@click.pass_context
def init(ctx: click.Context, directory: str | None, no_kitfile: bool) -> None:
    """Create .tether/ in DIRECTORY (default: here) and propose a Kitfile.

    Creates the settings file, the content store (an OCI image layout), the SQLite
    database and tmp/; adds ignore entries to .gitignore; writes a Kitfile proposed
    from the model files, code, data/ and README it finds, unless one exists.
    Re-running is safe: nothing existing is overwritten.
    """
    from tether.workspace import init_workspace

    root = Path(directory or ctx.obj.get("project") or ".")
    report = init_workspace(root, propose_kitfile=not no_kitfile)
    verb = "Initialized" if report.created else "Checked"
    click.echo(f"{verb} tether project in {report.root / '.tether'}")
    if report.gitignore_added:
        info(f"added {len(report.gitignore_added)} entries to .gitignore")
    if report.kitfile:
        click.echo(f"Proposed {report.kitfile.name}: review it, then 'tether pack -t NAME:TAG'")
    elif report.kitfile_existing:
        info(f"kept the existing {report.kitfile_existing.name}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Delete blobs that no ModelKit in the store references.

    Removing a tag ('tether remove') keeps the blobs; gc frees them. A pack running at
    the same time is waited for, never broken.
    """
    from tether.store.gc import collect_garbage

    ws = open_workspace(ctx)
    report = collect_garbage(ws, dry_run=dry_run, on_wait=info)
    if as_json:
        emit_json(
            {
                "removed": [str(d) for d in report.removed],
                "freed_bytes": report.freed_bytes,
                "kept": report.kept,
                "missing": [str(d) for d in report.missing],
                "dry_run": dry_run,
            }
        )
        return
    for digest in report.missing:
        warn(f"a ModelKit references {digest}, which is missing from the store")
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {len(report.removed)} blob(s), {human_size(report.freed_bytes)}; "
        f"kept {report.kept}"
    )
