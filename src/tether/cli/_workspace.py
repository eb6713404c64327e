"""Opening the project a command runs in (``-C DIR`` or the current directory)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tether.workspace import Workspace


def open_workspace(ctx: click.Context) -> Workspace:
    from tether.workspace import Workspace

    return Workspace.open(ctx.find_root().obj.get("project"))
