"""What a run record is: its values (``Run``, ``RunFile``, ``MetricSummary``) and the rules
for ids, names, keys and values. Stored and read by ``repositories/runs.py``."""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tether.errors import UsageError
from tether.safetext import is_safe

if TYPE_CHECKING:
    pass

STATUSES = ("running", "finished", "failed", "killed")
ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
MAX_KEY_LENGTH = 250
HOST = socket.gethostname()
MAX_VALUE_LENGTH = 6000


def new_run_id(now: float | None = None) -> str:
    """A 26-character, time-sortable id (ULID layout, lowercase Crockford base32):
    48 bits of milliseconds then 80 random bits, so ids sort by start time."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(ID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def process_start_token(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not mistaken for
    the process that started a run."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # Field 22 counts after the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[19]


def pid_alive(pid: int, token: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return token is None or process_start_token(pid) in (token, None)


def check_key(kind: str, key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise UsageError(
            f"invalid {kind} name {str(key)[:80]!r}",
            hint=f"{kind} names are non-empty strings of at most {MAX_KEY_LENGTH} characters",
        )
    if any(ord(c) < 32 for c in key) or not is_safe(key):
        raise UsageError(
            f"invalid {kind} name {key[:80]!r}: control characters",
            hint="use letters, digits and punctuation",
        )
    return key


def check_name(name: str | None) -> str | None:
    """A run name: the rules of a key (non-empty, bounded, no control characters)."""
    return None if name is None else check_key("run", name)


def value_text(value: object) -> tuple[str, float | None]:
    """How a param or tag value is stored: its text, and its number when it is one."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        text = str(value)
    if len(text) > MAX_VALUE_LENGTH:
        raise UsageError(
            f"value too long ({len(text)} characters)",
            hint=f"params and tags hold at most {MAX_VALUE_LENGTH} characters; log a file instead",
        )
    if not is_safe(text):
        raise UsageError(
            f"invalid value {text[:80]!r}: control characters",
            hint="params and tags are text without terminal control or bidi characters",
        )
    num: float | None = None
    if not isinstance(value, bool):
        try:
            num = float(text)
        except ValueError:
            num = None
        if num is not None and not math.isfinite(num):
            num = None
    return text, num


@dataclass(frozen=True)
class NewRun:
    """What a run is started with (``repositories.runs.create_run``)."""

    name: str | None
    command: Sequence[str]
    cwd: str
    host: str
    user: str
    pid: int
    seed: int | None = None
    env_digest: str | None = None
    code: Mapping[str, Any] | None = None
    capture: Mapping[str, Any] | None = None
    started: float | None = None  # default: now
    run_id: str | None = None  # default: a new id from ``started``


@dataclass(frozen=True)
class RunFile:
    role: str  # input | output | artifact | side-effect
    path: str  # relative to the project root when inside it, else absolute
    digest: str | None  # None: gone before it could be hashed
    size: int | None
    source: str  # audit | hook | scan | declared | kitfile | api
    stored: bool = False


@dataclass(frozen=True)
class MetricSummary:
    key: str
    last: float
    step: int
    at: float
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class RunRecord:
    """Everything recorded about one run (series excluded: see ``metric_series``)."""

    id: str
    name: str | None
    status: str
    command: tuple[str, ...]
    cwd: str
    started: float
    ended: float | None
    exit_code: int | None
    reason: str | None
    host: str
    user: str
    pid: int
    seed: int | None
    env_digest: str | None
    code: Mapping[str, Any]
    log_digest: str | None
    capture: Mapping[str, Any]
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, MetricSummary] = field(default_factory=dict)
    files: tuple[RunFile, ...] = ()

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def files_with_role(self, role: str) -> list[RunFile]:
        return [f for f in self.files if f.role == role]

    def to_json(self) -> dict[str, Any]:
        def number(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "command": list(self.command),
            "cwd": self.cwd,
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration,
            "exit_code": self.exit_code,
            "host": self.host,
            "user": self.user,
            "pid": self.pid,
            "seed": self.seed,
            "env_digest": self.env_digest,
            "log_digest": self.log_digest,
            "code": dict(self.code),
            "capture": dict(self.capture),
            "params": dict(self.params),
            "tags": dict(self.tags),
            "metrics": {
                k: {
                    "last": number(m.last),
                    "step": m.step,
                    "min": number(m.min),
                    "max": number(m.max),
                    "count": m.count,
                }
                for k, m in self.metrics.items()
            },
            "files": [asdict(f) for f in self.files],
        }
