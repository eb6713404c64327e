"""Rendering for the CLI: JSON, sizes, tables and progress. rich is imported lazily."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def timestamp(ts: float | None) -> str:
    """Local date and time to the second, or ``-``."""
    import time

    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def short_digest(digest: str | None) -> str:
    """The first 12 hex characters of a ``sha256:`` digest, or ``-``."""
    return "-" if not digest else digest.removeprefix("sha256:")[:12]


def warn(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


def info(message: str) -> None:
    click.echo(message, err=True)


def table(columns: list[str], rows: list[list[str]], *, keep_case: int = 0) -> None:
    """A plain aligned table; stays plain when piped. Headers are upper-cased except the
    last ``keep_case`` (run ids, which are lower-case)."""
    if not rows:
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    cut = len(columns) - keep_case
    heads = [c.upper() if i < cut else c for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(heads, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


class ByteProgress:
    """A rich progress bar on stderr for big transfers; silent when not a terminal."""

    def __init__(self, label: str, *, min_total: int = 64 << 20) -> None:
        self.label = label
        self.min_total = min_total
        self._progress: Any = None
        self._task: Any = None

    def start(self, total: int | None) -> None:
        """Show the bar (on a terminal) for ``total`` bytes; None when the total is not
        known in advance."""
        if (total is not None and total < self.min_total) or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
