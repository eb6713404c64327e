"""The experiments repository: every SQL statement over ``experiments`` and
``experiment_tags`` (MLflow's way of grouping runs; tables in db/schema_*.py).

Experiment 0, "Default", always exists (made on first use): MLflow clients start there,
and tether's own runs, which carry no experiment tag, belong to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.db.connection import Connection, Database, Instant

DEFAULT_ID = 0
DEFAULT_NAME = "Default"
Lifecycle = Literal["active", "deleted"]


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    artifact_location: str | None
    lifecycle: Lifecycle
    created: float
    updated: float
    tags: Mapping[str, str] = field(default_factory=dict)


def _tags(conn: Connection, ids: list[int]) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = {i: {} for i in ids}
    for row in conn.execute("SELECT experiment_id, key, value FROM experiment_tags").fetchall():
        if row["experiment_id"] in found:
            found[row["experiment_id"]][row["key"]] = row["value"]
    return found


def _load(conn: Connection, where: str, params: tuple[Any, ...]) -> list[Experiment]:
    rows = conn.execute(
        "SELECT id, name, artifact_location, lifecycle, created, updated FROM experiments"
        f" WHERE {where} ORDER BY id",
        params,
    ).fetchall()
    tags = _tags(conn, [int(r["id"]) for r in rows])
    return [
        Experiment(
            int(r["id"]),
            r["name"],
            r["artifact_location"],
            r["lifecycle"],
            float(r["created"]),
            float(r["updated"]),
            tags[int(r["id"])],
        )
        for r in rows
    ]


def ensure_default(db: Database, *, at: float) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO experiments (id, name, artifact_location, lifecycle, created, updated)"
            " VALUES (?, ?, NULL, 'active', ?, ?) ON CONFLICT DO NOTHING",
            (DEFAULT_ID, DEFAULT_NAME, Instant(at), Instant(at)),
        )


def create(
    db: Database, name: str, artifact_location: str | None, tags: Mapping[str, str], *, at: float
) -> int | None:
    """The new experiment's id; None when the name is taken."""
    with db.atomic() as conn:
        if conn.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone():
            return None
        row = conn.execute("SELECT coalesce(max(id), 0) + 1 AS n FROM experiments").fetchone()
        new = int(row["n"])
        conn.execute(
            "INSERT INTO experiments (id, name, artifact_location, lifecycle, created, updated)"
            " VALUES (?, ?, ?, 'active', ?, ?)",
            (new, name, artifact_location, Instant(at), Instant(at)),
        )
        conn.executemany(
            "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?)",
            [(new, k, v) for k, v in tags.items()],
        )
    return new


def by_id(db: Database, experiment_id: int) -> Experiment | None:
    with db.snapshot() as conn:
        found = _load(conn, "id = ?", (experiment_id,))
    return found[0] if found else None


def by_name(db: Database, name: str) -> Experiment | None:
    with db.snapshot() as conn:
        found = _load(conn, "name = ?", (name,))
    return found[0] if found else None


def listed(db: Database, lifecycles: tuple[Lifecycle, ...]) -> list[Experiment]:
    marks = ", ".join("?" * len(lifecycles))
    with db.snapshot() as conn:
        return _load(conn, f"lifecycle IN ({marks})", tuple(lifecycles))


def set_lifecycle(db: Database, experiment_id: int, lifecycle: Lifecycle, *, at: float) -> bool:
    with db.atomic() as conn:
        cur = conn.execute(
            "UPDATE experiments SET lifecycle = ?, updated = ? WHERE id = ?",
            (lifecycle, Instant(at), experiment_id),
        )
        return cur.rowcount > 0


def rename(db: Database, experiment_id: int, name: str, *, at: float) -> bool:
    """False when the name is taken by another experiment."""
    with db.atomic() as conn:
        taken = conn.execute(
            "SELECT 1 FROM experiments WHERE name = ? AND id != ?", (name, experiment_id)
        ).fetchone()
        if taken:
            return False
        conn.execute(
            "UPDATE experiments SET name = ?, updated = ? WHERE id = ?",
            (name, Instant(at), experiment_id),
        )
        return True


def set_tag(db: Database, experiment_id: int, key: str, value: str) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
            (experiment_id, key, value),
        )
