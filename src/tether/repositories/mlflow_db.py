"""MLflow's tracking database, read for import: every SQL statement over MLflow's own
schema (``experiments``, ``runs``, ``params``, ``tags``, ``metrics``, ``logged_models``,
``registered_models``, ``model_versions`` and their tags and aliases), through a
read-only ``ForeignDatabase``. Tables a store's MLflow version lacks read as empty.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tether.db.foreign import ForeignDatabase

Row = dict[str, Any]


def tables(db: ForeignDatabase) -> set[str]:
    if db.dialect == "sqlite":
        rows = db.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = db.query(
            "SELECT table_name AS name FROM information_schema.tables"
            " WHERE table_schema = current_schema()"
        )
    return {str(r["name"]) for r in rows}


def experiments(db: ForeignDatabase) -> list[Row]:
    return db.query(
        "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time"
        " FROM experiments ORDER BY experiment_id"
    )


def experiment_tags(db: ForeignDatabase) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for r in db.query("SELECT experiment_id, key, value FROM experiment_tags"):
        out[str(r["experiment_id"])][r["key"]] = r["value"] or ""
    return out


def runs(db: ForeignDatabase, experiment_id: str) -> list[Row]:
    return db.query(
        "SELECT run_uuid, name, user_id, status, start_time, end_time, lifecycle_stage,"
        " artifact_uri FROM runs WHERE experiment_id = ? ORDER BY start_time, run_uuid",
        (int(experiment_id),),
    )


def run_values(db: ForeignDatabase, experiment_id: str, table: str) -> dict[str, dict[str, str]]:
    """run → key → value from ``params`` or ``tags``, for every run of the experiment."""
    assert table in ("params", "tags")
    out: dict[str, dict[str, str]] = defaultdict(dict)
    rows = db.query(
        f"SELECT t.run_uuid, t.key, t.value FROM {table} t"
        " JOIN runs r ON r.run_uuid = t.run_uuid WHERE r.experiment_id = ?",
        (int(experiment_id),),
    )
    for r in rows:
        out[r["run_uuid"]][r["key"]] = r["value"] or ""
    return out


def metric_keys(db: ForeignDatabase, experiment_id: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    rows = db.query(
        "SELECT DISTINCT m.run_uuid, m.key FROM metrics m"
        " JOIN runs r ON r.run_uuid = m.run_uuid WHERE r.experiment_id = ? ORDER BY m.key",
        (int(experiment_id),),
    )
    for r in rows:
        out[r["run_uuid"]].append(r["key"])
    return out


def history(db: ForeignDatabase, run_id: str, key: str) -> list[Row]:
    return db.query(
        "SELECT step, timestamp, value, is_nan FROM metrics WHERE run_uuid = ? AND key = ?"
        " ORDER BY step, timestamp, value",
        (run_id, key),
    )


def logged_models(db: ForeignDatabase, experiment_id: str) -> list[Row]:
    return db.query(
        "SELECT model_id, name, artifact_location, creation_timestamp_ms,"
        " last_updated_timestamp_ms, status, model_type, source_run_id, lifecycle_stage"
        " FROM logged_models WHERE experiment_id = ? ORDER BY creation_timestamp_ms, model_id",
        (int(experiment_id),),
    )


def logged_model_values(db: ForeignDatabase, table: str) -> dict[str, dict[str, str]]:
    assert table in ("logged_model_params", "logged_model_tags")
    key, value = (
        ("param_key", "param_value") if table.endswith("params") else ("tag_key", "tag_value")
    )
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for r in db.query(f"SELECT model_id, {key} AS k, {value} AS v FROM {table}"):
        out[r["model_id"]][r["k"]] = r["v"] or ""
    return out


def registered_models(db: ForeignDatabase) -> list[Row]:
    return db.query("SELECT name, creation_time, description FROM registered_models ORDER BY name")


def model_versions(db: ForeignDatabase) -> list[Row]:
    return db.query(
        "SELECT name, version, creation_time, description, user_id, source, run_id,"
        " storage_location, current_stage FROM model_versions ORDER BY name, version"
    )


def model_tags(db: ForeignDatabase) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for r in db.query("SELECT name, key, value FROM registered_model_tags"):
        out[r["name"]][r["key"]] = r["value"] or ""
    return out


def version_tags(db: ForeignDatabase) -> dict[tuple[str, int], dict[str, str]]:
    out: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for r in db.query("SELECT name, version, key, value FROM model_version_tags"):
        out[(r["name"], int(r["version"]))][r["key"]] = r["value"] or ""
    return out


def aliases(db: ForeignDatabase) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for r in db.query("SELECT name, alias, version FROM registered_model_aliases"):
        out[r["name"]][r["alias"]] = int(r["version"])
    return out
