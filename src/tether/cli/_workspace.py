"""Opening the project a command runs in (``-C DIR`` or the current directory)."""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

import click

if TYPE_CHECKING:
    from tether.workspace import Workspace


@overload
def open_workspace(ctx: click.Context) -> Workspace: ...
@overload
def open_workspace(ctx: click.Context, *, required: bool) -> Workspace | None: ...


def open_workspace(ctx: click.Context, *, required: bool = True) -> Workspace | None:
    """The project; with ``required=False``, None outside one (commands that only talk
    to a registry work anywhere, and use the project's settings when there is one)."""
    from tether.errors import WorkspaceError
    from tether.workspace import Workspace

    try:
        return Workspace.open(ctx.find_root().obj.get("project"))
    except WorkspaceError:
        if required:
            raise
        return None
