"""tether ui: the local web UI."""

from __future__ import annotations

import click

from tether.cli import cli
from tether.cli._output import info, warn
from tether.cli._workspace import open_workspace


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback exposes the project unauthenticated.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0: any free port."
)
@click.option(
    "--open/--no-open", "open_browser", default=False, help="Open the UI in a web browser."
)
@click.option(
    "--writable",
    is_flag=True,
    help="Allow the actions that change state: move or roll back an alias, delete a run.",
)
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, open_browser: bool, writable: bool) -> None:
    """Browse runs, metrics, models and lineage in a web browser.

    Serves this project's database and store on 127.0.0.1 (read-only unless
    --writable) and prints the URL; Ctrl-C stops it. The pages' JSON is under /api
    (docs/ui.md).
    """
    from tether.web.serve import UiOptions, is_loopback, serve

    ws = open_workspace(ctx)
    if not is_loopback(host):
        warn(
            f"listening on {host}: anyone who can reach it sees this project, with no "
            "authentication (the team server, 'tether server', adds it)"
        )

    def ready(url: str) -> None:
        click.echo(f"tether ui: {url}", nl=True)
        info("read-only; --writable allows alias moves and deletes" if not writable else "writable")
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    serve(ws, UiOptions(host, port, writable), ready=ready)
