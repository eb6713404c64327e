"""An ``./mlruns`` folder (MLflow's file store) as an import source.

Its layout, as MLflow writes it::

    mlruns/EXPERIMENT_ID/meta.yaml            name, artifact_location, lifecycle_stage
    mlruns/EXPERIMENT_ID/tags/KEY             an experiment tag's value
    mlruns/EXPERIMENT_ID/RUN_ID/meta.yaml     run_name, status (1-5), times, artifact_uri
    mlruns/EXPERIMENT_ID/RUN_ID/params/KEY    the value
    mlruns/EXPERIMENT_ID/RUN_ID/tags/KEY      the value
    mlruns/EXPERIMENT_ID/RUN_ID/metrics/KEY   lines "TIMESTAMP_MS VALUE STEP"
    mlruns/EXPERIMENT_ID/models/MODEL_ID/     a logged model: meta.yaml, params/, tags/
    mlruns/.trash/EXPERIMENT_ID/              a deleted experiment
    mlruns/models/NAME/meta.yaml              a registered model: description, aliases
    mlruns/models/NAME/version-N/meta.yaml    a version: source, run_id, storage_location
    mlruns/models/NAME/version-N/tags/KEY

Keys may hold ``/`` (a nested file), so values are read by walking each folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tether.errors import UsageError
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

_RUN_STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
_MODEL_STATUS: dict[int, ModelStatus] = {1: "pending", 2: "ready", 3: "failed"}


def _meta(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read {path}: {e}", hint="is this an mlruns folder?") from None
    return data if isinstance(data, dict) else {}


def _described(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each subfolder of ``folder`` that has a meta.yaml, with it, by name."""
    if not folder.is_dir():
        return
    for child in sorted(folder.iterdir()):
        if (child / "meta.yaml").is_file():
            yield child, _meta(child / "meta.yaml")


def _values(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            full = Path(dirpath) / name
            out[full.relative_to(folder).as_posix()] = full.read_text(encoding="utf-8")
    return out


class FileSource:
    def __init__(self, root: Path, *, artifacts_root: Path | None = None) -> None:
        if not any((root / d / "meta.yaml").is_file() for d in os.listdir(root)):
            raise UsageError(
                f"{root} holds no MLflow experiment", hint="give the mlruns folder itself"
            )
        self.root = root
        self.display = str(root)
        self.artifacts = Artifacts(root=artifacts_root)
        self._folders: dict[str, Path] = {}

    def experiments(self) -> list[SourceExperiment]:
        found = []
        for base in (self.root, self.root / ".trash"):
            if not base.is_dir():
                continue
            for child in sorted(base.iterdir()):
                meta_file = child / "meta.yaml"
                if child.name == "models" or not meta_file.is_file():
                    continue
                meta = _meta(meta_file)
                eid = str(meta.get("experiment_id", child.name))
                self._folders[eid] = child
                lifecycle = "deleted" if base.name == ".trash" else meta.get("lifecycle_stage")
                found.append(SourceExperiment(
                    eid, str(meta.get("name", eid)), str(lifecycle or "active"),
                    meta.get("artifact_location"), seconds(meta.get("creation_time")),
                    _values(child / "tags"),
                ))  # fmt: skip
        return found

    def runs(self, experiment: SourceExperiment) -> Iterator[SourceRun]:
        folder = self._folders[experiment.id]
        metas = []
        for child in folder.iterdir():
            if child.name not in ("models", "tags") and (child / "meta.yaml").is_file():
                metas.append((child, _meta(child / "meta.yaml")))
        metas.sort(key=lambda cm: (cm[1].get("start_time") or 0, cm[0].name))
        for child, meta in metas:
            metrics = child / "metrics"
            keys = sorted(_values(metrics)) if metrics.is_dir() else []
            yield SourceRun(
                str(meta.get("run_id") or meta.get("run_uuid") or child.name), experiment.id,
                meta.get("run_name") or None, meta.get("user_id"),
                _RUN_STATUS.get(int(meta.get("status") or 3), "FINISHED"),
                seconds(meta.get("start_time")), seconds(meta.get("end_time")),
                str(meta.get("lifecycle_stage") or "active"), meta.get("artifact_uri"),
                _values(child / "params"), _values(child / "tags"), tuple(keys),
            )  # fmt: skip

    def history(self, run: SourceRun, key: str) -> Series:
        path = self._folders[run.experiment_id] / run.id / "metrics" / key
        steps: list[int] = []
        ats: list[float] = []
        values: list[float] = []
        rows = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    step = int(parts[2]) if len(parts) > 2 else 0
                    rows.append((step, int(parts[0]), float(parts[1])))
        rows.sort(key=lambda r: (r[0], r[1], -math.inf if math.isnan(r[2]) else r[2]))
        for step, ms, value in rows:
            steps.append(step)
            ats.append(ms / 1000)
            values.append(value)
        return Series(steps, ats, values)

    def logged_models(self, experiment: SourceExperiment) -> list[SourceLoggedModel]:
        found = []
        for child, meta in _described(self._folders[experiment.id] / "models"):
            found.append(SourceLoggedModel(
                str(meta.get("model_id", child.name)), experiment.id,
                str(meta.get("name") or child.name), meta.get("source_run_id"),
                _MODEL_STATUS.get(int(meta.get("status") or 0), "pending"), meta.get("model_type"),
                int(meta.get("creation_timestamp") or 0) / 1000,
                int(meta.get("last_updated_timestamp") or 0) / 1000,
                str(meta.get("artifact_location") or child / "artifacts"),
                _values(child / "params"), _values(child / "tags"),
            ))  # fmt: skip
        return found

    def models(self) -> list[SourceModel]:
        found = []
        for child, meta in _described(self.root / "models"):
            versions = []
            for vdir in child.glob("version-*"):
                vmeta = _meta(vdir / "meta.yaml")
                if vmeta.get("current_stage") == "Deleted_Internal":
                    continue
                versions.append(SourceVersion(
                    int(vmeta["version"]), str(vmeta.get("source") or ""),
                    vmeta.get("run_id") or None, vmeta.get("storage_location") or None,
                    vmeta.get("description") or None, seconds(vmeta.get("creation_timestamp")),
                    vmeta.get("user_id") or None, _values(vdir / "tags"),
                ))  # fmt: skip
            aliases = {str(k): int(v) for k, v in (meta.get("aliases") or {}).items()}
            found.append(SourceModel(
                str(meta.get("name") or child.name), meta.get("description") or None,
                seconds(meta.get("creation_timestamp")),
                tuple(sorted(versions, key=lambda v: v.version)), aliases, _values(child / "tags"),
            ))  # fmt: skip
        return found

    def close(self) -> None:
        pass
