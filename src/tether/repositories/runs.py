"""The runs repository: every SQL statement over runs and what hangs off them.

Tables (``db/schema_*.py``)::

    runs                one row per run: command, status, times, host/user/pid, seed,
                        env_digest → environments, code (JSON), log_digest, capture (JSON)
    run_params          (run_id, key) → value, write-once
    run_tags            (run_id, key) → value, last write wins
    run_metric_summary  (run_id, key) → last/min/max/count, what filters and lists read
                        (written with the series by ``repositories/metrics.py``)
    run_files           (run_id, role, path) → digest, size, source, stored
    run_blobs           blobs a run keeps alive; gc reads them through the blob_refs view
    run_links           edges between runs ('reproduces')
    environments        environment bodies by digest

A row that names a blob is written only after the blob is durable in the store. Other
domains ask here (outputs at paths, producers of a digest, blobs kept alive) rather
than read these tables.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.db.connection import Database, Instant, Params
from tether.errors import ParamConflict, RunNotFound
from tether.runs.code import NO_CODE, CodeState
from tether.runs.record import (
    HOST,
    ID_ALPHABET,
    STATUSES,
    MetricSummary,
    NewRun,
    RunCapture,
    RunFile,
    RunRecord,
    RunStatus,
    check_key,
    check_name,
    new_run_id,
    pid_alive,
    process_start_token,
    value_text,
)

if TYPE_CHECKING:
    from tether.envcapture.environment import Environment


def create_run(db: Database, new: NewRun) -> str:
    """Record a run as running; returns its id."""
    check_name(new.name)
    started = time.time() if new.started is None else new.started
    run_id = new.run_id or new_run_id(started)
    with db.atomic() as conn:
        conn.execute(
            'INSERT INTO runs (id, name, status, command, cwd, started, host, "user", pid,'
            " pid_started, seed, env_digest, code, capture)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                new.name,
                json.dumps(list(new.command)),
                new.cwd,
                Instant(started),
                new.host,
                new.user,
                new.pid,
                process_start_token(new.pid),
                new.seed,
                new.env_digest,
                json.dumps(new.code.to_json(), sort_keys=True),
                json.dumps(dict(new.capture or {}), sort_keys=True),
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
    status: RunStatus,
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


def delete_tags(db: Database, run_id: str, keys: Iterable[str]) -> None:
    with db.atomic() as conn:
        conn.executemany(
            "DELETE FROM run_tags WHERE run_id = ? AND key = ?", [(run_id, k) for k in keys]
        )


def rename_run(db: Database, run_id: str, name: str) -> None:
    check_name(name)
    with db.atomic() as conn:
        conn.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id))


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


def blobs_of(db: Database, run_id: str) -> list[tuple[str, str]]:
    """The (digest, purpose) blobs this run keeps alive."""
    return [
        (r["digest"], r["purpose"])
        for r in db.query(
            "SELECT digest, purpose FROM run_blobs WHERE run_id = ? ORDER BY digest", (run_id,)
        )
    ]


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
    if len(low) >= 4 and all(c in ID_ALPHABET for c in low):
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


_RUN_COLUMNS = (
    "id", "name", "status", "command", "cwd", "started", "ended", "exit_code", "reason",
    "host", '"user"', "pid", "pid_started", "seed", "env_digest", "code", "log_digest", "capture",
)  # fmt: skip

VANISHED = "its process vanished without reporting (SIGKILL or crash)"


def _row_to_run(row: Any, *, full: bool = True, **extra: Any) -> RunRecord:
    status, reason = row["status"], row["reason"]
    if (
        status == "running"
        and row["host"] == HOST
        and not pid_alive(row["pid"], row["pid_started"])
    ):
        # Read as what it is without writing on a read path; reap_stale records it.
        status, reason = "killed", VANISHED
    return RunRecord(
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
        code=CodeState.from_json(json.loads(row["code"] or "{}")) if full else NO_CODE,
        log_digest=row["log_digest"],
        capture=RunCapture(json.loads(row["capture"] or "{}") if full else {}),
        **extra,
    )


AGGREGATE_FROM = 5_000


def load_runs(db: Database, ids: Sequence[str], *, full: bool = True) -> list[RunRecord]:
    """Load runs with params, tags and metric summaries, in the order given; ``full``
    adds files, code and capture (what listings do not show)."""
    out: dict[str, dict[str, Any]] = {}
    rows_by_id: dict[str, Any] = {}
    # A listing leaves out the JSON documents (code, capture): often most of the bytes.
    columns = "*" if full else ", ".join(c for c in _RUN_COLUMNS if c not in ("code", "capture"))
    import orjson  # parses the engine's per-run JSON objects several times faster

    many = len(ids) >= AGGREGATE_FROM
    pieces = _selection(db, ids, many)
    for where, params in pieces("id"):
        for row in db.query(f"SELECT {columns} FROM runs WHERE {where}", params):
            rows_by_id[row["id"]] = row
            out[row["id"]] = {"params": {}, "tags": {}, "metrics": {}, "files": []}
    # Many runs: params (tags) come as one JSON object per run built by the engine, so
    # 10,000 runs with 20 params read 10,000 rows, not 200,000. A few thousand read
    # faster row by row (aggregating costs more than it saves).
    for where, params in pieces("run_id"):
        for table, field in (("run_params", "params"), ("run_tags", "tags")):
            if many:
                doc = db.dialect.object_agg("key", "value")
                for run_id, text in db.tuples(
                    f"SELECT run_id, {doc} FROM {table} WHERE {where} GROUP BY run_id", params
                ):
                    if run_id in out:
                        out[run_id][field] = dict(sorted(orjson.loads(text).items()))
                continue
            for run_id, key, value in db.tuples(
                f"SELECT run_id, key, value FROM {table} WHERE {where} ORDER BY run_id, key",
                params,
            ):
                out[run_id][field][key] = value
        nan = math.nan
        for run_id, key, last, step, at, low, high, count in db.tuples(
            "SELECT run_id, key, last, last_step, last_at, min, max, count"
            f" FROM run_metric_summary WHERE {where}",
            params,
        ):
            if run_id in out:
                out[run_id]["metrics"][key] = MetricSummary(
                    key,
                    nan if last is None else last,
                    step,
                    at,
                    nan if low is None else low,
                    nan if high is None else high,
                    count,
                )
        if full:
            for run_id, role, path, digest, size, source, stored in db.tuples(
                "SELECT run_id, role, path, digest, size, source, stored"
                f" FROM run_files WHERE {where} ORDER BY role, path",
                params,
            ):
                if run_id in out:
                    file = RunFile(role, path, digest, size, source, bool(stored))
                    out[run_id]["files"].append(file)
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


def _selection(
    db: Database, ids: Sequence[str], many: bool
) -> Callable[[str], Iterable[tuple[str, Params]]]:
    """How to read the rows of ``ids``: by IN lists, or, when they are most of the runs,
    by whole tables (rows of other runs skipped), which reads 10,000 runs several times
    faster than twenty lists of 500 ids."""
    if many:
        total = db.query("SELECT count(*) AS n FROM runs")[0]["n"]
        if 2 * len(ids) >= total:
            return lambda column: [("1 = 1", ())]
    listed = list(ids)
    return lambda column: list(db.dialect.any_of(column, listed))


def output_paths(db: Database) -> set[str]:
    """Project-relative paths any recorded run wrote: results, not source."""
    rows = db.query("SELECT DISTINCT path FROM run_files WHERE role = 'output'")
    return {str(r["path"]) for r in rows if not str(r["path"]).startswith("/")}


def load_run(
    db: Database, ref: str, *, on_ambiguous: Callable[[str], None] | None = None
) -> RunRecord:
    runs = load_runs(db, [resolve(db, ref, on_ambiguous=on_ambiguous)])
    if not runs:  # deleted between resolve and load
        raise RunNotFound(f"run {ref!r} is gone", hint="see 'tether runs list'")
    return runs[0]


def distinct_keys(db: Database, table: str) -> list[str]:
    """Every key of ``run_params``, ``run_tags`` or ``run_metric_summary``, sorted.

    A loose index scan (one index probe per distinct key), so a table of 200,000 rows
    with 20 keys costs 20 probes rather than a scan."""
    if table not in ("run_params", "run_tags", "run_metric_summary"):
        raise ValueError(table)
    sql = (
        f"WITH RECURSIVE k(key) AS (SELECT min(key) FROM {table} UNION ALL"
        f" SELECT (SELECT min(key) FROM {table} WHERE key > k.key) FROM k"
        f" WHERE k.key IS NOT NULL) SELECT key FROM k WHERE key IS NOT NULL"
    )
    return [row["key"] for row in db.query(sql)]


def reap_stale(db: Database, host: str) -> list[str]:
    """Mark runs of this host whose process is gone (SIGKILL, power loss) as killed,
    so no run stays "running" forever. Returns the ids changed."""
    stale = [
        row["id"]
        for row in db.query(
            "SELECT id, pid, pid_started FROM runs WHERE status = 'running' AND host = ?",
            (host,),
        )
        if not pid_alive(row["pid"], row["pid_started"])
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


def exists(db: Database, run_id: str) -> bool:
    return bool(db.query("SELECT 1 FROM runs WHERE id = ?", (run_id,)))


def name_if_unnamed(db: Database, run_id: str, name: str) -> None:
    with db.atomic() as conn:
        conn.execute("UPDATE runs SET name = ? WHERE id = ? AND name IS NULL", (name, run_id))


def kept_blobs(db: Database) -> set[str]:
    """Every blob some run keeps alive (logs, diffs, snapshots, stored files)."""
    return {str(r["digest"]) for r in db.query("SELECT DISTINCT digest FROM blob_refs")}


@dataclass(frozen=True)
class OutputSighting:
    run_id: str
    path: str
    digest: str | None
    started: float


def finished_outputs_at(db: Database, paths: Sequence[str]) -> list[OutputSighting]:
    """Outputs that finished runs wrote at any of ``paths`` (project-relative)."""
    out: list[OutputSighting] = []
    for where, params in db.dialect.any_of("f.path", list(paths)):
        rows = db.query(
            "SELECT f.run_id, f.path, f.digest, r.started FROM run_files f JOIN runs r"
            f" ON r.id = f.run_id WHERE f.role = 'output' AND {where}"
            " AND r.status = 'finished'",
            params,
        )
        out += [OutputSighting(r["run_id"], r["path"], r["digest"], r["started"]) for r in rows]
    return out


def producer(db: Database, digest: str, *, before: RunRecord) -> str | None:
    """The latest run started before ``before`` (and not it) that wrote these bytes."""
    rows = db.query(
        "SELECT f.run_id FROM run_files f JOIN runs r ON r.id = f.run_id"
        " WHERE f.digest = ? AND f.role = 'output' AND f.run_id != ? AND r.started <= ?"
        " ORDER BY r.started DESC LIMIT 1",
        (digest, before.id, Instant(before.started)),
    )
    return str(rows[0]["run_id"]) if rows else None
