"""Rendering for the CLI: JSON, sizes, tables and progress. rich is imported lazily."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import sys
from collections.abc import Iterator
from typing import Any

import click

from tether.safetext import escape_controls

# tether's own colours are marked with a per-process nonce a stored string cannot guess,
# so the sanitizer lets exactly those escapes through.
_TRUSTED_ESC = "\x1b\ue000" + secrets.token_hex(8) + "\ue001"


def sanitize(text: str) -> str:
    """What reaches the terminal: tether's own colours, everything else escaped."""
    if _TRUSTED_ESC in text:
        return "\x1b".join(escape_controls(part) for part in text.split(_TRUSTED_ESC))
    return escape_controls(text)


def secho(message: str, *, err: bool = False, **styles: Any) -> None:
    """``click.secho`` whose colours survive the sanitizing streams."""
    if not (sys.stderr if err else sys.stdout).isatty():
        click.echo(message, err=err)  # colours only on a terminal, as click does
        return
    click.echo(click.style(message, **styles).replace("\x1b", _TRUSTED_ESC), err=err)


class SanitizingStream(io.TextIOBase):
    """A text stream that passes every write through ``sanitize``; the CLI puts one over
    stdout and stderr for each command, so no stored name, param, path or message can
    drive the user's terminal. Bytes written to ``buffer`` (a run's own log) pass as
    they are."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(sanitize(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return bool(self.inner.isatty())

    def fileno(self) -> int:
        return int(self.inner.fileno())

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.inner, "encoding", "utf-8"))

    @property
    def buffer(self) -> Any:
        return self.inner.buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.contextmanager
def sanitized_output() -> Iterator[None]:
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SanitizingStream(out), SanitizingStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def raw_stderr() -> Any:
    """stderr without the sanitizer, for rich's progress bars (their escapes are ours)."""
    err = sys.stderr
    return err.inner if isinstance(err, SanitizingStream) else err


def emit_json(data: Any, *, lines: bool = False) -> None:
    """Print ``data`` as JSON: indented, or one compact line (a stream of records)."""
    if lines:
        click.echo(json.dumps(data, default=str, separators=(",", ":")))
    else:
        click.echo(json.dumps(data, indent=2, default=str))


def human_size(n: int | None) -> str:
    from tether import units

    return "-" if n is None else units.size(n)


def timestamp(ts: float | None) -> str:
    """Local date and time to the second, or ``-``."""
    import time

    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def short_digest(digest: str | None) -> str:
    """The first 12 hex characters of a ``sha256:`` digest, or ``-``."""
    return "-" if not digest else digest.removeprefix("sha256:")[:12]


def warn(message: str) -> None:
    secho(f"warning: {message}", fg="yellow", err=True)


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

    def __init__(self, label: str, *, min_total: int = 64 << 20, items: bool = False) -> None:
        self.label = label
        self.min_total = min_total
        self.items = items  # counting things (runs, files), not bytes
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
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        counted = (
            (MofNCompleteColumn(), TaskProgressColumn())
            if self.items
            else (DownloadColumn(), TransferSpeedColumn())
        )
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            *counted,
            TimeRemainingColumn(),
            console=Console(file=raw_stderr()),
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


class CliReporter(ByteProgress):
    """The reporting protocol on a terminal: a byte bar, notes and waits as info
    lines, warnings as warnings (all on stderr)."""

    def note(self, message: str) -> None:
        info(message)

    def warn(self, message: str) -> None:
        warn(message)

    def waiting(self, message: str) -> None:
        info(message)


def lines() -> CliReporter:
    """A reporter for commands without a byte count: notes, waits and warnings only."""
    return CliReporter("")
