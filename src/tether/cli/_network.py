"""The connection options of every command that talks to a registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from tether.api.registry import NetworkOptions

F = TypeVar("F", bound=Callable[..., Any])
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def network_options(fn: F) -> F:
    """--plain-http, --insecure, --ca-file, --concurrency."""
    options = [
        click.option(
            "--plain-http",
            is_flag=True,
            help="Speak plain HTTP to the registry (no TLS). Trusted networks only; "
            "'registry.plain_http' in the settings does the same per registry.",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            help="Use TLS but do not verify the registry's certificate. Trusted networks only.",
        ),
        click.option(
            "--ca-file",
            type=click.Path(exists=True, dir_okay=False),
            help="Trust the registry's certificate if this CA (PEM) signed it.",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1, 64),
            help="Blobs transferred at once (default: registry.concurrency, 4).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def network(kwargs: dict[str, Any]) -> NetworkOptions:
    """Take the network options off a command's keyword arguments."""
    from tether.api.registry import NetworkOptions

    return NetworkOptions(
        **{k: kwargs.pop(k) for k in ("plain_http", "insecure", "ca_file", "concurrency")}
    )
