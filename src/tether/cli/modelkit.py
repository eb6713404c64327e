"""ModelKit commands: pack, list, inspect, diff, tag, remove, unpack, rollback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tether.cli import cli
from tether.cli._network import network, network_options
from tether.cli._output import CliReporter, emit_json, human_size, info, lines, secho, table, warn
from tether.cli._workspace import open_workspace

if TYPE_CHECKING:
    from tether.api.registry import NetworkOptions
    from tether.modelkit.provenance import Provenance
    from tether.modelkit.unpack import UnpackReport
    from tether.workspace import Workspace

_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option(
    "-f",
    "--file",
    "kitfile",
    type=click.Path(dir_okay=False),
    help="Kitfile to use (default: Kitfile, kitfile or .kitfile in DIRECTORY).",
)
@click.option(
    "-t",
    "--tag",
    "tag",
    metavar="REPO:TAG[,TAG…]",
    help="Tag the ModelKit, e.g. movie-recommend:v1.0.0,latest.",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "zstd"]),
    help="Layer compression (default: pack.compression, 'none').",
)
@click.option("--force", is_flag=True, help="Move version tags that point elsewhere.")
@click.option(
    "--from-run",
    "from_run",
    metavar="RUN",
    help="Pack the files RUN wrote (its stored outputs) and attach its provenance.",
)
@click.option(
    "--with-env",
    "with_env",
    is_flag=False,
    flag_value="requirements,dockerfile",
    metavar="[FORMAT,…]",
    help="With --from-run: add RUN's environment as a code entry, tether-env/, in these "
    "formats of 'tether env export' (alone: requirements,dockerfile).",
)
@_json
@click.pass_context
def pack(
    ctx: click.Context,
    directory: str | None,
    kitfile: str | None,
    tag: str | None,
    compression: str | None,
    force: bool,
    from_run: str | None,
    with_env: str | None,
    as_json: bool,
) -> None:
    """Pack DIRECTORY (default: the project root) into a ModelKit in the local store.

    The Kitfile says what goes in: model, parts, code, datasets, docs, prompts. Files
    matched by .kitignore, symlinks and special files are left out (with a warning).
    The result is deterministic: the same files and Kitfile give the same digest in any
    directory, on any machine. Version tags (v1.0.0, 1.2) are immutable unless --force.

    Provenance (an in-toto Statement: the run, its data, code, environment, command and
    seed) is attached beside the ModelKit, not inside it: with --from-run, or when the
    model files are the outputs of a recorded run. --with-env puts the run's
    environment inside it too: a Dockerfile, requirements.txt, a uv project or a conda
    environment.yml that rebuild it.
    """
    from tether.modelkit.pack import pack as do_pack
    from tether.oci.reference import parse_tag_list

    ws = open_workspace(ctx)
    run = None
    if from_run is not None:
        from tether.api import runs

        run = runs.get(ws, from_run, report=lines())
    refs = parse_tag_list(tag) if tag else None
    progress = CliReporter("packing")
    try:
        result = do_pack(
            ws,
            directory,
            kitfile=kitfile,
            tags=refs,
            compression=compression,
            force=force,
            report=progress,
            run=run,
            env_formats=_formats(with_env),
        )
    finally:
        progress.stop()
    if as_json:
        emit_json(result.to_json())
        return
    for change in result.tags:
        if change.action == "move":
            warn(f"moved {change.ref} (was {change.old.short if change.old else '-'})")
    if result.run_id:
        how = "detected from its outputs" if result.run_link == "detected" else "--from-run"
        click.echo(f"Provenance: run {result.run_id} ({how})")
    names = ", ".join(c.ref for c in result.tags) or "untagged"
    click.echo(
        f"Packed {names}: {result.digest} "
        f"({len(result.manifest.layers)} layers, {human_size(result.manifest.total_size)})"
    )


def _formats(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    from tether.envcapture.export import FORMATS
    from tether.errors import UsageError

    chosen = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise UsageError(
            f"--with-env {text!r}: unknown format {', '.join(unknown) or '(none)'}",
            hint="a comma-separated list of " + ", ".join(FORMATS),
        )
    return chosen


@cli.command(name="list")
@click.argument("repository", required=False)
@network_options
@_json
@click.pass_context
def list_(ctx: click.Context, /, repository: str | None, as_json: bool, **kwargs: Any) -> None:
    """List the ModelKits in the local store, one row per tag; with REGISTRY/REPO, the
    tags of that registry repository and their digests."""
    from tether.oci.reference import parse_reference

    if repository and parse_reference(repository, default_tag=False).registry:
        _list_remote(open_workspace(ctx, required=False), repository, network(kwargs), as_json)
        return
    from tether.modelkit.catalog import list_kits

    rows = list_kits(open_workspace(ctx), repository)
    if as_json:
        emit_json([r.to_json() for r in rows])
        return
    if not rows:
        info("no ModelKits in the store yet; create one with 'tether pack -t NAME:TAG'")
        return
    table(
        ["repository", "tag", "digest", "model", "version", "size"],
        [
            [
                r.repository or "<none>",
                r.tag or "<none>",
                r.digest[7:19],
                r.model or "-",
                r.version or "-",
                human_size(r.size),
            ]
            for r in rows
        ],
    )


def _list_remote(
    ws: Workspace | None, repository: str, opts: NetworkOptions, as_json: bool
) -> None:
    from tether.api import kits

    found = kits.registry_tags(ws, repository, opts)
    if as_json:
        emit_json(found.to_json())
        return
    if not found.tags:
        info(f"{found.repository} has no tags")
        return
    table(
        ["repository", "tag", "digest"],
        [[found.repository, t.tag, t.digest.short] for t in found.tags],
    )


@cli.command()
@click.argument("ref")
@click.option("--remote", is_flag=True, help="Read REF from its registry even if the store has it.")
@click.option(
    "--provenance",
    is_flag=True,
    help="Show the provenance attached to REF: the run, data, code, environment and seed "
    "that made it (--json: the in-toto Statements).",
)
@network_options
@_json
@click.pass_context
def inspect(
    ctx: click.Context, /, ref: str, remote: bool, provenance: bool, as_json: bool, **kwargs: Any
) -> None:
    """Show a ModelKit's digest, Kitfile and layers (REF: repo[:tag] or sha256:…).

    A REF on a registry (REGISTRY/REPO:TAG) that the store does not hold is read from
    the registry: its manifest and Kitfile only, no layers.
    """
    from tether.api import kits
    from tether.oci.reference import parse_reference

    on_registry = parse_reference(ref).registry is not None
    ws = open_workspace(ctx, required=not on_registry)
    found = kits.describe(
        ws,
        ref,
        remote=remote,
        provenance=provenance,
        network=network(kwargs),
    )
    if found.provenance is not None:
        _print_provenance(found.digest, list(found.provenance), as_json)
        return
    if as_json:
        emit_json(found.to_json())
        return
    doc = found.document
    import yaml

    click.echo(f"Digest:     {doc['digest']}")
    click.echo(f"References: {', '.join(doc['references']) or '-'}")
    click.echo("Layers:")
    table(
        ["type", "path", "size", "digest"],
        [
            [layer["type"], layer["path"], human_size(layer["size"]), layer["digest"][7:19]]
            for layer in doc["layers"]
        ],
    )
    click.echo("Kitfile:")
    click.echo(
        "  "
        + yaml.safe_dump(_strip_layer_info(doc["kitfile"]), sort_keys=False)
        .rstrip()
        .replace("\n", "\n  ")
    )


def _print_provenance(digest: str, statements: list[Provenance], as_json: bool) -> None:
    from tether.errors import ModelKitNotFound

    if as_json:
        emit_json([p.to_statement() for p in statements])
        return
    if not statements:
        raise ModelKitNotFound(
            f"no provenance is attached to {digest[:19]}",
            hint="pack from a run to attach it: tether pack --from-run RUN",
        )
    for p in statements:
        click.echo(f"Provenance of {digest}")
        click.echo(f"  run          {p.run_name or '-'} ({p.run_id})")
        click.echo(f"  command      {' '.join(p.command)}")
        click.echo(f"  seed         {p.seed if p.seed is not None else '-'}")
        if p.params:
            click.echo(
                "  params       " + " ".join(f"{k}={v}" for k, v in sorted(p.params.items()))
            )
        for m in p.materials:
            extra = f"  (made by run {m.produced_by})" if m.produced_by else ""
            if m.kind == "code":
                dirty = " + uncommitted changes" if p.dirty else ""
                name = m.name if m.name == m.digest else f"{m.name} {m.digest[:19]}"
                click.echo(f"  code         {name}{dirty}" + (f"  {m.uri}" if m.uri else ""))
            elif m.kind == "environment":
                summary = ", ".join(f"{k} {v}" for k, v in sorted(p.environment.items()))
                click.echo(f"  environment  {m.digest[:19]}  {summary}")
            else:
                click.echo(f"  data         {m.name}  {m.digest[:19]}{extra}")
        for name, d in p.subjects:
            if name != "modelkit":
                click.echo(f"  model        {name}  {d[:19]}")
        if p.metrics:
            click.echo(
                "  metrics      " + " ".join(f"{k}={v:g}" for k, v in sorted(p.metrics.items()))
            )
        click.echo(f"  builder      {p.builder}")


def _strip_layer_info(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip_layer_info(v) for k, v in value.items() if k not in ("digest", "diffId")}
    if isinstance(value, list):
        return [_strip_layer_info(v) for v in value]
    return value


@cli.command()
@click.argument("ref_a")
@click.argument("ref_b")
@_json
@click.pass_context
def diff(ctx: click.Context, ref_a: str, ref_b: str, as_json: bool) -> None:
    """Show what changed from REF_A to REF_B: Kitfile fields and files."""
    from tether.modelkit.diff import diff as do_diff

    result = do_diff(open_workspace(ctx), ref_a, ref_b)
    if as_json:
        emit_json(result.to_json())
        return
    if result.identical:
        click.echo(f"{ref_a} and {ref_b} are the same ModelKit ({result.a_digest[:19]})")
        return
    click.echo(f"--- {ref_a} ({result.a_digest[7:19]})")
    click.echo(f"+++ {ref_b} ({result.b_digest[7:19]})")
    if result.fields:
        click.echo("Kitfile:")
        for f in result.fields:
            if f.old is None:
                secho(f"  + {f.key}: {f.new}", fg="green")
            elif f.new is None:
                secho(f"  - {f.key}: {f.old}", fg="red")
            else:
                secho(f"  ~ {f.key}: {f.old} -> {f.new}", fg="yellow")
    if result.files:
        click.echo("Files:")
        for c in result.files:
            if c.change == "added":
                secho(f"  + {c.path} ({human_size(c.new_size)})", fg="green")
            elif c.change == "removed":
                secho(f"  - {c.path} ({human_size(c.old_size)})", fg="red")
            else:
                secho(
                    f"  ~ {c.path} ({human_size(c.old_size)} -> {human_size(c.new_size)})",
                    fg="yellow",
                )
    click.echo(
        f"{len(result.files)} file(s) changed, {result.unchanged_files} unchanged in "
        f"changed layers, {result.shared_layers} layer(s) shared"
    )


@cli.command()
@click.argument("source")
@click.argument("target", metavar="REPO:TAG")
@click.option("--force", is_flag=True, help="Move a version tag that points elsewhere.")
@click.option(
    "--remote",
    is_flag=True,
    help="Tag on the registry: SOURCE and TARGET are REGISTRY/REPO:TAG on one registry.",
)
@network_options
@click.pass_context
def tag(
    ctx: click.Context, /, source: str, target: str, force: bool, remote: bool, **kwargs: Any
) -> None:
    """Give the ModelKit SOURCE another tag, REPO:TAG (with --remote, on the registry,
    without downloading anything)."""
    from tether.api import kits

    ws = open_workspace(ctx, required=not remote)
    change = kits.tag(ws, kits.TagRequest(source, target, force, remote), network(kwargs))
    new = change.new.short if change.new else "-"
    if change.action == "unchanged":
        click.echo(f"{change.ref} already points at {new}")
    elif change.action == "move":
        click.echo(f"Moved {change.ref}: {change.old.short if change.old else '-'} -> {new}")
    else:
        click.echo(f"Tagged {change.ref} -> {new}")


@cli.command()
@click.argument("ref")
@click.option(
    "--remote",
    is_flag=True,
    help="Delete on the registry (REGISTRY/REPO:TAG, or @DIGEST for the manifest and all "
    "its tags).",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --remote: also when the registry can only delete the whole manifest and "
    "other tags point at it.",
)
@network_options
@click.pass_context
def remove(ctx: click.Context, /, ref: str, remote: bool, force: bool, **kwargs: Any) -> None:
    """Remove a tag (REPO:TAG) or, by digest, a ModelKit with all its tags.

    The blobs stay in the store until 'tether gc'. With --remote the tag or manifest is
    deleted on the registry, where it allows deletes.
    """
    from tether.api import kits

    ws = open_workspace(ctx, required=not remote)
    removed = kits.remove(ws, ref, remote=remote, force=force, network=network(kwargs))
    for gone in removed:
        click.echo(f"Removed {gone}" + (" from the registry" if remote else ""))
    if remote:
        return
    info("run 'tether gc' to free the space of blobs nothing references any more")


@cli.command()
@click.argument("ref")
@click.option(
    "-d",
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Directory to unpack into (created if missing).",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="TYPES[:NAMES]",
    help="Only these parts: kitfile, model, code, datasets[:NAME], docs, prompts, "
    "mcpservers. Repeatable; comma-separated lists allowed.",
)
@click.option("-o", "--overwrite", is_flag=True, help="Replace files that differ.")
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@network_options
@_json
@click.pass_context
def unpack(
    ctx: click.Context,
    /,
    ref: str,
    directory: str,
    filters: tuple[str, ...],
    overwrite: bool,
    dry_run: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Unpack the ModelKit REF into a directory, verifying every byte.

    Refuses links, devices and paths that leave the directory; refuses to overwrite a
    differing file unless --overwrite. Nothing is changed when it refuses. A REF on a
    registry that the store does not hold is fetched first: only the layers the
    filters select.
    """
    from tether.api import kits

    request = kits.UnpackRequest(ref, Path(directory), filters, overwrite, dry_run)
    report = kits.unpack(open_workspace(ctx), request, network(kwargs))
    _print_report(report, as_json, "Unpacked")


