"""Model registry commands (``tether model …``) and ``tether lineage``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from tether.cli import cli
from tether.cli._network import network, network_options
from tether.cli._output import emit_json, short_digest, table, timestamp, warn
from tether.cli._workspace import open_workspace

if TYPE_CHECKING:
    pass

_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
_reason = click.option("-m", "--message", "reason", help="Why: recorded in the history.")


@cli.group()
def model() -> None:
    """The model registry: numbered versions, movable aliases, their history.

    \b
    A model is a repository; version vN is an immutable ModelKit; an alias
    (production, staging, …) points at one version and every move is recorded:
      tether model register recs --from movie-recommend:v1.0.0
      tether model register recs --from v2          (a run: packs its outputs)
      tether model alias recs production v2 -m "better RMSE"
      tether model rollback recs production -m "v2 misbehaves"
      tether model history recs
    """


@model.command(name="list")
@_json
@click.pass_context
def list_models(ctx: click.Context, as_json: bool) -> None:
    """List the registered models with their latest version and aliases."""
    from tether.registry.models import list_models as do_list

    found = do_list(open_workspace(ctx))
    if as_json:
        emit_json([m.to_json() for m in found])
        return
    if not found:
        click.echo("No models yet: tether model register NAME --from REF|RUN")
        return
    rows = [
        [
            m.name,
            str(m.versions),
            f"v{m.latest}" if m.latest else "-",
            ", ".join(f"{a}=v{v}" for a, v in m.aliases.items()) or "-",
        ]
        for m in found
    ]
    table(["model", "versions", "latest", "aliases"], rows)


@model.command()
@click.argument("name")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="REF|RUN",
    help="A ModelKit in the local store, or a run (id or name) to pack from its outputs.",
)
@click.option("-d", "--description", help="A note kept with the version.")
@_json
@click.pass_context
def register(
    ctx: click.Context, name: str, source: str, description: str | None, as_json: bool
) -> None:
    """Register a ModelKit as the next version (v1, v2, …) of model NAME.

    From a run, the run's outputs and the project's Kitfile are packed first, with the
    run's provenance attached. A ModelKit that already is a version of NAME is not
    registered twice.
    """
    from tether.registry.models import register as do_register

    result = do_register(open_workspace(ctx), name, source, description=description, warn=warn)
    v = result.version
    if as_json:
        emit_json({**v.to_json(), "created": result.created, "packed": result.packed})
        return
    if not result.created:
        click.echo(f"{source} already is {name} {v.label} ({v.digest})")
        return
    via = " (packed from the run)" if result.packed else ""
    click.echo(f"Registered {name} {v.label}: {v.digest}{via}")


@model.command()
@click.argument("name")
@_json
@click.pass_context
def versions(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the versions of model NAME, archived ones included."""
    from tether.registry.models import versions as do_versions

    found = do_versions(open_workspace(ctx), name)
    if as_json:
        emit_json([v.to_json() for v in found])
        return
    rows = [
        [
            v.label,
            short_digest(str(v.digest)),
            ", ".join(v.aliases) or "-",
            v.run_id or "-",
            timestamp(v.created),
            "archived" if v.archived else "",
        ]
        for v in found
    ]
    table(["version", "digest", "aliases", "run", "registered", "state"], rows)


@model.command()
@click.argument("spec", metavar="NAME[@vN|:ALIAS]")
@click.argument("version", required=False, metavar="[VERSION|ALIAS]")
@_json
@click.pass_context
def show(ctx: click.Context, spec: str, version: str | None, as_json: bool) -> None:
    """Show one version: its digest, aliases, source, and the run that made it.

    The version may also follow the name: 'tether model show recs v2' (or an alias).
    """
    from tether.api import models

    detail = models.show(open_workspace(ctx), spec, version)
    if as_json:
        emit_json(detail.to_json())
        return
    v, run = detail.version, detail.run
    click.echo(f"{v.model} {v.label}" + ("  (archived)" if v.archived else ""))
    click.echo(f"digest      {v.digest}")
    click.echo(f"aliases     {', '.join(v.aliases) or '-'}")
    click.echo(f"registered  {timestamp(v.created)} by {v.user} from {v.source}")
    if v.description:
        click.echo(f"note        {v.description}")
    if run:
        params = " ".join(f"{k}={val}" for k, val in sorted(run.params.items()))
        click.echo(f"run         {run.name or run.id} ({run.id}), seed {run.seed}")
        if params:
            click.echo(f"params      {params}")
        for key, value in sorted(run.metrics.items()):
            click.echo(f"metric      {key} = {value:g}")
    click.echo(f"unpack      tether unpack {v.model}@{v.digest} -d DIR")


@model.command()
@click.argument("name")
@click.argument("alias")
@click.argument("version", metavar="VERSION")
@_reason
@_json
@click.pass_context
def alias(
    ctx: click.Context, name: str, alias: str, version: str, reason: str | None, as_json: bool
) -> None:
    """Point ALIAS of model NAME at VERSION (v2, a digest, or another alias).

    Promoting is moving an alias: tether model alias recs production v2 -m "…".
    The move is recorded with who, when, from, to and the reason.
    """
    from tether.registry.models import set_alias

    event = set_alias(open_workspace(ctx), name, alias, version, reason=reason)
    if as_json:
        emit_json(event.to_json() if event else {"unchanged": True})
        return
    if event is None:
        click.echo(f"{name}:{alias} already points at {version}")
        return
    was = f" (was v{event.old_version})" if event.old_version else ""
    click.echo(f"{name}:{alias} -> v{event.new_version}{was}")


