"""Data commands: add, status, checkout, fsck; data diff/push/pull/fetch; remote."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli import cli
from tether.cli._output import ByteProgress, emit_json, human_size, info, warn
from tether.cli._workspace import open_workspace

_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
_jobs = click.option(
    "-j", "--jobs", type=click.IntRange(1, 256), help="Parallel workers (default: CPU count)."
)


def _base(ctx: click.Context) -> Path:
    """Paths on the command line are relative to -C DIR when given, as with git -C."""
    project = ctx.find_root().obj.get("project")
    return Path(project).resolve() if project else Path.cwd()


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_jobs
@_json
@click.pass_context
def add(ctx: click.Context, paths: tuple[str, ...], jobs: int | None, as_json: bool) -> None:
    """Track files or folders: store their content and write PATH.tether pointers.

    Content goes into the project's store (sha256, hashed on every core); a small
    PATH.tether file next to each path names it and is what you commit to git. The path
    itself is listed in .gitignore. Folders become nested tree objects, so changing one
    file of a million rewrites only the trees on its path. Unchanged files are not read
    again (stat cache).
    """
    from tether.data.track import add as do_add

    ws = open_workspace(ctx)
    progress = ByteProgress("hashing")
    progress.start(None)
    try:
        report = do_add(
            ws, list(paths), base=_base(ctx), jobs=jobs, on_wait=info, on_bytes=progress.advance
        )
    finally:
        progress.stop()
    if as_json:
        emit_json(
            {
                "added": [
                    {
                        "path": r.pointer.path,
                        "pointer": r.pointer.pointer_path,
                        "type": r.pointer.type,
                        "digest": str(r.pointer.digest),
                        "size": r.pointer.size,
                        "files": r.pointer.files,
                        "changed": r.changed,
                    }
                    for r in report.results
                ],
                "hashed_files": report.hashed_files,
                "hashed_bytes": report.hashed_bytes,
            }
        )
        return
    for r in report.results:
        p = r.pointer
        what = f"{p.files} files, " if p.type == "dir" else ""
        verb = "unchanged" if not r.changed else ("added" if r.previous is None else "updated")
        click.echo(f"{verb:9}  {p.path}  ({what}{human_size(p.size)})  {p.digest.short}")
    if any(r.changed for r in report.results):
        pointers = " ".join(r.pointer.pointer_path for r in report.results if r.changed)
        info(
            f"hashed {report.hashed_files} file(s), {human_size(report.hashed_bytes)}; "
            f"commit the pointers: git add {pointers}"
        )


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@_json
@click.pass_context
def status(ctx: click.Context, paths: tuple[str, ...], as_json: bool) -> None:
    """Show how tracked data differs from its pointers.

    For each tracked path: clean, modified (files added, deleted or modified inside a
    folder) or missing; and whether the store holds all of its content (if not,
    'tether data pull' fetches it). Exit status 0 either way; use --json in scripts.
    """
    from tether.data.status import status as do_status

    ws = open_workspace(ctx)
    results = do_status(ws, list(paths) or None, base=_base(ctx))
    if as_json:
        emit_json([r.to_json() for r in results])
        return
    if not results:
        click.echo("no tracked data (track some with 'tether add PATH')")
        return
    for r in results:
        note = "" if r.missing_objects == 0 else f"  [{r.missing_objects} object(s) not in store]"
        click.echo(f"{r.state:9}  {r.pointer.path}{note}")
        for c in r.changes[:50]:
            click.echo(f"    {c.kind:9} {r.pointer.path}/{c.path}")
        if len(r.changes) > 50:
            click.echo(f"    … and {len(r.changes) - 50} more (see --json)")
        if r.state == "modified" and not r.details_known:
            click.echo("    (the stored tree is not here to list changes: tether data pull)")
    dirty = [r for r in results if r.state != "clean"]
    if dirty:
        info("record changes with 'tether add PATH'; restore with 'tether checkout PATH'")


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Overwrite changes that are not in the store, and files in the way.",
)
@_json
@click.pass_context
def checkout(ctx: click.Context, paths: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Restore tracked paths (default: all) to what their pointers say.

    Files come from the store by reflink, hardlink or copy (setting checkout.link).
    Hardlinked files are read-only: to edit one, copy it and replace it. Changes whose
    content is not in the store are refused unless --force. Files the pointer does not
    list are left in place. Fetch missing content first with 'tether data pull'.
    """
    from tether.data.checkout import checkout as do_checkout

    ws = open_workspace(ctx)
    progress = ByteProgress("checkout")
    progress.start(None)
    try:
        report = do_checkout(
            ws,
            list(paths) or None,
            base=_base(ctx),
            force=force,
            on_wait=info,
            on_bytes=progress.advance,
        )
    finally:
        progress.stop()
    if as_json:
        emit_json(
            {
                "paths": [
                    {
                        "path": r.pointer.path,
                        "written": r.written,
                        "unchanged": r.unchanged,
                        "extra": r.extra,
                    }
                    for r in report.results
                ],
                "methods": report.methods,
            }
        )
        return
    for r in report.results:
        click.echo(f"{r.pointer.path}: {r.written} written, {r.unchanged} unchanged")
        if r.extra:
            warn(f"{r.pointer.path}: {len(r.extra)} file(s) not in the pointer were left in place")
    if report.methods:
        info("placed by " + ", ".join(f"{m} ({n})" for m, n in sorted(report.methods.items())))
