"""Registry commands: login, logout, push, pull."""

from __future__ import annotations

import sys
from typing import Any

import click

from tether.cli import cli
from tether.cli._network import json_option, network, network_options
from tether.cli._output import CliReporter, emit_json, human_size, info, warn
from tether.cli._workspace import open_workspace


@cli.command()
@click.argument("registry")
@click.option("-u", "--username", help="User name (asked for when not given).")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password or token from standard input (for scripts and CI).",
)
@network_options
def login(registry: str, username: str | None, password_stdin: bool, **kwargs: Any) -> None:
    """Log in to REGISTRY (host[:port]) and store the credential as Docker does.

    The credential is checked against the registry first, then kept in
    ~/.docker/config.json (mode 0600; $DOCKER_CONFIG moves it) or in the credential
    helper configured there, where docker, podman, skopeo and kit find it too.
    """
    from tether.api import registry as api
    from tether.errors import UsageError
    from tether.oci.credentials import Credential

    registry = _registry_name(registry)
    opts = network(kwargs)
    if username is None:
        if not sys.stdin.isatty() or password_stdin:
            raise UsageError("no user name", hint="give it with -u USER")
        username = click.prompt("Username")
    if password_stdin:
        secret = sys.stdin.read().rstrip("\r\n")
    elif sys.stdin.isatty():
        secret = click.prompt("Password", hide_input=True)
    else:
        raise UsageError(
            "no terminal to ask for the password",
            hint="pipe it in with --password-stdin (never put it on the command line)",
        )
    if not secret:
        raise UsageError("empty password", hint="give the password or an access token")
    where = api.login(registry, Credential(username, secret), opts)
    click.echo(f"Login to {registry} succeeded; credential stored in {where}")


@cli.command()
@click.argument("registry")
def logout(registry: str) -> None:
    """Forget the stored credential for REGISTRY."""
    from tether.oci.credentials import erase

    registry = _registry_name(registry)
    if erase(registry):
        click.echo(f"Removed the credential for {registry}")
    else:
        info(f"no credential was stored for {registry}")


@cli.command()
@click.argument("source", metavar="REF")
@click.argument("destination", required=False, metavar="[DEST]")
@network_options
@json_option
@click.pass_context
def push(
    ctx: click.Context, /, source: str, destination: str | None, as_json: bool, **kwargs: Any
) -> None:
    """Push the local ModelKit REF to a registry: to REF itself when it names one
    (REGISTRY/REPO:TAG), else to DEST.

    Only blobs the registry lacks travel (a blob another repository of the registry
    holds is mounted, not sent); big blobs go up in chunks, so an interrupted push
    resumes where it stopped. The manifest goes last, then the tag.
    """
    from tether.api import registry as api

    ws = open_workspace(ctx)
    progress = CliReporter(f"push {destination or source}")
    try:
        report = api.push(ws, source, destination, network=network(kwargs), report=progress)
    finally:
        progress.stop()
    if as_json:
        emit_json(report.to_json())
        return
    click.echo(
        f"Pushed {report.ref}: {report.moved} blob(s) sent ({human_size(report.bytes_moved)}), "
        f"{report.mounted} mounted, {report.present} already there"
        + (", with its provenance" if report.provenance else "")
    )
    if report.tag_overtaken is not None:
        warn(
            f"someone else pushed to the same tag meanwhile: it now points at "
            f"{report.tag_overtaken.short}, not at this ModelKit"
        )


@cli.command()
@click.argument("ref")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="TYPES[:NAMES]",
    help="Fetch only these parts: kitfile, model, code, datasets[:NAME], docs, prompts, "
    "mcpservers. Repeatable.",
)
@click.option("--force", is_flag=True, help="Accept a version tag that now means another ModelKit.")
@network_options
@json_option
@click.pass_context
def pull(
    ctx: click.Context,
    /,
    ref: str,
    filters: tuple[str, ...],
    force: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Pull the ModelKit REF (REGISTRY/REPO[:TAG|@DIGEST]) into the local store.

    Every blob is checked against its digest and size while it streams; nothing that
    fails is kept. The local copy is tagged REGISTRY/REPO:TAG.
    """
    from tether.api import registry as api

    ws = open_workspace(ctx)
    progress = CliReporter(f"pull {ref}")
    try:
        request = api.PullRequest(ref, filters, force)
        report = api.pull(ws, request, network=network(kwargs), report=progress)
    finally:
        progress.stop()
    if as_json:
        emit_json(report.to_json())
        return
    skipped = f", {report.skipped} layer(s) left out by --filter" if report.skipped else ""
    click.echo(
        f"Pulled {report.ref}: {report.moved} blob(s) fetched "
        f"({human_size(report.bytes_moved)}), {report.present} already here{skipped}"
        + (", with its provenance" if report.provenance else "")
    )
    if report.provenance_refused:
        warn(
            f"{report.provenance_refused} provenance document(s) attached on the registry "
            "were left out: not a valid Statement about this ModelKit"
        )
    for change in report.tag_changes:
        if change.action == "move" and change.old is not None:
            info(f"{change.ref} moved: {change.old.short} -> {report.digest.short}")


def _registry_name(text: str) -> str:
    from urllib.parse import urlsplit

    from tether.errors import UsageError

    host = text.strip()
    if "://" in host:
        host = urlsplit(host).netloc
    host = host.rstrip("/")
    if not host or "/" in host or "@" in host:
        raise UsageError(
            f"{text!r} is not a registry", hint="give host[:port], e.g. registry.example.com"
        )
    return host
