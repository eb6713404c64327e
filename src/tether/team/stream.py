"""A running run's metrics and status, streamed live to the team server.

Points are written locally first (the run's buffer, then its database); the stream gets
each written batch and sends it from a background thread, several batches to a request,
zstd-compressed, retried with growing pauses while the server is down. The training
never waits on it: offering points only appends to a bounded queue. A queue past its
bound, a refusal (a revoked token, a gap the server reports) or a server still down when
the run ends stop the stream; what it did not deliver, the next ``tether sync`` sends
whole, and the server counts points by position, so none arrives twice.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

from tether.runs.record import NewRun
from tether.team.sync import MAX_POINTS_PER_BATCH, StreamBatch, StreamEnd

MAX_QUEUED = 2_000_000  # points held for a server that does not answer (~100 MB)
MAX_REQUEST = MAX_POINTS_PER_BATCH  # points in one request: what the server takes
DRAIN_S = 5.0  # at the end, how long a reachable server gets to take the rest
TIMEOUT_S = 10.0
PAUSES = (0.2, 0.5, 1.0, 2.0, 5.0)  # between attempts while the server is down

State = Literal["live", "unreachable", "stopped", "done"]


class RunStream:
    """One run's stream: ``offer`` points as they are written, ``finish`` with the end,
    then ``close``."""

    def __init__(self, url: str, project: str, token: str, run: NewRun, seq: int) -> None:
        self._url = f"{url}/p/{project}/sync/stream"
        self._token = token
        self._run = run
        self._seq = seq  # position of the first queued point in the run's points
        self._queue: list[tuple[str, int, float, float]] = []
        self._end: StreamEnd | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._announce = True  # the run shows on the server at once, before any point
        self._sending = False  # a request is in flight
        self.state: State = "live"
        self.reason: str | None = None
        self._thread = threading.Thread(target=self._loop, name="tether-stream", daemon=True)
        self._thread.start()

    def offer(self, points: Sequence[tuple[str, int, float, float]]) -> None:
        with self._cond:
            if self.state == "stopped":
                return
            if len(self._queue) + len(points) > MAX_QUEUED:
                self._stop_locked(f"more than {MAX_QUEUED:,} points waited for the server")
                return
            self._queue.extend(points)
            self._cond.notify()

    def finish(self, end: StreamEnd) -> None:
        with self._cond:
            self._end = end
            self._cond.notify()

    def close(self, timeout: float = DRAIN_S) -> State:
        """Give the rest ``timeout`` seconds to go when the server answers; when it does
        not, only an attempt already under way (a server coming back may take the points
        before its answer is read here); then stop. Returns how the stream ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while time.monotonic() < deadline:
                if self.state == "live" and (self._queue or self._end is not None):
                    pass
                elif not (self.state == "unreachable" and self._sending):
                    break
                # Live with points left, or an attempt in flight that may find the
                # server back (it can take them before its answer arrives here).
                self._cond.wait(deadline - time.monotonic())
            self._closing = True
            self._cond.notify_all()
            if self.state == "live" and (self._queue or self._end is not None):
                self._stop_locked("the server did not take the last points in time")
            elif self.state == "unreachable":
                self._stop_locked("the server could not be reached")
            elif self.state == "live":
                self.state = "done"
        self._thread.join(timeout=1.0)
        return self.state

    def _stop_locked(self, reason: str) -> None:
        if self.state != "stopped":
            self.state, self.reason = "stopped", reason
            self._queue.clear()
            self._end = None
            sys.stderr.write(
                f"tether: live metrics to the server stopped ({reason}); the run is"
                " recorded here and 'tether sync' sends it\n"
            )
        self._cond.notify_all()

    def _loop(self) -> None:
        import httpx

        with httpx.Client(
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Content-Encoding": "zstd",
            },
            timeout=TIMEOUT_S,
            # Plain HTTP needs no certificates: loading them costs 50 ms of CPU, in the
            # training process, for nothing (the stream never follows a redirect).
            verify=self._url.startswith("https://"),
        ) as client:
            failures = 0
            while True:
                with self._cond:
                    while not (self._queue or self._end or self._closing or self._announce):
                        self._cond.wait()
                    if self._closing or self.state in ("stopped", "done"):
                        return
                    points = tuple(self._queue[:MAX_REQUEST])
                    last = len(self._queue) <= MAX_REQUEST
                    batch = StreamBatch(self._run, self._seq, points, self._end if last else None)
                    self._sending = True
                outcome = self._send(client, batch)
                with self._cond:
                    self._sending = False
                    if outcome is None:  # delivered
                        failures = 0
                        self._announce = False
                        if self.state == "unreachable":
                            self.state = "live"
                        del self._queue[: len(points)]
                        self._seq += len(points)
                        if batch.end is not None:
                            self._end = None
                        self._cond.notify_all()
                    elif outcome == "retry":
                        self.state = "unreachable"
                        self._cond.notify_all()
                        pause = PAUSES[min(failures, len(PAUSES) - 1)]
                        failures += 1
                        self._cond.wait_for(lambda: self._closing, timeout=pause)
                    else:
                        self._stop_locked(outcome)
                        return

    def _send(self, client: Any, batch: StreamBatch) -> str | None:
        """None when the server took the batch; "retry" when it could not be reached or
        was briefly unable; otherwise why the stream must stop."""
        import httpx
        import orjson
        import zstandard

        body = zstandard.ZstdCompressor(level=3).compress(orjson.dumps(batch.to_json()))
        try:
            try:
                response = client.post(self._url, content=body)
            except httpx.TransportError as e:
                if isinstance(e, httpx.TimeoutException):
                    raise
                # A kept-alive connection to a server that restarted fails once: the
                # next attempt opens a new one (a batch sent twice is taken once).
                response = client.post(self._url, content=body)
        except httpx.HTTPError:
            return "retry"
        if response.status_code < 300:
            return None
        if response.status_code in (408, 429) or response.status_code >= 500:
            return "retry"
        try:
            message = str(response.json().get("message", ""))[:200]
        except ValueError:
            message = ""
        return f"the server answered {response.status_code}{': ' + message if message else ''}"
