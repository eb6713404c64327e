"""What a run record is: its values (``Run``, ``RunFile``, ``MetricSummary``) and the rules
for ids, names, keys and values. Stored and read by ``repositories/runs.py``."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from tether.errors import UsageError
from tether.runs.code import NO_CODE, CodeState
from tether.safetext import is_safe

if TYPE_CHECKING:
    pass

RunStatus = Literal["running", "finished", "failed", "killed"]
STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
FileRole = Literal["input", "output", "artifact", "side-effect"]
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


RUN_ID = re.compile(r"[0-9a-z]{26}")


def check_run_id(run_id: str) -> str:
    """A run id as ``new_run_id`` makes them (what arrives from elsewhere is checked)."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise UsageError(
            f"{str(run_id)[:40]!r} is not a run id", hint="run ids are 26 characters, a-z0-9"
        )
    return run_id


def check_name(name: str | None) -> str | None:
    """A run name: the rules of a key (non-empty, bounded, no control characters)."""
    return None if name is None else check_key("run", name)


MAX_ARTIFACT_PATH = 1024


def artifact_path(path: str) -> str:
    """A run artifact's name: a relative path that cannot climb out of the run's
    artifacts (no ``..``, no absolute path, no backslash or NUL); "" for the root."""
    from pathlib import PurePosixPath

    pure = PurePosixPath(path)
    if (
        len(path) > MAX_ARTIFACT_PATH
        or "\\" in path
        or "\0" in path
        or pure.is_absolute()
        or any(p in ("..", ".") for p in pure.parts)
    ):
        raise UsageError(
            f"invalid artifact path {path[:120]!r}",
            hint="name artifacts with relative paths such as plots/roc.png",
        )
    return "/".join(pure.parts)


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
class SeedCall:
    """A seeding call the run made (``random.seed``, ``torch.manual_seed``, …)."""

    call: str
    seed: str


