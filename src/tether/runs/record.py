"""Run records in the project database: create, log to, finish, resolve, load, delete.

Tables (migration ``0003_runs``)::

    runs                one row per run: command, status, times, host/user/pid, seed,
                        env_digest → environments, code (JSON), log_digest, capture (JSON)
    run_params          (run_id, key) → value, write-once
    run_tags            (run_id, key) → value, last write wins
    run_metrics         the series: (run_id, key, step, at, value), batch-inserted
    run_metric_summary  (run_id, key) → last/min/max/count, what filters and lists read
    run_files           (run_id, role, path) → digest, size, source, stored
    run_blobs           blobs a run keeps alive; gc reads them through the blob_refs view

A row that names a blob is written only after the blob is durable in the store.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tether.db.connection import Database, Instant
from tether.errors import ParamConflict, RunNotFound, UsageError
from tether.safetext import is_safe

if TYPE_CHECKING:
    from tether.envcapture.environment import Environment

STATUSES = ("running", "finished", "failed", "killed")
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
MAX_KEY_LENGTH = 250
_HOST = socket.gethostname()
MAX_VALUE_LENGTH = 6000


def new_run_id(now: float | None = None) -> str:
    """A 26-character, time-sortable id (ULID layout, lowercase Crockford base32):
    48 bits of milliseconds then 80 random bits, so ids sort by start time."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
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


def _pid_alive(pid: int, token: str | None) -> bool:
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
class Run:
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


def create_run(
    db: Database,
    *,
    name: str | None,
    command: Sequence[str],
    cwd: str,
    host: str,
    user: str,
    pid: int,
    seed: int | None = None,
    env_digest: str | None = None,
    code: Mapping[str, Any] | None = None,
    capture: Mapping[str, Any] | None = None,
    started: float | None = None,
    run_id: str | None = None,
) -> str:
    check_name(name)
    started = time.time() if started is None else started
    run_id = run_id or new_run_id(started)
    with db.atomic() as conn:
        conn.execute(
            'INSERT INTO runs (id, name, status, command, cwd, started, host, "user", pid,'
            " pid_started, seed, env_digest, code, capture)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                name,
                json.dumps(list(command)),
                cwd,
                Instant(started),
                host,
                user,
                pid,
                process_start_token(pid),
                seed,
                env_digest,
                json.dumps(dict(code or {}), sort_keys=True),
                json.dumps(dict(capture or {}), sort_keys=True),
            ),
        )
    return run_id


def set_env_and_log(
    db: Database, run_id: str, env_digest: str | None, log_digest: str | None
) -> None:
    """Attach what is known only after the command ended: its environment and log."""
    with db.atomic() as conn:
        conn.execute(
            "UPDATE runs SET env_digest = ?, log_digest = ? WHERE id = ?",
            (env_digest, log_digest, run_id),
        )


def merge_capture(db: Database, run_id: str, extra: Mapping[str, Any]) -> None:
    """Merge keys into the run's ``capture`` JSON (a read-modify-write in one transaction)."""
    with db.atomic() as conn:
        row = conn.execute("SELECT capture FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id}", hint="see 'tether runs list'")
        capture = json.loads(row["capture"] or "{}")
        capture.update(extra)
        conn.execute(
            "UPDATE runs SET capture = ? WHERE id = ?",
            (json.dumps(capture, sort_keys=True), run_id),
        )


def finish_run(
    db: Database,
    run_id: str,
    status: str,
    *,
    exit_code: int | None = None,
    reason: str | None = None,
    ended: float | None = None,
) -> None:
    if status not in STATUSES[1:]:
        raise ValueError(status)
    with db.atomic() as conn:
        conn.execute(
            "UPDATE runs SET status = ?, exit_code = ?, reason = ?, ended = ? WHERE id = ?",
            (status, exit_code, reason, Instant(time.time() if ended is None else ended), run_id),
        )


def log_params(db: Database, run_id: str, params: Mapping[str, object]) -> None:
    """Record parameters; re-logging the same value is a no-op, another value an error.
    The same number written another way (``50000`` from the command line, ``50000.0``
    from the script) is the same value."""
    rows = [(check_key("param", k), *value_text(v)) for k, v in params.items()]
    with db.atomic() as conn:
        for key, text, num in rows:
            old = conn.execute(
                "SELECT value, num FROM run_params WHERE run_id = ? AND key = ?", (run_id, key)
            ).fetchone()
            if old is None:
                conn.execute("INSERT INTO run_params VALUES (?, ?, ?, ?)", (run_id, key, text, num))
            elif old["value"] != text and (num is None or old["num"] != num):
                raise ParamConflict(
                    f"param {key!r} is already {old['value']!r} in run {run_id[:12]}; "
                    f"cannot change it to {text!r}",
                    hint="params are write-once per run; use a new run, or log a metric or tag",
                )


