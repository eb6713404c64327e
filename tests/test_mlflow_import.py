"""``tether import mlflow``: stores the real ``mlflow`` wrote (SQLite and an ``mlruns``
folder, 201 runs), imported, then checked against what the real client reads back from
them: counts, every metric point, every artifact byte, models, versions and aliases."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_mlflow_api import mlflow_python  # noqa: F401 - fixture
from tether.mlflow.importer import ImportOptions, import_mlflow
from tether.registry import models as registry
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.workspace import Workspace

FIXTURES = Path(__file__).resolve().parent / "fixtures"
META = "registered_model_meta"
ENV = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture(scope="session")
def mlflow_stores(mlflow_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """The same history written by the real mlflow into a SQLite store and an mlruns
    folder, with what mlflow's client reads back from each."""
    out = {}
    for kind in ("sqlite", "mlruns"):
        where = tmp_path_factory.mktemp(f"mlflow-{kind}")
        uri = f"sqlite:///{where}/mlflow.db" if kind == "sqlite" else str(where / "mlruns")
        for script in ("mlflow_history.py", "mlflow_dump.py"):
            done = subprocess.run(
                [str(mlflow_python), str(FIXTURES / script), uri], cwd=where, env=ENV,
                capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
        out[kind] = {"uri": uri, "oracle": json.loads(done.stdout.strip().splitlines()[-1])}
    return out


def _kit_files(project: Workspace, ref: str, into: Path) -> dict[str, str]:
    subprocess.run(
        [sys.executable, "-m", "tether", "-C", str(project.root), "unpack", ref, "-d", str(into),
         "--filter", "model"], check=True, capture_output=True,
    )  # fmt: skip
    return {
        p.relative_to(into).as_posix().split("/", 1)[1]: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in into.rglob("*")
        if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "mlruns"])
def test_an_mlflow_store_imports_whole_and_once(
    kind: str, mlflow_stores: dict[str, Any], project: Workspace, tmp_path: Path
) -> None:
    store = mlflow_stores[kind]
    oracle = store["oracle"]
    planned = import_mlflow(project, ImportOptions(store["uri"], dry_run=True))
    assert planned.added.runs == len(oracle["runs"]) == 201
    assert runs_repo.load_runs(project.db, list(oracle["runs"]), full=False) == []  # dry run
    done = import_mlflow(project, ImportOptions(store["uri"]))
    assert done.skipped == ()
    assert done.added.runs == 201 and done.added.models == 3 and done.added.versions == 5
    assert done.added.aliases == 5 and done.added.logged_models == 1
    runs = {r.id: r for r in runs_repo.load_runs(project.db, list(oracle["runs"]))}
    assert len(runs) == 201  # every run, under MLflow's own id
    points = 0
    status = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
    for rid, want in oracle["runs"].items():
        run = runs[rid]
        assert run.name == want["name"] and run.user == want["user"]
        assert run.status == status[want["status"]]
        assert round(run.started * 1000) == want["start"]
        assert run.ended is not None and round(run.ended * 1000) == want["end"]
        assert dict(run.params) == want["params"]
        assert {k: run.tags.get(k) for k in want["tags"]} == want["tags"]
        assert (run.tags.get("tether.lifecycle") == "deleted") == (want["lifecycle"] == "deleted")
        series = metrics_repo.metric_series(project.db, rid)
        for key, history in want["metrics"].items():
            got = [[s, round(at * 1000), v] for s, at, v in series[key]]
            assert got == sorted(history), (rid, key)
            points += len(history)
        stored = {f.path: f.digest for f in run.files if f.role == "artifact"}
        assert stored == {p: f"sha256:{h}" for p, h in want["artifacts"].items()}
    assert points == done.added.points >= 5 * 10_000
    # Models: MLflow's names and numbers, aliases, and the very files of each version.
    for label, want in oracle["models"].items():
        name = label.lower().replace(" ", "-")
        versions = registry.versions(project, name)
        assert {str(v.version): v.run_id for v in versions} == {
            n: v["run_id"] for n, v in want["versions"].items()
        }
        assert {a: v.version for v in versions for a in v.aliases} == {
            a: int(n) for a, n in want["aliases"].items()
        }
        for number, v in want["versions"].items():
            unpacked = _kit_files(project, f"{name}:v{number}", tmp_path / f"{name}-{number}")
            # MLflow's client writes registered_model_meta into what it downloads.
            unpacked.pop(META, None)
            assert unpacked == {p: h for p, h in v["files"].items() if p != META}, (label, number)
    # Again: nothing new.
    again = import_mlflow(project, ImportOptions(store["uri"]))
    assert again.added.to_json() == {k: 0 for k in again.added.to_json()}


@pytest.mark.slow
def test_an_mlflow_server_imports_over_http(
    mlflow_python: Path,  # noqa: F811
    project: Workspace,
    tmp_path: Path,
) -> None:
    """MLflow's own server, its artifacts served (mlflow-artifacts:), read over REST."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(mlflow_python), "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination", str(tmp_path / "art"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for script, args in (("mlflow_history.py", [url, "3"]), ("mlflow_dump.py", [url])):
            done = subprocess.run([str(mlflow_python), str(FIXTURES / script), *args],
                                  cwd=tmp_path, env=ENV, capture_output=True, text=True,
                                  timeout=900)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
        oracle = json.loads(done.stdout.strip().splitlines()[-1])
        result = import_mlflow(project, ImportOptions(url))
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert result.skipped == () and result.added.runs == len(oracle["runs"]) == 13
    for rid, want in oracle["runs"].items():
        run = runs_repo.load_runs(project.db, [rid])[0]
        assert dict(run.params) == want["params"]
        stored = {f.path: f.digest for f in run.files if f.role == "artifact"}
        assert stored == {p: f"sha256:{h}" for p, h in want["artifacts"].items()}
        for key, history in want["metrics"].items():
            got = metrics_repo.metric_series(project.db, rid, key)[key]
            assert [[s, round(at * 1000), v] for s, at, v in got] == sorted(history)
    assert {v.version for v in registry.versions(project, "churn-model")} == {1}
    assert result.added.versions == 5 and result.added.aliases == 5


def test_import_refuses_what_is_not_a_store(project: Workspace, tmp_path: Path) -> None:
    from tether.errors import UsageError

    with pytest.raises(UsageError, match="not an MLflow tracking store"):
        import_mlflow(project, ImportOptions("ftp://example/x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no MLflow experiment"):
        import_mlflow(project, ImportOptions(str(tmp_path / "empty")))
    with pytest.raises(UsageError, match="no SQLite database"):
        import_mlflow(project, ImportOptions(f"sqlite:///{tmp_path}/missing.db"))
