"""tether server: the team server, and its administration (users, tokens, projects,
grants, audit)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from tether.cli import cli
from tether.cli._output import emit_json, info, table, timestamp, warn


def _deployment(ctx: click.Context) -> Any:
    from tether.errors import UsageError
    from tether.team.deployment import Deployment

    opts = ctx.find_root().obj.get("server") or {}
    if not opts.get("db"):
        raise UsageError("which database?", hint="give --db postgresql://… or set TETHER_SERVER_DB")
    if not opts.get("blobs"):
        raise UsageError(
            "where do blobs go?",
            hint="give --blobs DIR|s3://BUCKET/PREFIX or set TETHER_SERVER_BLOBS",
        )
    cache = opts.get("cache")
    team = Deployment(
        opts["db"], opts["blobs"], cache=Path(cache) if cache else None, part_mb=opts["part_mb"]
    )
    ctx.call_on_close(team.close)
    return team


def _part_mb() -> int:
    from tether.errors import ConfigError

    text = os.environ.get("TETHER_SERVER_PART_MB", "64")
    if not text.isdigit() or not 5 <= int(text) <= 5120:
        raise ConfigError(
            f"TETHER_SERVER_PART_MB={text[:20]!r} is not a part size",
            hint="MiB from 5 (S3's smallest part) to 5120",
        )
    return int(text)


def _actor() -> Any:
    from tether.team.audit import Actor

    return Actor.command_line()


_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@cli.group(invoke_without_command=True)
@click.option(
    "--config",
    "config_file",
    envvar="TETHER_SERVER_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file of settings (db, blobs, host, port, workers, cache, part_mb); the "
    "command line and TETHER_SERVER_* variables win over it (TETHER_SERVER_CONFIG).",
)
@click.option(
    "--db",
    envvar="TETHER_SERVER_DB",
    help="PostgreSQL URL of the server's database (TETHER_SERVER_DB). A password comes "
    "from PGPASSWORD, ~/.pgpass or the variable, never this option.",
)
@click.option(
    "--blobs",
    envvar="TETHER_SERVER_BLOBS",
    help="Where the projects' blobs go: a folder every server process mounts, or an "
    "S3-compatible bucket, s3://BUCKET[/PREFIX] (credentials and AWS_ENDPOINT_URL_S3 from "
    "the environment) (TETHER_SERVER_BLOBS).",
)
@click.option("--host", envvar="TETHER_SERVER_HOST", default="127.0.0.1", show_default=True)
@click.option(
    "--port", envvar="TETHER_SERVER_PORT", type=click.IntRange(0, 65535), default=8080,
    show_default=True,
)  # fmt: skip
@click.option(
    "--workers", envvar="TETHER_SERVER_WORKERS", type=click.IntRange(1, 64), default=1,
    show_default=True, help="Processes serving at once (they share nothing but the "
    "database and the blob folder).",
)  # fmt: skip
@click.option(
    "--cache",
    envvar="TETHER_SERVER_CACHE",
    help="With a bucket: this machine's cache of blobs the server reads (default: "
    "~/.cache/tether/server) (TETHER_SERVER_CACHE).",
)
@click.pass_context
def server(
    ctx: click.Context,
    config_file: Path | None,
    db: str | None,
    blobs: str | None,
    host: str,
    port: int,
    workers: int,
    cache: str | None,
) -> None:
    """The team server: one place for a team's runs, data and models.

    \b
    Without a subcommand, serves on HOST:PORT: every request needs a token (browsers
    sign in at /login); each project's UI and API are under /p/NAME/. /healthz and
    /readyz are for load balancers. Administer it with the subcommands, on a machine
    that reaches its database:
      tether server user add ada [--admin]
      tether server token create ada --expires 90d      (printed once)
      tether server project add recs
      tether server grant ada recs write
    """
    from click.core import ParameterSource

    from tether.team.deployment import check_command_line_url

    if db and ctx.get_parameter_source("db") == ParameterSource.COMMANDLINE:
        check_command_line_url(db)
    given: dict[str, Any] = {"db": db, "blobs": blobs, "host": host, "port": port,
                             "workers": workers, "cache": cache}  # fmt: skip
    settings = {**given, "part_mb": _part_mb()}
    if config_file is not None:
        from tether.team.settings import read_file

        from_file = read_file(config_file)
        for key, value in from_file.items():
            source = ctx.get_parameter_source(key) if key in given else None
            if key == "part_mb" and "TETHER_SERVER_PART_MB" in os.environ:
                continue
            if source in (None, ParameterSource.DEFAULT) or given.get(key) is None:
                settings[key] = value
    ctx.ensure_object(dict)
    ctx.find_root().obj["server"] = settings
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    team = _deployment(ctx)
    team.team  # noqa: B018 - create or check the server's tables before serving
    if team.bucket_url is not None:
        team.s3  # noqa: B018 - reach the bucket now: a wrong name fails here, not later
    team.close()
    # The workers build the app from these (tether.server.app.factory).
    os.environ["TETHER_SERVER_DB"] = team.database_url
    os.environ["TETHER_SERVER_BLOBS"] = str(team.blobs)
    os.environ["TETHER_SERVER_PART_MB"] = str(team.part_mb)
    if team.cache is not None:
        os.environ["TETHER_SERVER_CACHE"] = str(team.cache)
    host, port, workers = settings["host"], settings["port"], settings["workers"]
    click.echo(f"tether server: http://{host}:{port}/ ({workers} worker(s))")
    uvicorn.run(
        "tether.server.app:factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


@server.group()
def user() -> None:
    """Server users."""


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Admin of the server: every project, every role.")
@click.pass_context
def user_add(ctx: click.Context, name: str, admin: bool) -> None:
    """Add user NAME (then give them a token: tether server token create NAME)."""
    from tether.team import accounts

    accounts.add_user(_deployment(ctx), name, admin=admin, actor=_actor())
    click.echo(f"added user {name}" + (" (admin)" if admin else ""))


@user.command("list")
@_json
@click.pass_context
def user_list(ctx: click.Context, as_json: bool) -> None:
    """List the server's users."""
    from tether.team import accounts

    found = accounts.users(_deployment(ctx))
    if as_json:
        emit_json([u.to_json() for u in found])
        return
    table(
        ["user", "admin", "created"],
        [[u.name, "yes" if u.admin else "", timestamp(u.created)] for u in found],
    )


