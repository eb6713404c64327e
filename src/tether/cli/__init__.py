"""The ``tether`` command: a thin adapter that parses, calls one library function and
renders. Errors become one line plus a hint and an exit code (0 ok, 1 failure to act
on, 2 usage); a traceback only with ``TETHER_DEBUG=1``."""

from __future__ import annotations

import os
from typing import Any

import click

from tether import __version__
from tether.cli._output import sanitized_output, secho
from tether.errors import TetherError


class _Root(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        with sanitized_output():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TetherError as exc:
            if os.environ.get("TETHER_DEBUG"):
                raise
            secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`tether inspect … | head`): not an error of ours.
            # Point stdout at /dev/null so the interpreter's final flush stays quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            ctx.exit(141)
        except OSError as exc:
            if os.environ.get("TETHER_DEBUG"):
                raise
            secho(
                f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
                fg="red",
                err=True,
            )
            click.echo(
                "hint: check the path and its permissions (TETHER_DEBUG=1 shows a traceback)",
                err=True,
            )
            ctx.exit(1)

    def list_commands(self, ctx: click.Context) -> list[str]:
        # Keep the order a user meets them in, not alphabetical.
        return list(self.commands)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tether")
@click.option(
    "-C",
    "--project",
    "project",
    type=click.Path(file_okay=False),
    help="Run as if tether was started in this directory.",
)
@click.pass_context
def cli(ctx: click.Context, project: str | None) -> None:
    """tether: version, package and roll back ML models, tied to the code, data,
    environment and seed that made them.

    \b
    Typical session:
      tether init                      create .tether/ and propose a Kitfile
      tether pack -t recs:v1.0.0       pack the project as an immutable ModelKit
      tether list                      what the local store holds
      tether diff recs:v1.0.0 recs:v2.0.0
      tether rollback recs:v1.0.0      put version 1's files back
      tether run --seed 42 -- python train.py
      tether runs list -f "metrics.rmse < 0.9"
    """
    ctx.ensure_object(dict)
    ctx.obj["project"] = project


def main() -> None:
    cli(prog_name="tether")


# Command modules decorate `cli`; they import only click at module level, so this
# stays cheap for `tether --help`.
from tether.cli import data as _data  # noqa: E402, F401
from tether.cli import modelkit as _modelkit  # noqa: E402, F401
from tether.cli import project as _project  # noqa: E402, F401
from tether.cli import runs as _runs  # noqa: E402, F401

# isort: split
# After runs: `tether --help` lists commands in the order a user meets them.
from tether.cli import registry as _registry  # noqa: E402, F401
from tether.cli import repro as _repro  # noqa: E402, F401

# isort: split
from tether.cli import models as _models  # noqa: E402, F401
from tether.cli import ui as _ui  # noqa: E402, F401

# isort: split
from tether.cli import server as _server  # noqa: E402, F401
from tether.cli import sync as _sync  # noqa: E402, F401

# isort: split
from tether.cli import importing as _importing  # noqa: E402, F401