def set_tags(db: Database, run_id: str, tags: Mapping[str, object]) -> None:
    rows = [(run_id, check_key("tag", k), *value_text(v)) for k, v in tags.items()]
    with db.atomic() as conn:
        conn.executemany(
            "INSERT INTO run_tags VALUES (?, ?, ?, ?)"
            " ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, num = excluded.num",
            rows,
        )


_METRIC_COLUMNS = ("run_id", "key", "step", "at", "value")

# Summary upsert: keep the point with the highest step (ties: the later write) as "last".
_SUMMARY_UPSERT = """
INSERT INTO run_metric_summary AS s (run_id, key, last, last_step, last_at, min, max, count)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, key) DO UPDATE SET
    last = CASE WHEN excluded.last_step >= s.last_step THEN excluded.last ELSE s.last END,
    last_at = CASE WHEN excluded.last_step >= s.last_step THEN excluded.last_at ELSE s.last_at END,
    last_step = CASE WHEN excluded.last_step > s.last_step THEN excluded.last_step
                     ELSE s.last_step END,
    min = CASE WHEN s.min IS NULL OR excluded.min < s.min THEN excluded.min ELSE s.min END,
    max = CASE WHEN s.max IS NULL OR excluded.max > s.max THEN excluded.max ELSE s.max END,
    count = s.count + excluded.count
"""


def insert_metrics(
    db: Database, run_id: str, points: Sequence[tuple[str, int, float, float]]
) -> None:
    """Write a batch of (key, step, at, value) points and their summaries in one
    transaction. NaN is stored as NULL and left out of min/max."""
    if not points:
        return
    summary: dict[str, list[Any]] = {}
    rows = []
    for key, step, at, value in points:
        finite = value == value  # not NaN
        rows.append((run_id, key, step, Instant(at), value if finite else None))
        s = summary.get(key)
        if s is None:
            summary[key] = (
                [value, step, at, value, value, 1] if finite else [None, step, at, None, None, 1]
            )
            continue
        if step >= s[1]:
            s[0], s[1], s[2] = (value if finite else None), step, at
        if finite:
            s[3] = value if s[3] is None else min(s[3], value)
            s[4] = value if s[4] is None else max(s[4], value)
        s[5] += 1
    with db.atomic() as conn:
        conn.insert_many("run_metrics", _METRIC_COLUMNS, rows)
        conn.executemany(
            _SUMMARY_UPSERT,
            [
                (run_id, k, last, step, Instant(at), lo, hi, n)
                for k, (last, step, at, lo, hi, n) in summary.items()
            ],
        )


def add_files(db: Database, run_id: str, files: Iterable[RunFile]) -> None:
    rows = [(run_id, f.role, f.path, f.digest, f.size, f.source, int(f.stored)) for f in files]
    with db.atomic() as conn:
        conn.executemany(
            "INSERT INTO run_files VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, role, path) DO UPDATE SET digest = excluded.digest,"
            " size = excluded.size, source = excluded.source,"
            " stored = CASE WHEN excluded.stored > run_files.stored THEN excluded.stored"
            " ELSE run_files.stored END",
            rows,
        )
        conn.executemany(
            "INSERT INTO run_blobs VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(run_id, f.digest, f.role) for f in files if f.stored and f.digest],
        )


def link_runs(
    db: Database, run_id: str, kind: str, target_id: str, detail: Mapping[str, Any] | None = None
) -> None:
    """Record an edge ``run_id -kind-> target_id`` (e.g. 'reproduces'), replacing the
    detail of an existing one."""
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO run_links VALUES (?, ?, ?, ?) ON CONFLICT (run_id, kind, target_id)"
            " DO UPDATE SET detail = excluded.detail",
            (run_id, kind, target_id, json.dumps(dict(detail or {}), sort_keys=True)),
        )


