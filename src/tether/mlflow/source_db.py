"""An MLflow tracking database (``sqlite:///…``, ``postgresql://…``) as an import source;
the SQL is in ``repositories/mlflow_db.py``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from tether.db.foreign import ForeignDatabase
from tether.db.url import DatabaseURL
from tether.mlflow.source import (
    Artifacts,
    ModelStatus,
    Series,
    SourceExperiment,
    SourceLoggedModel,
    SourceModel,
    SourceRun,
    SourceVersion,
    seconds,
)
from tether.repositories import mlflow_db as repo

# MLflow's LoggedModelStatus numbers.
_MODEL_STATUS: dict[int, ModelStatus] = {1: "pending", 2: "ready", 3: "failed"}


class DatabaseSource:
    def __init__(self, url: str, *, artifacts_root: Path | None = None) -> None:
        self.display = DatabaseURL.redact(url)
        self._db = ForeignDatabase(url)
        self._tables = repo.tables(self._db)
        self.artifacts = Artifacts(root=artifacts_root)

    def experiments(self) -> list[SourceExperiment]:
        tags = repo.experiment_tags(self._db) if "experiment_tags" in self._tables else {}
        return [
            SourceExperiment(
                str(r["experiment_id"]),
                r["name"],
                r["lifecycle_stage"] or "active",
                r["artifact_location"],
                seconds(r["creation_time"]),
                tags.get(str(r["experiment_id"]), {}),
            )
            for r in repo.experiments(self._db)
        ]

    def runs(self, experiment: SourceExperiment) -> Iterator[SourceRun]:
        params = repo.run_values(self._db, experiment.id, "params")
        tags = repo.run_values(self._db, experiment.id, "tags")
        keys = repo.metric_keys(self._db, experiment.id)
        for r in repo.runs(self._db, experiment.id):
            rid = r["run_uuid"]
            yield SourceRun(
                rid, experiment.id, r["name"] or None, r["user_id"], r["status"] or "FINISHED",
                seconds(r["start_time"]), seconds(r["end_time"]), r["lifecycle_stage"] or "active",
                r["artifact_uri"], params.get(rid, {}), tags.get(rid, {}), tuple(keys.get(rid, ())),
            )  # fmt: skip

    def history(self, run: SourceRun, key: str) -> Series:
        rows = repo.history(self._db, run.id, key)
        return Series(
            [int(r["step"]) for r in rows],
            [int(r["timestamp"]) / 1000 for r in rows],
            [math.nan if r["is_nan"] else float(r["value"]) for r in rows],
        )

    def logged_models(self, experiment: SourceExperiment) -> list[SourceLoggedModel]:
        if "logged_models" not in self._tables:
            return []
        params = repo.logged_model_values(self._db, "logged_model_params")
        tags = repo.logged_model_values(self._db, "logged_model_tags")
        return [
            SourceLoggedModel(
                r["model_id"],
                experiment.id,
                r["name"],
                r["source_run_id"],
                _MODEL_STATUS.get(int(r["status"] or 0), "pending"),
                r["model_type"],
                int(r["creation_timestamp_ms"]) / 1000,
                int(r["last_updated_timestamp_ms"]) / 1000,
                r["artifact_location"],
                params.get(r["model_id"], {}),
                tags.get(r["model_id"], {}),
            )
            for r in repo.logged_models(self._db, experiment.id)
            if (r["lifecycle_stage"] or "active") == "active"
        ]

    def models(self) -> list[SourceModel]:
        if "registered_models" not in self._tables:
            return []
        versions: dict[str, list[SourceVersion]] = {}
        version_tags = repo.version_tags(self._db)
        for r in repo.model_versions(self._db):
            if r["current_stage"] == "Deleted_Internal":  # MLflow's soft delete
                continue
            versions.setdefault(r["name"], []).append(
                SourceVersion(
                    int(r["version"]),
                    r["source"] or "",
                    r["run_id"] or None,
                    r["storage_location"] or None,
                    r["description"] or None,
                    seconds(r["creation_time"]),
                    r["user_id"] or None,
                    version_tags.get((r["name"], int(r["version"])), {}),
                )
            )
        tags = repo.model_tags(self._db)
        aliases = repo.aliases(self._db) if "registered_model_aliases" in self._tables else {}
        return [
            SourceModel(
                r["name"],
                r["description"] or None,
                seconds(r["creation_time"]),
                tuple(versions.get(r["name"], ())),
                aliases.get(r["name"], {}),
                tags.get(r["name"], {}),
            )
            for r in repo.registered_models(self._db)
        ]

    def close(self) -> None:
        self._db.close()
