"""tether connect, sync, disconnect: a project's link to a team server."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from tether.cli import cli
from tether.cli._output import emit_json, info, warn
from tether.cli._workspace import open_workspace

if TYPE_CHECKING:
    from tether.errors import TeamError
    from tether.team.client import SyncReport


@cli.command()
@click.argument("url")
@click.option("--project", "project", required=True, help="The project on the server.")
@click.option(
    "--token-stdin",
    is_flag=True,
    help="Read the token from standard input (else it is asked for, hidden).",
)
@click.pass_context
def connect(ctx: click.Context, url: str, project: str, token_stdin: bool) -> None:
    """Link this project to a team server's PROJECT, checking the token first.

    The token goes to ~/.config/tether/credentials.toml (mode 0600), never into the
    project; the link (URL and project) to .tether/server.toml. Then 'tether sync'.
    """
    from tether.errors import UsageError
    from tether.team import client

    if token_stdin:
        token = sys.stdin.read().strip()
    elif sys.stdin.isatty():
        token = click.prompt("Token", hide_input=True).strip()
    else:
        raise UsageError("no terminal to ask for the token", hint="pipe it in with --token-stdin")
    if not token:
        raise UsageError("empty token", hint="an admin makes one: tether server token create USER")
    link = client.connect(open_workspace(ctx), url, project, token)
    click.echo(f"connected to {link.url}, project {link.project}")


@cli.command()
@click.pass_context
def disconnect(ctx: click.Context) -> None:
    """Forget this project's team server (nothing on the server changes)."""
    from tether.team import client

    link = client.disconnect(open_workspace(ctx))
    if link is None:
        info("this project was not connected")
        return
    click.echo(f"disconnected from {link.url} ({link.project})")


CONFLICT_EXIT = 3  # synced, but some alias moved apart on both sides: look at it


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--watch",
    is_flag=True,
    help="Keep syncing, every --every seconds, until Ctrl-C (JSON: one line per round).",
)
@click.option(
    "--every",
    type=click.FloatRange(1, 86_400),
    default=60,
    show_default=True,
    help="Seconds between rounds with --watch.",
)
@click.pass_context
def sync(ctx: click.Context, as_json: bool, watch: bool, every: float) -> None:
    """Exchange runs and models with the connected server: send the runs made here that
    it lacks or holds in an older state (records, params, tags, every metric point,
    environments, and the blobs each keeps) and the model registry (versions with their
    ModelKits, aliases, history) and the content of the tracked data (every pointer in
    the working tree, and the runs' inputs), then take in what teammates sent and what
    this checkout's pointers need ('tether checkout' places it). Alias moves made
    apart on both sides are reported as conflicts (exit status 3), never overwritten.
    Safe to repeat: a second sync moves nothing. Sending needs a write grant. With
    --watch it keeps syncing; a round that cannot reach the server is reported and the
    next one tries again."""
    from tether.team import client

    ws = open_workspace(ctx)
    if watch:
        try:
            client.watch(ws, every=every, on_round=lambda r: _round(r, as_json))
        except KeyboardInterrupt:
            info("stopped")
        return
    result = client.sync(ws)
    _report(result, as_json)
    if result.conflicts:
        click.echo(
            "hint: see both histories (tether model history NAME here, the model's page on"
            " the server), move the alias where it belongs on one side, then sync again",
            err=True,
        )
        sys.exit(CONFLICT_EXIT)


def _round(outcome: SyncReport | TeamError, as_json: bool) -> None:
    """One round of --watch: its report (a JSON line each), or why it could not reach
    the server."""
    import time

    from tether.errors import TeamError

    if not isinstance(outcome, TeamError):
        _report(outcome, as_json, stamp=time.time())
    elif as_json:
        emit_json({"at": time.time(), **outcome.to_json()}, lines=True)
    else:
        warn(f"{time.strftime('%H:%M:%S')} {outcome.message}; trying again later")


def _report(result: SyncReport, as_json: bool, *, stamp: float | None = None) -> None:
    """The report; ``stamp``: one round of --watch, at that time."""
    import time

    if as_json:
        data = result.to_json() if stamp is None else {"at": stamp, **result.to_json()}
        emit_json(data, lines=stamp is not None)
    else:
        when = "" if stamp is None else time.strftime("%H:%M:%S ", time.localtime(stamp))
        click.echo(
            f"{when}synced with {result.server.url} ({result.server.project}): "
            f"{len(result.sent)} run(s) sent with {result.blobs_sent} blob(s), "
            f"{result.up_to_date} already there, {len(result.pulled)} teammates' run(s)"
            " received"
        )
        for label, merges in (("sent", result.models_sent), ("received", result.models_pulled)):
            for m in merges:
                if m.versions or m.events or m.aliases:
                    click.echo(
                        f"model {m.model} {label}: {len(m.versions)} version(s),"
                        f" {m.events} history event(s), aliases moved: "
                        f"{', '.join(m.aliases) or 'none'}"
                    )
        if result.data_sent or result.data_fetched:
            click.echo(
                f"tracked data: {result.data_sent} blob(s) sent, {result.data_fetched} received"
                + ("; place them with: tether checkout" if result.data_fetched else "")
            )
        if result.held_back:
            info(f"{result.held_back} run(s) made here were not sent: a read grant may not send")
        if result.data_incomplete:
            shown = ", ".join(result.data_incomplete[:3])
            info(f"not sent, not all of its content is here: {shown}"
                 + (" …" if len(result.data_incomplete) > 3 else ""))  # fmt: skip
        if result.data_wanted:
            info(
                f"{result.data_wanted} object(s) the tracked data needs are on no server yet:"
                " push them from the clone that added the data"
            )
    for conflict in result.conflicts:
        warn(f"conflict: {conflict.message}")