def links(db: Database, run_id: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Edges from and to a run: (from, kind, to, detail)."""
    rows = db.query(
        "SELECT * FROM run_links WHERE run_id = ? OR target_id = ? ORDER BY run_id",
        (run_id, run_id),
    )
    return [(r["run_id"], r["kind"], r["target_id"], json.loads(r["detail"] or "{}")) for r in rows]


def add_blobs(db: Database, run_id: str, blobs: Iterable[tuple[str, str]]) -> None:
    """Keep (digest, purpose) blobs alive for this run."""
    with db.atomic() as conn:
        conn.executemany(
            "INSERT INTO run_blobs VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(run_id, d, p) for d, p in blobs],
        )


# -- reading -----------------------------------------------------------------------


def resolve(db: Database, ref: str, *, on_ambiguous: Callable[[str], None] | None = None) -> str:
    """A run id, a unique id prefix (4+ characters), a run name (its latest run),
    ``NAME~N`` (the Nth run of that name before the latest) or ``latest``.
    ``on_ambiguous`` hears which run a name shared by several runs was taken to mean."""
    ref = ref.strip()
    if not ref:
        raise RunNotFound("empty run reference", hint="give a run id, id prefix or name")
    if ref == "latest":
        rows = db.query("SELECT id FROM runs ORDER BY started DESC, id DESC LIMIT 1")
        if rows:
            return str(rows[0]["id"])
        raise RunNotFound("there are no runs yet", hint="record one with 'tether run -- CMD'")
    low = ref.lower()
    if len(low) >= 4 and all(c in _CROCKFORD for c in low):
        escaped = low.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = db.query("SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (escaped + "%",))
        if len(rows) == 1:
            return str(rows[0]["id"])
        if len(rows) > 1:
            raise RunNotFound(
                f"run id prefix {ref!r} is ambiguous",
                hint="give more characters of the id",
            )
    name, back = ref, 0
    m = _BACK.match(ref)
    if m and not db.query("SELECT 1 FROM runs WHERE name = ? LIMIT 1", (ref,)):
        name, back = m[1], int(m[2])
    rows = db.query("SELECT id FROM runs WHERE name = ? ORDER BY started DESC, id DESC", (name,))
    if back < len(rows):
        taken = str(rows[back]["id"])
        if len(rows) > 1 and on_ambiguous is not None and name == ref:
            on_ambiguous(
                f"{len(rows)} runs are named {name!r}; took the latest, {taken[:12]} "
                f"(the one before: {name}~1, or give an id prefix)"
            )
        return taken
    if rows:
        raise RunNotFound(
            f"{ref!r}: there are only {len(rows)} run(s) named {name!r}",
            hint=f"{name}~0 is the latest, {name}~{len(rows) - 1} the oldest",
        )
    raise RunNotFound(
        f"no run with id or name {ref[:80]!r}",
        hint="see 'tether runs list' for ids and names",
    )


_BACK = re.compile(r"^(.+)~(\d{1,6})$")


VANISHED = "its process vanished without reporting (SIGKILL or crash)"


def _row_to_run(row: Any, *, full: bool = True, **extra: Any) -> Run:
    status, reason = row["status"], row["reason"]
    if (
        status == "running"
        and row["host"] == _HOST
        and not _pid_alive(row["pid"], row["pid_started"])
    ):
        # Read as what it is without writing on a read path; reap_stale records it.
        status, reason = "killed", VANISHED
    return Run(
        id=row["id"],
        name=row["name"],
        status=status,
        command=tuple(json.loads(row["command"])),
        cwd=row["cwd"],
        started=row["started"],
        ended=row["ended"],
        exit_code=row["exit_code"],
        reason=reason,
        host=row["host"],
        user=row["user"],
        pid=row["pid"],
        seed=row["seed"],
        env_digest=row["env_digest"],
        code=json.loads(row["code"] or "{}") if full else {},
        log_digest=row["log_digest"],
        capture=json.loads(row["capture"] or "{}") if full else {},
        **extra,
    )


def load_runs(db: Database, ids: Sequence[str], *, full: bool = True) -> list[Run]:
    """Load runs with params, tags and metric summaries, in the order given; ``full``
    adds files, code and capture (what listings do not show)."""
    out: dict[str, dict[str, Any]] = {}
    rows_by_id: dict[str, Any] = {}
    # Chunks keep the IN list under SQLite's variable limit.
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        for row in db.query(f"SELECT * FROM runs WHERE id IN ({marks})", tuple(chunk)):
            rows_by_id[row["id"]] = row
            out[row["id"]] = {"params": {}, "tags": {}, "metrics": {}, "files": []}
        for row in db.query(
            f"SELECT run_id, key, value FROM run_params WHERE run_id IN ({marks})", tuple(chunk)
        ):
            out[row["run_id"]]["params"][row["key"]] = row["value"]
        for row in db.query(
            f"SELECT run_id, key, value FROM run_tags WHERE run_id IN ({marks})", tuple(chunk)
        ):
            out[row["run_id"]]["tags"][row["key"]] = row["value"]
        for row in db.query(
            f"SELECT * FROM run_metric_summary WHERE run_id IN ({marks})", tuple(chunk)
        ):
            out[row["run_id"]]["metrics"][row["key"]] = MetricSummary(
                row["key"],
                math.nan if row["last"] is None else row["last"],
                row["last_step"],
                row["last_at"],
                math.nan if row["min"] is None else row["min"],
                math.nan if row["max"] is None else row["max"],
                row["count"],
            )
        if full:
            for row in db.query(
                f"SELECT * FROM run_files WHERE run_id IN ({marks}) ORDER BY role, path",
                tuple(chunk),
            ):
                out[row["run_id"]]["files"].append(
                    RunFile(
                        row["role"],
                        row["path"],
                        row["digest"],
                        row["size"],
                        row["source"],
                        bool(row["stored"]),
                    )
                )
    runs = []
    for run_id in ids:
        if run_id not in rows_by_id:
            continue
        extra = out[run_id]
        runs.append(
            _row_to_run(
                rows_by_id[run_id],
                full=full,
                params=extra["params"],
                tags=extra["tags"],
                metrics=dict(sorted(extra["metrics"].items())),
                files=tuple(extra["files"]),
            )
        )
    return runs


def output_paths(db: Database) -> set[str]:
    """Project-relative paths any recorded run wrote: results, not source."""
    rows = db.query("SELECT DISTINCT path FROM run_files WHERE role = 'output'")
    return {str(r["path"]) for r in rows if not str(r["path"]).startswith("/")}


def load_run(db: Database, ref: str, *, on_ambiguous: Callable[[str], None] | None = None) -> Run:
    runs = load_runs(db, [resolve(db, ref, on_ambiguous=on_ambiguous)])
    if not runs:  # deleted between resolve and load
        raise RunNotFound(f"run {ref!r} is gone", hint="see 'tether runs list'")
    return runs[0]


def metric_series(
    db: Database, run_id: str, key: str | None = None
) -> dict[str, list[tuple[int, float, float]]]:
    """Every point of a run's metrics (or of one): key → [(step, at, value)] by step."""
    sql = "SELECT key, step, at, value FROM run_metrics WHERE run_id = ?"
    params: tuple[object, ...] = (run_id,)
    if key is not None:
        sql += " AND key = ?"
        params += (key,)
    series: dict[str, list[tuple[int, float, float]]] = {}
    for row in db.query(sql + f" ORDER BY key, step, {db.dialect.insertion_order}", params):
        value = math.nan if row["value"] is None else row["value"]
        series.setdefault(row["key"], []).append((row["step"], row["at"], value))
    return series


def reap_stale(db: Database, host: str) -> list[str]:
    """Mark runs of this host whose process is gone (SIGKILL, power loss) as killed,
    so no run stays "running" forever. Returns the ids changed."""
    stale = [
        row["id"]
        for row in db.query(
            "SELECT id, pid, pid_started FROM runs WHERE status = 'running' AND host = ?",
            (host,),
        )
        if not _pid_alive(row["pid"], row["pid_started"])
    ]
    if stale:
        with db.atomic() as conn:
            conn.executemany(
                "UPDATE runs SET status = 'killed', reason = ?,"
                " ended = coalesce(ended, ?) WHERE id = ? AND status = 'running'",
                [(VANISHED, Instant(time.time()), i) for i in stale],
            )
    return stale


def delete_runs(db: Database, ids: Sequence[str]) -> int:
    """Delete runs and everything logged to them; their blobs go at the next gc."""
    with db.atomic() as conn:
        n = 0
        for run_id in ids:
            n += conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount
    return n


def save_environment(db: Database, digest: str, body: str) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO environments VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (digest, body, Instant(time.time())),
        )


def load_environment(db: Database, digest: str | None) -> Environment | None:
    """The environment recorded under ``digest`` (None when there is none)."""
    from tether.envcapture.environment import Environment

    if not digest:
        return None
    rows = db.query("SELECT body FROM environments WHERE digest = ?", (digest,))
    return Environment.from_json(rows[0]["body"]) if rows else None
