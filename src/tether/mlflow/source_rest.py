"""An MLflow tracking server (``http(s)://HOST:PORT``) as an import source, through its
REST API; its token comes from ``MLFLOW_TRACKING_TOKEN`` (or user and password from
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``), as MLflow's own client reads them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

_MODEL_STATUS: dict[str, ModelStatus] = {
    "LOGGED_MODEL_PENDING": "pending", "LOGGED_MODEL_READY": "ready",
    "LOGGED_MODEL_UPLOAD_FAILED": "failed",
}  # fmt: skip
PAGE = 1000


def _pairs(items: Any) -> dict[str, str]:
    return {str(i["key"]): str(i.get("value", "")) for i in items or ()}


class RestSource:
    def __init__(self, url: str, *, artifacts_root: Path | None = None) -> None:
        import httpx

        headers = {}
        auth = None
        if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {token}"
        elif user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
            auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
        self.display = url
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, auth=auth,
                                  timeout=120, follow_redirects=True)  # fmt: skip
        self.artifacts = Artifacts(http=self._http, root=artifacts_root)

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            if method == "GET":
                reply = self._http.get(f"/api/2.0/mlflow/{path}", params=body)
            else:
                reply = self._http.post(f"/api/2.0/mlflow/{path}", json=body)
        except httpx.HTTPError as e:
            raise UsageError(
                f"cannot reach {self.display}: {e}", hint="is the MLflow server running?"
            ) from None
        if reply.status_code in (401, 403):
            raise UsageError(
                f"{self.display} refused the request ({reply.status_code})",
                hint="set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD",
            )
        if reply.status_code == 404 and "ENDPOINT_NOT_FOUND" in reply.text:
            return {}
        if reply.status_code >= 400:
            raise UsageError(
                f"{self.display} answered {reply.status_code} to {path}: {reply.text[:200]}",
                hint="check that the URL is an MLflow tracking server",
            )
        return reply.json()  # type: ignore[no-any-return]

    def _pages(self, method: str, path: str, body: dict[str, Any], field: str) -> Iterator[Any]:
        token = None
        while True:
            page = self._call(method, path, {**body, **({"page_token": token} if token else {})})
            yield from page.get(field, [])
            token = page.get("next_page_token")
            if not token:
                return

    def experiments(self) -> list[SourceExperiment]:
        body = {"max_results": PAGE, "view_type": "ALL"}
        return [
            SourceExperiment(
                str(e["experiment_id"]),
                e["name"],
                e.get("lifecycle_stage", "active"),
                e.get("artifact_location"),
                seconds(e.get("creation_time")),
                _pairs(e.get("tags")),
            )
            for e in self._pages("POST", "experiments/search", body, "experiments")
        ]

    def runs(self, experiment: SourceExperiment) -> Iterator[SourceRun]:
        body = {"experiment_ids": [experiment.id], "run_view_type": "ALL", "max_results": PAGE,
                "order_by": ["attributes.start_time ASC"]}  # fmt: skip
        for r in self._pages("POST", "runs/search", body, "runs"):
            info, data = r["info"], r.get("data", {})
            yield SourceRun(
                info["run_id"], experiment.id, info.get("run_name") or None, info.get("user_id"),
                info.get("status", "FINISHED"), seconds(info.get("start_time")),
                seconds(info.get("end_time")), info.get("lifecycle_stage", "active"),
                info.get("artifact_uri"), _pairs(data.get("params")), _pairs(data.get("tags")),
                tuple(sorted({m["key"] for m in data.get("metrics") or ()})),
            )  # fmt: skip

    def history(self, run: SourceRun, key: str) -> Series:
        body = {"run_id": run.id, "metric_key": key, "max_results": 25_000}
        rows = sorted(
            (int(m.get("step", 0)), int(m.get("timestamp", 0)), float(m["value"]))
            for m in self._pages("GET", "metrics/get-history", body, "metrics")
        )
        return Series([r[0] for r in rows], [r[1] / 1000 for r in rows], [r[2] for r in rows])

    def logged_models(self, experiment: SourceExperiment) -> list[SourceLoggedModel]:
        body = {"experiment_ids": [experiment.id], "max_results": 100}
        found = []
        for m in self._pages("POST", "logged-models/search", body, "models"):
            info, data = m["info"], m.get("data", {})
            found.append(SourceLoggedModel(
                info["model_id"], experiment.id, info.get("name") or info["model_id"],
                info.get("source_run_id"), _MODEL_STATUS.get(info.get("status", ""), "pending"),
                info.get("model_type"), int(info.get("creation_timestamp_ms", 0)) / 1000,
                int(info.get("last_updated_timestamp_ms", 0)) / 1000, info["artifact_uri"],
                _pairs(data.get("params")), _pairs(info.get("tags")),
            ))  # fmt: skip
        return found

    def models(self) -> list[SourceModel]:
        found = []
        for m in self._pages("GET", "registered-models/search", {"max_results": 1000},
                             "registered_models"):  # fmt: skip
            name = m["name"]
            quoted = name.replace("'", "\\'")
            body = {"filter": f"name = '{quoted}'", "max_results": 10_000}
            versions = [
                SourceVersion(
                    int(v["version"]),
                    v.get("source", ""),
                    v.get("run_id") or None,
                    self._download_uri(name, v["version"]),
                    v.get("description") or None,
                    seconds(v.get("creation_timestamp")),
                    v.get("user_id") or None,
                    _pairs(v.get("tags")),
                )
                for v in self._pages("GET", "model-versions/search", body, "model_versions")
            ]
            aliases = {a["alias"]: int(a["version"]) for a in m.get("aliases") or ()}
            found.append(SourceModel(
                name, m.get("description") or None, seconds(m.get("creation_timestamp")),
                tuple(sorted(versions, key=lambda v: v.version)), aliases, _pairs(m.get("tags")),
            ))  # fmt: skip
        return found

    def _download_uri(self, name: str, version: str) -> str | None:
        found = self._call("GET", "model-versions/get-download-uri",
                           {"name": name, "version": version})  # fmt: skip
        uri = found.get("artifact_uri")
        return str(uri) if uri else None

    def close(self) -> None:
        self._http.close()
