"""The model registry repository: every SQL statement over the registry's tables.

Tables (``db/schema_*.py``)::

    models          name → created, user, remote (where 'model push' mirrors it)
    model_versions  (model, version) → digest, run_id, source, created, user,
                    description, archived (never deleted: numbers are never reused)
    model_aliases   (model, alias) → version
    model_events    every registration, archive and alias move, with a uid so that
                    histories read back from a registry merge without duplicates

Functions take the ``Connection`` of the caller's transaction (``db.atomic()``) or read
snapshot (``db.snapshot()``), so that a rule and its writes happen under one lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.db.connection import Connection, Instant, Row
from tether.hashing import Digest
from tether.registry.records import ModelEvent, ModelVersion


@dataclass(frozen=True)
class ModelRow:
    name: str
    remote: str | None
    versions: int
    latest: int | None  # the newest version not archived


def summaries(conn: Connection) -> list[ModelRow]:
    rows = conn.execute(
        "SELECT m.name, m.remote, count(v.version) AS n,"
        " max(CASE WHEN v.archived IS NULL THEN v.version END) AS latest"
        " FROM models m LEFT JOIN model_versions v ON v.model = m.name"
        " GROUP BY m.name, m.remote ORDER BY m.name"
    )
    return [ModelRow(r["name"], r["remote"], int(r["n"]), r["latest"]) for r in rows]


def all_aliases(conn: Connection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for a in conn.execute("SELECT model, alias, version FROM model_aliases ORDER BY alias"):
        out.setdefault(a["model"], {})[a["alias"]] = int(a["version"])
    return out


def exists(conn: Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is not None


def names(conn: Connection, limit: int) -> list[str]:
    rows = conn.execute("SELECT name FROM models ORDER BY name LIMIT ?", (limit,))
    return [r["name"] for r in rows]


def versions(conn: Connection, name: str, number: int | None = None) -> list[ModelVersion]:
    """The versions of ``name`` (or only ``number``) with their aliases, by number."""
    sql = "SELECT * FROM model_versions WHERE model = ?"
    params: tuple[object, ...] = (name,)
    if number is not None:
        sql += " AND version = ?"
        params += (number,)
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases(conn, name):
        by_version.setdefault(version, []).append(alias)
    return [
        ModelVersion(
            r["model"],
            r["version"],
            Digest.parse(r["digest"]),
            r["run_id"],
            r["source"],
            r["created"],
            r["user"],
            r["description"],
            r["archived"],
            tuple(by_version.get(r["version"], [])),
        )
        for r in conn.execute(sql + " ORDER BY version", params)
    ]


def aliases(conn: Connection, name: str) -> list[tuple[str, int]]:
    """(alias, version) of model ``name``, by alias."""
    rows = conn.execute(
        "SELECT alias, version FROM model_aliases WHERE model = ? ORDER BY alias", (name,)
    )
    return [(r["alias"], int(r["version"])) for r in rows]


def alias_version(conn: Connection, name: str, alias: str) -> int | None:
    row = conn.execute(
        "SELECT version FROM model_aliases WHERE model = ? AND alias = ?", (name, alias)
    ).fetchone()
    return int(row["version"]) if row else None


def latest_in_use(conn: Connection, name: str) -> int | None:
    row = conn.execute(
        "SELECT max(version) AS n FROM model_versions WHERE model = ? AND archived IS NULL",
        (name,),
    ).fetchone()
    return None if row["n"] is None else int(row["n"])


def version_of_digest(conn: Connection, name: str, digest: str) -> int | None:
    row = conn.execute(
        "SELECT version FROM model_versions WHERE model = ? AND digest = ?", (name, digest)
    ).fetchone()
    return None if row is None else int(row["version"])


def version_made_by_run(conn: Connection, name: str, run_id: str) -> tuple[int, str] | None:
    """The newest version in use of ``name`` whose ModelKit ``run_id`` made."""
    row = conn.execute(
        "SELECT v.version, v.digest FROM model_versions v JOIN kit_runs k"
        " ON k.kit_digest = v.digest WHERE v.model = ? AND k.run_id = ? AND v.archived IS NULL"
        " ORDER BY v.version DESC LIMIT 1",
        (name, run_id),
    ).fetchone()
    return None if row is None else (int(row["version"]), str(row["digest"]))


def add_version(conn: Connection, version: ModelVersion) -> None:
    """Insert the model (first version) and ``version``, numbered by the caller under
    the transaction's lock (``next_number``)."""
    conn.execute(
        'INSERT INTO models (name, created, "user") VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
        (version.model, Instant(version.created), version.user),
    )
    conn.execute(
        "INSERT INTO model_versions (model, version, digest, run_id, source, created,"
        ' "user", description) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        (
            version.model,
            version.version,
            str(version.digest),
            version.run_id,
            version.source,
            Instant(version.created),
            version.user,
            version.description,
        ),
    )


def next_number(conn: Connection, name: str) -> int:
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 AS n FROM model_versions WHERE model = ?", (name,)
    ).fetchone()
    return int(row["n"])


