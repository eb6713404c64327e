"""The lineage read model: the edges ``lineage/graph.py`` walks, each one indexed read.

Edges come from ``run_files`` (by digest and by run), ``kit_runs`` (both ways),
``run_links`` ('reproduces', both ways), ``model_versions`` (by digest) and
``model_aliases`` (by version). Every lookup takes many keys at once (one
array parameter on PostgreSQL, IN lists of 500 on SQLite), so a walk over thousands of
runs costs a few queries per step, not one per node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tether.db.connection import Database
from tether.runs.code import CodeState

FileRole = Literal["input", "output"]


@dataclass(frozen=True)
class RunNode:
    id: str
    name: str | None
    status: str
    started: float
    seed: int | None
    env_digest: str | None
    code: CodeState
    command: tuple[str, ...]
    params: dict[str, str]


def _chunks(db: Database, sql: str, keys: Sequence[str]) -> Iterator[list[Any]]:
    """``sql`` ends with "COLUMN IN": run it for every key, a few statements at most."""
    head, column = sql.removesuffix(" IN").rsplit(" ", 1)
    for where, params in db.dialect.any_of(column, list(dict.fromkeys(keys))):
        yield db.query(f"{head} {where}", params)


def digests_recorded_at(db: Database, path: str, under_pattern: str) -> list[str]:
    """Every digest runs recorded at ``path`` or under it (``under_pattern``: a LIKE
    pattern with backslash escapes)."""
    rows = db.query(
        "SELECT DISTINCT digest FROM run_files WHERE (path = ? OR path LIKE ? ESCAPE '\\')"
        " AND digest IS NOT NULL",
        (path, under_pattern),
    )
    return [r["digest"] for r in rows]


def kit_runs_by_kit(db: Database, kits: Sequence[str]) -> list[tuple[str, str]]:
    """(kit digest, run id) of the runs that made these ModelKits."""
    sql = "SELECT kit_digest, run_id FROM kit_runs WHERE kit_digest IN"
    return [(r["kit_digest"], r["run_id"]) for rows in _chunks(db, sql, kits) for r in rows]


def kit_runs_by_run(db: Database, runs: Sequence[str]) -> list[tuple[str, str]]:
    """(kit digest, run id) of the ModelKits these runs made."""
    sql = "SELECT kit_digest, run_id FROM kit_runs WHERE run_id IN"
    return [(r["kit_digest"], r["run_id"]) for rows in _chunks(db, sql, runs) for r in rows]


def files_of_runs(db: Database, role: FileRole, runs: Sequence[str]) -> list[tuple[str, str, str]]:
    """(run id, path, digest) of the inputs or outputs of these runs (hashed ones)."""
    sql = (
        f"SELECT run_id, path, digest FROM run_files WHERE role = '{role}'"
        " AND digest IS NOT NULL AND run_id IN"
    )
    return [(r["run_id"], r["path"], r["digest"]) for rows in _chunks(db, sql, runs) for r in rows]


def runs_with_files(db: Database, role: FileRole, digests: Sequence[str]) -> list[tuple[str, str]]:
    """(run id, digest) of the runs that read (input) or wrote (output) these bytes."""
    sql = f"SELECT run_id, digest FROM run_files WHERE role = '{role}' AND digest IN"
    return [(r["run_id"], r["digest"]) for rows in _chunks(db, sql, digests) for r in rows]


def reproductions(db: Database, runs: Sequence[str], *, of: bool) -> list[tuple[str, str]]:
    """(reproduction, original) pairs: with ``of``, the reproductions of these runs;
    without, the runs these reproduce."""
    column = "target_id" if of else "run_id"
    sql = f"SELECT run_id, target_id FROM run_links WHERE kind = 'reproduces' AND {column} IN"
    return [(r["run_id"], r["target_id"]) for rows in _chunks(db, sql, runs) for r in rows]


def versions_of_kits(db: Database, kits: Sequence[str]) -> list[tuple[str, int, str, float | None]]:
    """(model, version, digest, archived) of the versions these ModelKits are."""
    sql = "SELECT model, version, digest, archived FROM model_versions WHERE digest IN"
    return [
        (r["model"], int(r["version"]), r["digest"], r["archived"])
        for rows in _chunks(db, sql, kits)
        for r in rows
    ]


def aliases_of(db: Database, model: str, version: int) -> list[str]:
    rows = db.query(
        "SELECT alias FROM model_aliases WHERE model = ? AND version = ? ORDER BY alias",
        (model, version),
    )
    return [r["alias"] for r in rows]


def version_digest(db: Database, model: str, version: int) -> str | None:
    rows = db.query(
        "SELECT digest FROM model_versions WHERE model = ? AND version = ?", (model, version)
    )
    return str(rows[0]["digest"]) if rows else None


def run_nodes(db: Database, ids: Sequence[str]) -> dict[str, RunNode]:
    """What a lineage node shows of each run (missing ids: deleted runs)."""
    found: dict[str, Any] = {}
    sql = "SELECT id, name, status, started, seed, env_digest, code, command FROM runs WHERE id IN"
    for rows in _chunks(db, sql, ids):
        found.update({r["id"]: r for r in rows})
    params: dict[str, dict[str, str]] = {}
    for rows in _chunks(db, "SELECT run_id, key, value FROM run_params WHERE run_id IN", ids):
        for p in rows:
            params.setdefault(p["run_id"], {})[p["key"]] = p["value"]
    return {
        run_id: RunNode(
            run_id,
            r["name"],
            r["status"],
            r["started"],
            r["seed"],
            r["env_digest"],
            CodeState.from_json(json.loads(r["code"] or "{}")),
            tuple(json.loads(r["command"])),
            params.get(run_id, {}),
        )
        for run_id, r in found.items()
    }


def edge_counts(db: Database) -> dict[str, int]:
    """For each run with any, how many lineage edges start at it: runs it links to
    ('reproduces') and ModelKits linked to it. What sync compares, with the rest of a
    run's fingerprint, to see a kit packed after the run was sent."""
    counts: dict[str, int] = {}
    for sql in (
        "SELECT run_id, count(*) FROM run_links GROUP BY run_id",
        "SELECT run_id, count(*) FROM kit_runs GROUP BY run_id",
    ):
        for run_id, n in db.tuples(sql):
            counts[run_id] = counts.get(run_id, 0) + int(n)
    return counts
