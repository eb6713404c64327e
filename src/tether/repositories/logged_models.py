"""The logged-models repository: every SQL statement over MLflow 3's logged models.

Tables (``db/schema_*.py``)::

    logged_models       id (m-<hex>) → experiment, name, source run, status, type, times
    logged_model_values (model, kind tag|param, key) → value
    logged_model_files  (model, path) → digest, size: the model's files, stored by
                        digest in the content store (``blob_refs`` keeps them from gc)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tether.db.connection import Connection, Database, Instant

Status = Literal["pending", "ready", "failed"]
ValueKind = Literal["tag", "param"]
# Fields a search may test, as MLflow's filter names them → column.
SEARCHABLE = {"name": "name", "source_run_id": "run_id", "status": "status",
              "model_type": "model_type", "model_id": "id"}  # fmt: skip


@dataclass(frozen=True)
class LoggedModel:
    id: str
    experiment_id: int
    name: str
    run_id: str | None
    status: Status
    model_type: str | None
    created: float
    updated: float
    user: str
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFile:
    path: str
    digest: str
    size: int


def create(db: Database, model: LoggedModel) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO logged_models (id, experiment_id, name, run_id, status, model_type,"
            ' created, updated, "user") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (model.id, model.experiment_id, model.name, model.run_id, model.status,
             model.model_type, Instant(model.created), Instant(model.updated), model.user),
        )  # fmt: skip
        _put_values(conn, model.id, "tag", model.tags)
        _put_values(conn, model.id, "param", model.params)


def _put_values(
    conn: Connection, model_id: str, kind: ValueKind, values: Mapping[str, str]
) -> None:
    conn.executemany(
        "INSERT INTO logged_model_values (model_id, kind, key, value) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (model_id, kind, key) DO UPDATE SET value = excluded.value",
        [(model_id, kind, k, v) for k, v in values.items()],
    )


def _load(
    conn: Connection, where: str, params: Sequence[object], page: str = ""
) -> list[LoggedModel]:
    rows = conn.execute(
        "SELECT id, experiment_id, name, run_id, status, model_type, created, updated,"
        f' "user" FROM logged_models WHERE {where} ORDER BY created DESC, id{page}',
        params,
    ).fetchall()
    values: dict[str, dict[ValueKind, dict[str, str]]] = {
        r["id"]: {"tag": {}, "param": {}} for r in rows
    }
    if values:
        marks = ", ".join("?" * len(values))
        for v in conn.execute(
            "SELECT model_id, kind, key, value FROM logged_model_values"
            f" WHERE model_id IN ({marks})",
            tuple(values),
        ):
            values[v["model_id"]][v["kind"]][v["key"]] = v["value"]
    return [
        LoggedModel(
            r["id"],
            int(r["experiment_id"]),
            r["name"],
            r["run_id"],
            r["status"],
            r["model_type"],
            float(r["created"]),
            float(r["updated"]),
            r["user"],
            values[r["id"]]["tag"],
            values[r["id"]]["param"],
        )
        for r in rows
    ]


def get(db: Database, model_id: str) -> LoggedModel | None:
    with db.snapshot() as conn:
        found = _load(conn, "id = ?", (model_id,))
    return found[0] if found else None


def search(
    db: Database,
    experiment_ids: Sequence[int],
    conditions: Sequence[tuple[str, bool, str]],
    *,
    limit: int,
    offset: int,
) -> list[LoggedModel]:
    """Models of the experiments matching every (field, equal?, value) condition, newest
    first; ``field`` is a key of ``SEARCHABLE``."""
    where = ["1 = 1"]
    params: list[object] = []
    if experiment_ids:
        where.append(f"experiment_id IN ({', '.join('?' * len(experiment_ids))})")
        params.extend(experiment_ids)
    for name, equal, value in conditions:
        column = SEARCHABLE[name]
        where.append(f"{column} = ?" if equal else f"({column} IS NULL OR {column} != ?)")
        params.append(value)
    with db.snapshot() as conn:
        return _load(conn, " AND ".join(where), [*params, limit, offset], " LIMIT ? OFFSET ?")


def set_status(db: Database, model_id: str, status: Status, *, at: float) -> None:
    with db.atomic() as conn:
        conn.execute(
            "UPDATE logged_models SET status = ?, updated = ? WHERE id = ?",
            (status, Instant(at), model_id),
        )


def set_run(db: Database, model_id: str, run_id: str) -> None:
    with db.atomic() as conn:
        conn.execute("UPDATE logged_models SET run_id = ? WHERE id = ?", (run_id, model_id))


def set_values(db: Database, model_id: str, kind: ValueKind, values: Mapping[str, str]) -> None:
    with db.atomic() as conn:
        _put_values(conn, model_id, kind, values)


def delete_value(db: Database, model_id: str, kind: ValueKind, key: str) -> bool:
    with db.atomic() as conn:
        cur = conn.execute(
            "DELETE FROM logged_model_values WHERE model_id = ? AND kind = ? AND key = ?",
            (model_id, kind, key),
        )
        return cur.rowcount > 0


def delete(db: Database, model_id: str) -> None:
    """The record and its file list; the blobs stay until gc finds nothing holds them."""
    with db.atomic() as conn:
        conn.execute("DELETE FROM logged_model_values WHERE model_id = ?", (model_id,))
        conn.execute("DELETE FROM logged_model_files WHERE model_id = ?", (model_id,))
        conn.execute("DELETE FROM logged_models WHERE id = ?", (model_id,))


def add_file(db: Database, model_id: str, file: ModelFile) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO logged_model_files (model_id, path, digest, size) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (model_id, path) DO UPDATE"
            " SET digest = excluded.digest, size = excluded.size",
            (model_id, file.path, file.digest, file.size),
        )


def files(db: Database, model_id: str) -> list[ModelFile]:
    rows = db.query(
        "SELECT path, digest, size FROM logged_model_files WHERE model_id = ? ORDER BY path",
        (model_id,),
    )
    return [ModelFile(r["path"], r["digest"], int(r["size"])) for r in rows]
