"""Data commands: add, status, checkout, fsck; data diff/push/pull/fetch; remote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from tether.cli import cli
from tether.cli._output import CliReporter, emit_json, human_size, info, warn
from tether.cli._workspace import open_workspace

if TYPE_CHECKING:
    from tether.data.transfer import DataTransferReport
    from tether.reporting import Reporter

T = TypeVar("T")
_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
_jobs = click.option(
    "-j", "--jobs", type=click.IntRange(1, 256), help="Parallel workers (default: CPU count)."
)


def _progressing(label: str, call: Callable[[Reporter], T]) -> T:
    """Run ``call(report)`` under a byte progress bar (shown on a terminal only)."""
    progress = CliReporter(label)
    progress.start(None)
    try:
        return call(progress)
    finally:
        progress.stop()


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
    report = _progressing(
        "hashing",
        lambda report: do_add(ws, list(paths), base=_base(ctx), jobs=jobs, report=report),
    )
    if as_json:
        emit_json(report.to_json())
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
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 when anything is modified, missing or not in the store (as 'git diff "
    "--exit-code').",
)
@_json
@click.pass_context
def status(ctx: click.Context, paths: tuple[str, ...], check: bool, as_json: bool) -> None:
    """Show how tracked data differs from its pointers.

    For each tracked path: clean, modified (files added, deleted or modified inside a
    folder) or missing; and whether the store holds all of its content (if not,
    'tether data pull' fetches it). Exit status 0 either way, unless --check: then 1
    when any path is not clean or lacks content in the store.
    """
    from tether.data.status import status as do_status

    ws = open_workspace(ctx)
    results = _progressing(
        "status", lambda report: do_status(ws, list(paths) or None, base=_base(ctx), report=report)
    )
    unclean = any(r.state != "clean" or r.missing_objects for r in results)
    if as_json:
        emit_json([r.to_json() for r in results])
        if check and unclean:
            ctx.exit(1)
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
    if check and unclean:
        ctx.exit(1)


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
    report = _progressing(
        "checkout",
        lambda report: do_checkout(
            ws, list(paths) or None, base=_base(ctx), force=force, report=report
        ),
    )
    if as_json:
        emit_json(report.to_json())
        return
    for r in report.results:
        click.echo(f"{r.pointer.path}: {r.written} written, {r.unchanged} unchanged")
        if r.extra:
            warn(f"{r.pointer.path}: {len(r.extra)} file(s) not in the pointer were left in place")
    if report.methods:
        info("placed by " + ", ".join(f"{m} ({n})" for m, n in sorted(report.methods.items())))


@cli.command()
@_jobs
@_json
@click.pass_context
def fsck(ctx: click.Context, jobs: int | None, as_json: bool) -> None:
    """Re-hash every blob in the store and check every reference to it.

    A blob whose bytes no longer match its digest is moved to .tether/quarantine/; the
    report says what referenced it and how to get a good copy back. Pointers, ModelKits
    and run records are checked for content missing from the store. Exit status 1 when
    anything is wrong.
    """
    from tether.data.fsck import fsck as do_fsck

    ws = open_workspace(ctx)
    report = _progressing("checking", lambda report: do_fsck(ws, jobs=jobs, report=report))
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(f"checked {report.checked} blob(s), {human_size(report.bytes)}")
        for p in report.problems[:20]:
            click.echo(f"{p.kind:16} {p.digest.short}  {p.referenced_by}")
        if len(report.problems) > 20:
            groups: dict[str, int] = {}
            for p in report.problems[20:]:
                key = f"{p.kind} ({p.referenced_by})"
                groups[key] = groups.get(key, 0) + 1
            for key, n in groups.items():
                click.echo(f"… and {n} more {key}")
        if report.quarantined:
            info(
                f"{len(report.quarantined)} corrupt blob(s) moved to .tether/quarantine/; "
                "get good copies back with 'tether data pull' (data pushed to a remote), "
                "'tether pull' (ModelKits), or by re-adding the files"
            )
        elif report.ok:
            click.echo("no problems found")
    if not report.ok:
        ctx.exit(1)


@cli.group()
def data() -> None:
    """Move, compare and measure tracked data: diff, push, fetch, pull, du."""


def _transfer_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option("-r", "--remote", help="Remote name (default: the default remote).")(f)
    f = _jobs(f)
    f = _json(f)
    return f


def _emit_transfer(report: DataTransferReport, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json(report.to_json())
        return
    there = f"; {report.skipped} already there" if verb == "pushed" else ""
    click.echo(
        f"{verb} {report.objects} object(s), {human_size(report.bytes)} "
        f"({report.packs} pack(s)){there}  [{report.remote}]"
    )
    if report.repaired:
        info(f"{report.repaired} corrupt local object(s) set aside and fetched again")


@data.command("push")
@click.argument("paths", nargs=-1, type=click.Path())
@_transfer_options
@click.pass_context
def data_push(
    ctx: click.Context,
    paths: tuple[str, ...],
    remote: str | None,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Send tracked content (default: all pointers) to a remote.

    Only objects the remote lacks travel: what it has is learnt from a few listings, not
    a request per file. Small files are packed together; a big file kept in chunks sends
    only the chunks the remote lacks. Transfers run in parallel, and an interrupted push
    resumes where it stopped when run again.
    """
    from tether.data.transfer import push

    ws = open_workspace(ctx)
    report = _progressing(
        "pushing",
        lambda report: push(
            ws,
            list(paths) or None,
            remote=remote,
            base=_base(ctx),
            jobs=jobs,
            report=report,
        ),
    )
    _emit_transfer(report, as_json, "pushed")