@dataclass(frozen=True)
class RunCapture:
    """What tether saw while the run ran, read through typed properties; the JSON
    document (``runs.capture``) is kept whole, so keys a newer tether adds survive."""

    data: Mapping[str, Any] = field(default_factory=dict)

    def _list(self, key: str) -> tuple[Any, ...]:
        value = self.data.get(key)
        return tuple(value) if isinstance(value, list | tuple) else ()

    def _mapping(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key)
        return value if isinstance(value, Mapping) else {}

    @property
    def seeding(self) -> tuple[SeedCall, ...]:
        return tuple(
            SeedCall(str(s.get("call", "")), str(s.get("seed", "")))
            for s in self._list("seeding")
            if isinstance(s, Mapping)
        )

    @property
    def autolog(self) -> bool | None:
        """``tether run --autolog`` (True) or ``--no-autolog`` (False); None: neither."""
        value = self.data.get("autolog")
        return value if isinstance(value, bool) else None

    @property
    def metric_files(self) -> tuple[str, ...]:
        """The metrics files ``tether run --metrics`` read after the run."""
        return tuple(str(p) for p in self._list("metric_files"))

    @property
    def seed_everything(self) -> Mapping[str, Any] | None:
        """``tether.seed_everything``'s report, when the run called it."""
        return self._mapping("seed_everything") or None

    @property
    def seeded(self) -> bool:
        return bool(self.seeding or self.seed_everything)

    @property
    def audit_active(self) -> bool:
        """A Python process of the run reported the files it opened."""
        return bool(self._mapping("audit").get("active"))

    @property
    def imports(self) -> tuple[str, ...] | None:
        """Top-level modules the run imported (None: not recorded, as for a run that
        was not watched)."""
        value = self.data.get("imports")
        return None if value is None else tuple(str(m) for m in value)

    @property
    def imported_distributions(self) -> tuple[str, ...] | None:
        """What ``--packages imported`` installs (None: not recorded)."""
        value = self.data.get("imported_distributions")
        return None if value is None else tuple(str(d) for d in value)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(str(u) for u in self._list("urls"))

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(str(w) for w in self._list("warnings"))

    @property
    def withheld_args(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(w for w in self._list("withheld_args") if isinstance(w, Mapping))

    @property
    def source_date_epoch(self) -> str | None:
        value = self.data.get("source_date_epoch")
        return None if value is None else str(value)

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunCapture:
        return cls(dict(data))


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
    code: CodeState = NO_CODE
    capture: Mapping[str, Any] | None = None
    started: float | None = None  # default: now
    run_id: str | None = None  # default: a new id from ``started``


@dataclass(frozen=True)
class RunFile:
    role: FileRole
    path: str  # relative to the project root when inside it, else absolute
    digest: str | None  # None: gone before it could be hashed
    size: int | None
    source: str  # how it was seen: audit | hook | scan | declared | kitfile | api
    stored: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunFile:
        return cls(
            data["role"],
            str(data["path"]),
            data.get("digest"),
            data.get("size"),
            str(data.get("source", "")),
            bool(data.get("stored", False)),
        )


@dataclass(frozen=True)
class MetricSummary:
    key: str
    last: float  # NaN: not a number was logged last
    step: int
    at: float
    min: float
    max: float
    count: int

    def to_json(self) -> dict[str, Any]:
        # x != x is NaN: inline, since a listing of 10,000 runs calls this 100,000 times.
        last, low, high = self.last, self.min, self.max
        return {
            "last": None if last != last else last,
            "step": self.step,
            "at": self.at,
            "min": None if low != low else low,
            "max": None if high != high else high,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, key: str, data: Mapping[str, Any]) -> MetricSummary:
        def nan(value: Any) -> float:
            return math.nan if value is None else float(value)

        return cls(
            key,
            nan(data.get("last")),
            int(data["step"]),
            float(data.get("at", 0.0)),
            nan(data.get("min")),
            nan(data.get("max")),
            int(data["count"]),
        )


@dataclass(frozen=True)
class RunRecord:
    """Everything recorded about one run (series excluded: see ``metric_series``)."""

    id: str
    name: str | None
    status: RunStatus
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
    code: CodeState
    log_digest: str | None
    capture: RunCapture
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, MetricSummary] = field(default_factory=dict)
    files: tuple[RunFile, ...] = ()

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def start(self, *, env_digest: str | None = None) -> NewRun:
        """What the run was started with: enough to record it again elsewhere (a sync
        or a stream); ``env_digest`` only when that side holds the environment."""
        return NewRun(
            name=self.name,
            command=self.command,
            cwd=self.cwd,
            host=self.host,
            user=self.user,
            pid=self.pid,
            seed=self.seed,
            env_digest=env_digest,
            code=self.code,
            capture=self.capture.to_json(),
            started=self.started,
            run_id=self.id,
        )

    def files_with_role(self, role: str) -> list[RunFile]:
        return [f for f in self.files if f.role == role]

    def to_json(self, *, summary: bool = False) -> dict[str, Any]:
        """The whole record; ``summary``: as a listing shows it, without files, capture,
        code and pid."""
        out: dict[str, Any] = {
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
            "seed": self.seed,
            "env_digest": self.env_digest,
            "log_digest": self.log_digest,
            "params": dict(self.params),
            "tags": dict(self.tags),
            "metrics": {k: m.to_json() for k, m in self.metrics.items()},
        }
        if not summary:
            out["pid"] = self.pid
            out["code"] = self.code.to_json()
            out["capture"] = self.capture.to_json()
            out["files"] = [asdict(f) for f in self.files]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """The record ``to_json`` wrote (``duration`` is derived, so ignored)."""
        return cls(
            id=str(data["id"]),
            name=data.get("name"),
            status=data["status"],
            command=tuple(data.get("command", ())),
            cwd=str(data.get("cwd", ".")),
            started=float(data["started"]),
            ended=data.get("ended"),
            exit_code=data.get("exit_code"),
            reason=data.get("reason"),
            host=str(data.get("host", "")),
            user=str(data.get("user", "")),
            pid=int(data.get("pid", 0)),
            seed=data.get("seed"),
            env_digest=data.get("env_digest"),
            code=CodeState.from_json(data.get("code") or {}),
            log_digest=data.get("log_digest"),
            capture=RunCapture.from_json(data.get("capture") or {}),
            params=dict(data.get("params") or {}),
            tags=dict(data.get("tags") or {}),
            metrics={
                k: MetricSummary.from_json(k, m) for k, m in (data.get("metrics") or {}).items()
            },
            files=tuple(RunFile.from_json(f) for f in data.get("files") or ()),
        )