@model.command()
@click.argument("name")
@click.argument("alias")
@_reason
@click.pass_context
def unalias(ctx: click.Context, name: str, alias: str, reason: str | None) -> None:
    """Remove ALIAS from model NAME (recorded in the history)."""
    from tether.registry.models import remove_alias

    event = remove_alias(open_workspace(ctx), name, alias, reason=reason)
    click.echo(f"removed {name}:{alias} (was v{event.old_version})")


@model.command()
@click.argument("name")
@click.argument("alias", required=False)
@click.option("--remote", is_flag=True, help="Read the history from the model's registry.")
@network_options
@_json
@click.pass_context
def history(
    ctx: click.Context, /, name: str, alias: str | None, remote: bool, as_json: bool, **kwargs: Any
) -> None:
    """Every registration and alias move of model NAME (or of one ALIAS): when, who,
    from, to, and why.

    NAME may be REGISTRY/REPOSITORY: the history is then read from the registry alone,
    with no project needed.
    """
    from tether.api import models

    query = models.HistoryQuery(name, alias, remote)
    events = models.history(open_workspace(ctx, required=False), query, network(kwargs))
    if as_json:
        emit_json([e.to_json() for e in events])
        return
    if not events:
        click.echo("No events.")
        return
    rows = [
        [
            timestamp(e.at),
            e.alias or "-",
            e.action,
            f"v{e.old_version}" if e.old_version else "-",
            f"v{e.new_version}" if e.new_version else "-",
            e.user,
            e.reason or "",
        ]
        for e in events
    ]
    table(["when", "alias", "action", "from", "to", "who", "reason"], rows)


@model.command()
@click.argument("name")
@click.argument("alias")
@click.option("--to", "to", metavar="VERSION", help="The version to go back to.")
@click.option(
    "--restore",
    is_flag=True,
    help="Also put that version's files back into the project (as 'tether rollback').",
)
@_reason
@_json
@click.pass_context
def rollback(
    ctx: click.Context,
    name: str,
    alias: str,
    to: str | None,
    restore: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Move ALIAS of model NAME back: by default to the version it pointed at before
    its last move; --to names one. Recorded like any move."""
    from tether.api import models

    result = models.rollback(
        open_workspace(ctx), models.RollbackRequest(name, alias, to, reason, restore)
    )
    if as_json:
        emit_json(result.to_json())
        return
    event, report = result.event, result.restored
    click.echo(f"{name}:{alias} -> v{event.new_version} (was v{event.old_version})")
    if report is not None:
        changed = len(report.written) + len(report.replaced)
        click.echo(f"restored {changed} files of v{event.new_version} in {report.target}")


@model.command()
@click.argument("spec", metavar="NAME@vN")
@click.option("--force", is_flag=True, help="Also remove the aliases that point at it.")
@_reason
@click.pass_context
def delete(ctx: click.Context, spec: str, force: bool, reason: str | None) -> None:
    """Archive a version: it leaves 'tether list' and can no longer be promoted, but
    stays in the history and in lineage. Refused while an alias points at it, unless
    --force. 'tether gc' then reclaims its blobs if nothing else holds them."""
    from tether.registry.models import archive, split_spec

    name, selector, _ = split_spec(spec)
    if selector is None:
        raise click.UsageError("name the version to delete: NAME@vN")
    version, events = archive(open_workspace(ctx), name, selector, force=force, reason=reason)
    for e in events:
        if e.action == "remove":
            warn(f"removed {name}:{e.alias} (pointed at v{e.old_version})")
    click.echo(f"archived {name} {version.label} ({version.digest})")


@model.command()
@click.argument("name")
@click.argument("destination", required=False, metavar="[REGISTRY/REPO]")
@network_options
@_json
@click.pass_context
def push(
    ctx: click.Context, /, name: str, destination: str | None, as_json: bool, **kwargs: Any
) -> None:
    """Push model NAME to a registry: every version as tag vN, every alias as a tag,
    and the history as an artifact under the tag 'tether.history', so that the
    registry alone answers 'tether model history REGISTRY/REPO'.

    The destination is remembered; later pushes may leave it out.
    """
    from tether.api import models

    report = models.push(open_workspace(ctx), name, destination, network(kwargs))
    if as_json:
        emit_json(report.to_json())
        return
    click.echo(
        f"Pushed {name} to {report.destination}: {len(report.versions)} versions, "
        f"aliases {', '.join(report.aliases) or '-'}, {report.events} history events"
    )


@cli.command()
@click.argument("subject", metavar="REF|RUN|PATH[@DIGEST]")
@click.option("--downstream", is_flag=True, help="What used SUBJECT, instead of what made it.")
@click.option("--depth", type=click.IntRange(0, 1000), help="Stop after N steps.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "dot", "mermaid"]),
    default="text",
    show_default=True,
    help="dot: Graphviz (dot -Tsvg); mermaid: for Markdown.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.pass_context
def lineage(
    ctx: click.Context,
    subject: str,
    downstream: bool,
    depth: int | None,
    fmt: str,
    as_json: bool,
) -> None:
    """Trace SUBJECT upstream (the runs, data, code and environment that made it) or
    --downstream (the runs, ModelKits, model versions and aliases that used it).

    SUBJECT is a model version (recs@v2, recs:production), a ModelKit REF, a run (id
    or name) or a data PATH (PATH@sha256:… for one version of it). Prefix run:, kit:,
    model: or path: when a name could be several.
    """
    from tether.lineage.graph import lineage as do_lineage
    from tether.lineage.render import render

    graph = do_lineage(open_workspace(ctx), subject, downstream=downstream, depth=depth)
    click.echo(render(graph, "json" if as_json else fmt))