@cli.command()
@click.argument("ref")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option(
    "--clean",
    is_flag=True,
    help="Also delete files under the version's paths that it does not contain.",
)
@_json
@click.pass_context
def rollback(ctx: click.Context, ref: str, dry_run: bool, clean: bool, as_json: bool) -> None:
    """Restore the project's files to exactly the bytes of the ModelKit REF.

    Every file the version holds is written back (verified against its digest), the
    Kitfile included; the report says which files changed.
    """
    from tether.modelkit.unpack import rollback as do_rollback

    report = do_rollback(open_workspace(ctx), ref, dry_run=dry_run, clean=clean)
    _print_report(report, as_json, "Rolled back to")


def _print_report(report: UnpackReport, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json(report.to_json())
        return
    prefix = "would " if report.dry_run else ""
    for rel in report.written:
        secho(f"  {prefix}add      {rel}", fg="green")
    for rel in report.replaced:
        secho(f"  {prefix}restore  {rel}", fg="yellow")
    for rel in report.removed:
        secho(f"  removed  {rel}", fg="red")
    for rel in report.extra:
        click.echo(f"  extra    {rel} (not in this version; --clean removes it)")
    head = (
        f"{verb} {report.digest[:19]} in {report.target}"
        if not report.dry_run
        else f"Dry run for {report.digest[:19]} in {report.target}"
    )
    click.echo(
        f"{head}: {len(report.written)} added, {len(report.replaced)} restored, "
        f"{len(report.unchanged)} unchanged"
    )