def archive(conn: Connection, name: str, version: int, at: float) -> None:
    conn.execute(
        "UPDATE model_versions SET archived = ? WHERE model = ? AND version = ?",
        (Instant(at), name, version),
    )


def set_remote(conn: Connection, name: str, remote: str) -> None:
    conn.execute("UPDATE models SET remote = ? WHERE name = ?", (remote, name))


def point_alias(conn: Connection, name: str, alias: str, version: int) -> None:
    conn.execute(
        "INSERT INTO model_aliases VALUES (?, ?, ?) ON CONFLICT (model, alias)"
        " DO UPDATE SET version = excluded.version",
        (name, alias, version),
    )


def drop_alias(conn: Connection, name: str, alias: str) -> None:
    conn.execute("DELETE FROM model_aliases WHERE model = ? AND alias = ?", (name, alias))


def add_event(conn: Connection, event: ModelEvent) -> None:
    conn.execute(
        "INSERT INTO model_events (uid, model, alias, action, old_version, new_version, at,"
        ' "user", reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        (
            event.uid,
            event.model,
            event.alias,
            event.action,
            event.old_version,
            event.new_version,
            Instant(event.at),
            event.user,
            event.reason,
        ),
    )


def events(conn: Connection, name: str, alias: str | None = None) -> list[ModelEvent]:
    sql = "SELECT * FROM model_events WHERE model = ?"
    params: tuple[object, ...] = (name,)
    if alias is not None:
        sql += " AND alias = ?"
        params += (alias,)
    return [_event(r) for r in conn.execute(sql + " ORDER BY at, id", params)]


def previous_version(conn: Connection, name: str, alias: str) -> int | None:
    """Where ``alias`` pointed before its last move (None: nowhere, or never moved)."""
    row = conn.execute(
        "SELECT old_version FROM model_events WHERE model = ? AND alias = ?"
        " AND action IN ('set', 'move', 'rollback') ORDER BY at DESC, id DESC LIMIT 1",
        (name, alias),
    ).fetchone()
    return None if row is None or row["old_version"] is None else int(row["old_version"])


def _event(row: Row) -> ModelEvent:
    return ModelEvent(
        row["uid"],
        row["model"],
        row["alias"],
        row["action"],
        row["old_version"],
        row["new_version"],
        row["at"],
        row["user"],
        row["reason"],
    )


# -- what MLflow's registry adds: the client's name for a model, a description, tags -------


def model_of_label(conn: Connection, label: str) -> str | None:
    row = conn.execute("SELECT model FROM model_labels WHERE label = ?", (label,)).fetchone()
    return None if row is None else str(row["model"])


def created(conn: Connection, name: str) -> tuple[float, str]:
    """When and by whom ``name`` was made."""
    row = conn.execute('SELECT created, "user" FROM models WHERE name = ?', (name,)).fetchone()
    return float(row["created"]), str(row["user"])


def labels(conn: Connection) -> dict[str, tuple[str | None, str | None]]:
    """model → (label, description), for the models that have either."""
    rows = conn.execute("SELECT model, label, description FROM model_labels")
    return {r["model"]: (r["label"], r["description"]) for r in rows}


def set_label(
    conn: Connection, model: str, *, label: str | None = None, description: str | None = None
) -> None:
    """Record the client's name and/or the description (None leaves a field as it is)."""
    conn.execute(
        "INSERT INTO model_labels (model, label, description) VALUES (?, ?, ?)"
        " ON CONFLICT (model) DO UPDATE SET label = coalesce(excluded.label, model_labels.label),"
        " description = coalesce(excluded.description, model_labels.description)",
        (model, label, description),
    )


def add_model(conn: Connection, name: str, at: float, user: str) -> bool:
    """False when the model exists."""
    cur = conn.execute(
        'INSERT INTO models (name, created, "user") VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
        (name, Instant(at), user),
    )
    return cur.rowcount > 0


def tags(conn: Connection, model: str) -> dict[int, dict[str, str]]:
    """version (0: the model itself) → its tags."""
    out: dict[int, dict[str, str]] = {}
    for r in conn.execute("SELECT version, key, value FROM model_tags WHERE model = ?", (model,)):
        out.setdefault(int(r["version"]), {})[r["key"]] = r["value"]
    return out


def set_tag(conn: Connection, model: str, version: int, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO model_tags (model, version, key, value) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (model, version, key) DO UPDATE SET value = excluded.value",
        (model, version, key, value),
    )


def delete_tag(conn: Connection, model: str, version: int, key: str) -> bool:
    cur = conn.execute(
        "DELETE FROM model_tags WHERE model = ? AND version = ? AND key = ?", (model, version, key)
    )
    return cur.rowcount > 0


def set_description(conn: Connection, model: str, version: int, text: str) -> None:
    conn.execute(
        "UPDATE model_versions SET description = ? WHERE model = ? AND version = ?",
        (text, model, version),
    )
