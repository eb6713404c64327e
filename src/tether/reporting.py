"""The one reporting protocol long operations take: bytes done, notes, warnings and
waits on another process. The CLI renders it as a progress bar and lines on stderr;
the web UI and the server will stream it; a library caller passes nothing (``SILENT``)
or the callbacks it cares about (``Callbacks``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Reporter(Protocol):
    def start(self, total: int | None) -> None:
        """Bytes about to be processed (None: not known in advance)."""

    def advance(self, n: int) -> None:
        """``n`` more bytes done."""

    def note(self, message: str) -> None:
        """What the operation is doing now."""

    def warn(self, message: str) -> None:
        """Something the user should know; the operation goes on."""

    def waiting(self, message: str) -> None:
        """Another process holds a lock this operation needs."""


def _ignore(_value: object) -> None:
    pass


@dataclass(frozen=True)
class Callbacks:
    """A Reporter from plain functions; what is not given is ignored."""

    on_start: Callable[[int | None], None] = _ignore
    on_advance: Callable[[int], None] = _ignore
    on_note: Callable[[str], None] = _ignore
    on_warn: Callable[[str], None] = _ignore
    on_waiting: Callable[[str], None] = _ignore

    def start(self, total: int | None) -> None:
        self.on_start(total)

    def advance(self, n: int) -> None:
        self.on_advance(n)

    def note(self, message: str) -> None:
        self.on_note(message)

    def warn(self, message: str) -> None:
        self.on_warn(message)

    def waiting(self, message: str) -> None:
        self.on_waiting(message)


SILENT: Reporter = Callbacks()