@server.group()
def token() -> None:
    """Access tokens: how users and clients sign in."""


@token.command("create")
@click.argument("name", metavar="USER")
@click.option("--expires", default="90d", show_default=True, help="12h, 90d, 2w or never.")
@_json
@click.pass_context
def token_create(ctx: click.Context, name: str, expires: str, as_json: bool) -> None:
    """Make a token for USER and print it, once: only its hash is kept."""
    from tether.team import accounts

    made = accounts.create_token(
        _deployment(ctx), name, expires_in=accounts.parse_expiry(expires), actor=_actor()
    )
    if as_json:
        emit_json(made.to_json())
        return
    click.echo(made.secret)
    info(f"token {made.token.id} for {name}; shown once, keep it secret")


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke the token ID (the middle part of tt1.ID.SECRET): refused from now on."""
    from tether.team import accounts

    accounts.revoke_token(_deployment(ctx), token_id, actor=_actor())
    click.echo(f"revoked token {token_id}")


@token.command("list")
@click.argument("name", metavar="USER")
@_json
@click.pass_context
def token_list(ctx: click.Context, name: str, as_json: bool) -> None:
    """List USER's tokens (ids and dates, never the secrets)."""
    from tether.team import accounts

    found = accounts.tokens(_deployment(ctx), name)
    if as_json:
        emit_json([t.to_json() for t in found])
        return
    rows = [
        [t.id, timestamp(t.created), timestamp(t.expires) if t.expires else "never",
         timestamp(t.revoked) if t.revoked else ""]
        for t in found
    ]  # fmt: skip
    table(["id", "created", "expires", "revoked"], rows)


@server.group()
def project() -> None:
    """Projects on the server."""


@project.command("add")
@click.argument("name")
@click.pass_context
def project_add(ctx: click.Context, name: str) -> None:
    """Add project NAME (its schema and blob folder), then grant users to it."""
    from tether.team import projects

    projects.add_project(_deployment(ctx), name, actor=_actor())
    click.echo(f"added project {name}")


@project.command("list")
@_json
@click.pass_context
def project_list(ctx: click.Context, as_json: bool) -> None:
    """List the server's projects."""
    from tether.team import projects

    found = projects.projects(_deployment(ctx))
    if as_json:
        emit_json(found)
        return
    for name in found:
        click.echo(name)


@server.command()
@click.argument("name", metavar="USER")
@click.argument("project_name", metavar="PROJECT")
@click.argument("role", type=click.Choice(["read", "write", "admin", "none"]))
@click.pass_context
def grant(ctx: click.Context, name: str, project_name: str, role: str) -> None:
    """Let USER read, write or administer PROJECT (none: take the grant away)."""
    from tether.team import projects

    team = _deployment(ctx)
    if role == "none":
        projects.revoke(team, name, project_name, actor=_actor())
        click.echo(f"{name} no longer has access to {project_name}")
        return
    projects.grant(team, name, project_name, role, actor=_actor())
    click.echo(f"{name} may {role} in {project_name}")


@server.command()
@click.argument("project_name", metavar="PROJECT")
@click.argument("alias")
@click.argument("role", type=click.Choice(["write", "admin", "none"]))
@click.pass_context
def protect(ctx: click.Context, project_name: str, alias: str, role: str) -> None:
    """Require ROLE to move ALIAS of any model in PROJECT (none: lift the rule): on the
    server's pages and through 'tether sync', a move by a lower role is refused."""
    from tether.team import projects

    rule = projects.protect(_deployment(ctx), project_name, alias, role, actor=_actor())
    if rule is None:
        click.echo(f"{alias} in {project_name}: any writer may move it")
    else:
        click.echo(f"{alias} in {project_name}: only {rule} or above may move it")


@server.command("migrate")
@_json
@click.pass_context
def server_migrate(ctx: click.Context, as_json: bool) -> None:
    """Bring the server's schema and every project's up to this tether, after an
    upgrade (back the database up first). Servers answer /readyz with 503 until this
    has run; safe to re-run, and beside running servers."""
    applied = _deployment(ctx).migrate()
    if as_json:
        emit_json(applied)
        return
    for schema, names in applied.items():
        click.echo(f"{schema}: {', '.join(names) if names else 'up to date'}")


@server.command()
@click.option("-n", "--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@_json
@click.pass_context
def audit(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The latest changes made on the server: when, who, what, from where."""
    from tether.team.audit import entries

    found = entries(_deployment(ctx), limit=limit)
    if as_json:
        emit_json([e.to_json() for e in found])
        return
    if not found:
        warn("no changes recorded yet")
    table(
        ["when", "who", "action", "object", "from"],
        [[timestamp(e.at), e.actor, e.action, e.object, e.remote] for e in found],
    )
