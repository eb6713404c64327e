"""Advisory file locks between tether processes of one project.

Locks are ``flock(2)`` locks on files in ``.tether/locks/``: the kernel drops them
when the holding process dies, so a crash (even ``kill -9``) never leaves a stale lock.
Waiting is the default; a waiter that gives up after ``timeout`` seconds says who it
was waiting for, instead of failing at once as DVC does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tether.errors import LockTimeout

DEFAULT_TIMEOUT = 600.0


@contextlib.contextmanager
def file_lock(
    path: str | Path,
    *,
    shared: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive (or shared) lock on ``path`` for the ``with`` block."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = time.monotonic() + timeout
        told = False
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait(f"waiting for another tether process ({path.name} lock)…")
                    told = True
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"gave up after {timeout:.0f}s waiting for the {path.stem} lock",
                        hint="another tether command is still running in this project; "
                        "wait for it to finish, or raise TETHER_LOCK_TIMEOUT",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        if not shared:
            # For humans debugging a wait: who holds it. Never trusted for correctness.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