@data.command("fetch")
@click.argument("paths", nargs=-1, type=click.Path())
@_transfer_options
@click.pass_context
def data_fetch(
    ctx: click.Context,
    paths: tuple[str, ...],
    remote: str | None,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Download the content of pointers (default: all) into the store, verified.

    Every object is hashed and compared with its digest before it is stored; a
    mismatch is refused and named. The working copy is not touched (see 'data pull').
    """
    from tether.data.transfer import fetch

    ws = open_workspace(ctx)
    report = _progressing(
        "fetching",
        lambda report: fetch(
            ws,
            list(paths) or None,
            remote=remote,
            base=_base(ctx),
            jobs=jobs,
            report=report,
        ),
    )
    _emit_transfer(report, as_json, "fetched")


@data.command("pull")
@click.argument("paths", nargs=-1, type=click.Path())
@_transfer_options
@click.option("-f", "--force", is_flag=True, help="Overwrite local changes not in the store.")
@click.pass_context
def data_pull(
    ctx: click.Context,
    paths: tuple[str, ...],
    remote: str | None,
    jobs: int | None,
    as_json: bool,
    force: bool,
) -> None:
    """Fetch the content of pointers (default: all), then check it out.

    Same as 'tether data fetch' followed by 'tether checkout'.
    """
    from tether.data.transfer import pull

    ws = open_workspace(ctx)
    report, done = _progressing(
        "pulling",
        lambda report: pull(
            ws,
            list(paths) or None,
            remote=remote,
            base=_base(ctx),
            jobs=jobs,
            force=force,
            report=report,
        ),
    )
    _emit_transfer(report, as_json, "fetched")
    if not as_json:
        written = sum(r.written for r in done.results)
        click.echo(f"checked out {written} file(s) in {len(done.results)} path(s)")


@data.command("diff")
@click.argument("rev_a", required=False, default="HEAD")
@click.argument("rev_b", required=False)
@_json
@click.pass_context
def data_diff(ctx: click.Context, rev_a: str, rev_b: str | None, as_json: bool) -> None:
    """List tracked files added, deleted, modified or renamed between two git revisions.

    REV_A defaults to HEAD; without REV_B the pointers in the working tree are compared.
    Only pointers are read (and the trees they name, which must be in the store), so
    this is fast on any size of data. A rename is a file that moved unmodified.
    """
    from tether.data.revisions import diff_revisions

    ws = open_workspace(ctx)
    changes = diff_revisions(ws, rev_a, rev_b)
    if as_json:
        emit_json([c.to_json() for c in changes])
        return
    if not changes:
        click.echo("no changes to tracked data")
        return
    for c in changes:
        if c.kind == "renamed":
            click.echo(f"renamed   {c.renamed_from} -> {c.path}")
        else:
            size = human_size(c.size_after if c.size_after is not None else c.size_before)
            click.echo(f"{c.kind:9} {c.path}  ({size})")
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    info(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


@data.command("du")
@click.argument("paths", nargs=-1, type=click.Path())
@_json
@click.pass_context
def data_du(ctx: click.Context, paths: tuple[str, ...], as_json: bool) -> None:
    """Show how much tracked data there is, and how much the store keeps for it.

    For each tracked path (all of them, or those at or under PATHS): its files, their
    logical size, the bytes the store spends on them (each blob once; a big file kept in
    chunks, as its chunks) and the ratio of the two. The total counts what paths share
    once, so it shows what deduplication saves; the store's own size includes runs and
    ModelKits too.
    """
    from tether.data.usage import usage

    ws = open_workspace(ctx)
    report = usage(ws, list(paths) or None, base=_base(ctx))
    if as_json:
        emit_json(report.to_json())
        return
    if not report.paths:
        click.echo("no tracked data (track some with 'tether add PATH')")
        return
    width = max(len(u.path) for u in report.paths)
    click.echo(f"{'path':<{width}}  {'files':>8}  {'logical':>10}  {'stored':>10}  ratio")
    for u in [*report.paths, report.total]:
        ratio = "-" if u.ratio is None else f"{u.ratio:.2f}"
        name = u.path or "total"
        missing = f"  [{u.missing} not in store]" if u.missing else ""
        click.echo(f"{name:<{width}}  {u.files:>8,}  {human_size(u.logical):>10}  "
                   f"{human_size(u.stored):>10}  {ratio:>5}{missing}")  # fmt: skip
    info(f"the store holds {human_size(report.store_bytes)} in all")


@cli.group()
def remote() -> None:
    """Configure data remotes: add, list, remove."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("-d", "--default", "make_default", is_flag=True, help="Use it when -r is not given.")
@click.option("--endpoint-url", help="S3-compatible server, e.g. http://127.0.0.1:9000.")
@click.option("-f", "--force", is_flag=True, help="Replace a remote of that name.")
@click.pass_context
def remote_add(
    ctx: click.Context,
    name: str,
    url: str,
    make_default: bool,
    endpoint_url: str | None,
    force: bool,
) -> None:
    """Add a data remote NAME at URL (a directory, file://, s3://, gs://, az://…).

    Written to .tether/config.toml, which is committed: never put credentials in the
    URL; S3 and the other clouds read theirs from the environment as usual.
    """
    from tether.data.remote import add_remote

    ws = open_workspace(ctx)
    cfg = add_remote(ws, name, url, default=make_default, endpoint_url=endpoint_url, force=force)
    click.echo(f"added remote {cfg.name} -> {cfg.url}" + (" (default)" if make_default else ""))


@remote.command("list")
@_json
@click.pass_context
def remote_list(ctx: click.Context, as_json: bool) -> None:
    """List the configured data remotes."""
    from tether.data.remote import remotes

    found = remotes(open_workspace(ctx))
    if as_json:
        emit_json(found.to_json())
        return
    if not found.remotes:
        click.echo("no remotes (add one with 'tether remote add NAME URL --default')")
    for r in found.remotes:
        click.echo(f"{r.name}{' *' if r.name == found.default else ''}  {r.url}")


@remote.command("remove")
@click.argument("name")
@click.pass_context
def remote_remove(ctx: click.Context, name: str) -> None:
    """Remove a data remote from the configuration (its content is left alone)."""
    from tether.data.remote import remove_remote

    ws = open_workspace(ctx)
    remove_remote(ws, name)
    click.echo(f"removed remote {name}")
