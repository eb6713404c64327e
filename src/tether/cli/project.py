"""Project commands: init, migrate, gc."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli import cli
from tether.cli._output import CliReporter, emit_json, human_size, info, warn
from tether.cli._workspace import open_workspace


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--no-kitfile", is_flag=True, help="Do not propose a Kitfile.")
@click.option(
    "--db",
    "database_url",
    metavar="URL",
    help="Record into this database: postgresql://[USER@]HOST[:PORT]/DBNAME (no password:"
    " it is written to the committed settings; use PGPASSWORD or ~/.pgpass).",
)
@click.pass_context
def init(
    ctx: click.Context, directory: str | None, no_kitfile: bool, database_url: str | None
) -> None:
    """Create .tether/ in DIRECTORY (default: here) and propose a Kitfile.

    Creates the settings file, the content store (an OCI image layout), the database
    (SQLite in .tether/tether.db, or the one --db names) and tmp/; adds ignore entries
    to .gitignore; writes a Kitfile proposed from the model files, code, data/ and
    README it finds, unless one exists. Re-running is safe: nothing existing is
    overwritten.

    \b
      tether init
      tether init --db postgresql://ml@db.internal/tether
    """
    from tether.workspace import init_workspace

    root = Path(directory or ctx.obj.get("project") or ".")
    report = init_workspace(root, propose_kitfile=not no_kitfile, database_url=database_url)
    verb = "Initialized" if report.created else "Checked"
    click.echo(f"{verb} tether project in {report.root / '.tether'}")
    if report.gitignore_added:
        info(f"added {len(report.gitignore_added)} entries to .gitignore")
    if report.kitfile:
        click.echo(f"Proposed {report.kitfile.name}: review it, then 'tether pack -t NAME:TAG'")
    elif report.kitfile_existing:
        info(f"kept the existing {report.kitfile_existing.name}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def migrate(ctx: click.Context, as_json: bool) -> None:
    """Bring the project's database up to this tether's schema.

    Other commands only check the schema's version and ask for this after an upgrade;
    back the database up first. Safe to re-run, and safe while other tether processes
    wait: each migration applies once.
    """
    from tether.workspace import migrate_database

    report = migrate_database(open_workspace(ctx))
    if as_json:
        emit_json(report.to_json())
    elif report.applied:
        click.echo(f"Migrated {report.database}: {', '.join(report.applied)}")
    else:
        click.echo(f"{report.database} is up to date")


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Delete; without it gc only shows what would go.")
@click.option("--dry-run", is_flag=True, help="Show what would go, remove nothing (the default).")
@click.option(
    "--rev",
    "revisions",
    multiple=True,
    metavar="REV",
    help="Also keep the data of pointers at this git revision (repeatable).",
)
@click.option(
    "--remote",
    "remote",
    metavar="NAME",
    help="Clean a data remote instead: remove what interrupted pushes left there.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def gc(
    ctx: click.Context,
    force: bool,
    dry_run: bool,
    revisions: tuple[str, ...],
    remote: str | None,
    as_json: bool,
) -> None:
    """Show, or with --force delete, blobs that nothing references.

    Kept: ModelKits in the store (tags), everything runs recorded (until 'tether runs
    delete'), and the data of every pointer in the working tree, at HEAD and at each
    --rev. Without --force nothing is deleted. A pack, add or pull running at the same
    time is waited for, never broken.

    With --remote NAME, the remote is cleaned instead: temporary files of interrupted
    pushes that no write has touched for two hours are removed (each push does this
    too). Objects on a remote are never deleted: other clones may need them.
    """
    from tether.data.gc import collect_garbage

    ws = open_workspace(ctx)
    if remote is not None:
        from tether.data.transfer import sweep_remote

        swept = sweep_remote(ws, remote)
        if as_json:
            emit_json(swept.to_json())
        else:
            click.echo(
                f"removed {len(swept.removed)} stale temporary file(s) from remote {swept.remote}"
            )
        return
    delete = force and not dry_run
    report = collect_garbage(
        ws, revisions=list(revisions), dry_run=not delete, report=CliReporter("collecting")
    )
    sweep = report.sweep
    if as_json:
        emit_json(report.to_json())
        return
    for digest in report.missing:
        warn(f"{digest} is referenced but missing from the store")
    verb = "removed" if delete else "would remove"
    click.echo(
        f"{verb} {len(sweep.removed)} blob(s), {human_size(sweep.freed_bytes)}; kept {sweep.kept}"
    )
    if not delete and sweep.removed:
        info("nothing was deleted; run 'tether gc --force' to delete them")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash:  tether completion bash > ~/.local/share/bash-completion/completions/tether
    zsh:   tether completion zsh > "${fpath[1]}/_tether"
    fish:  tether completion fish > ~/.config/fish/completions/tether.fish
    """
    from click.shell_completion import get_completion_class

    # The script calls tether back with _TETHER_COMPLETE set; click answers from the
    # same command tree, so completions always match the installed version.
    klass = get_completion_class(shell)
    assert klass is not None  # the choice above lists only shells click supports
    click.echo(klass(cli, {}, "tether", "_TETHER_COMPLETE").source())
