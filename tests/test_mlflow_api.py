"""The real ``mlflow`` client (3.17.2, in a virtualenv of its own: its dependencies
never touch tether's), unmodified, logging into ``tether ui --writable`` through MLflow's
REST API; then the same runs seen through tether."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_server import deployment, team  # noqa: F401 - fixtures
from tether.oci.reference import parse_reference
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.workspace import Workspace

MLFLOW = "mlflow==3.17.2"
CACHE = Path(__file__).resolve().parent.parent / ".test-cache" / "mlflow-3.17.2"


@pytest.fixture(scope="session")
def mlflow_python() -> Path:
    """The MLflow virtualenv's interpreter, made on first use (uv when it is there)."""
    python = CACHE / "bin" / "python"
    ready = (
        python.exists()
        and subprocess.run(
            [str(python), "-c", "import mlflow"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not ready:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(CACHE)], check=True)
        uv = shutil.which("uv")
        install = ([uv, "pip", "install", "--quiet", "--python", str(python)] if uv
                   else [str(python), "-m", "pip", "install", "--quiet"])  # fmt: skip
        subprocess.run([*install, MLFLOW], check=True, timeout=1200)
    return python


@pytest.fixture
def ui(project: Workspace) -> Iterator[str]:
    """'tether ui --writable' on the project, in its own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "-C", str(project.root), "ui", "--writable",
         "--no-open", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "http://" in line:
            url = line[line.index("http://") :].split()[0].rstrip("/")
    assert url, "tether ui did not start"
    try:
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


SCRIPT = """
import json, mlflow
from mlflow import MlflowClient

mlflow.set_experiment("recs")
with mlflow.start_run(run_name="svd-1") as parent:
    mlflow.log_param("model", "svd")
    mlflow.log_params({"k": 10, "lr": 0.01})
    for step in range(100):
        mlflow.log_metric("loss", 1 / (1 + step), step=step, timestamp=1_700_000_000_000 + step)
    mlflow.log_metrics({"rmse": 0.8, "mae": 0.5})
    mlflow.set_tag("team", "recs")
    mlflow.set_tags({"stage": "dev", "owner": "ada"})
    with mlflow.start_run(run_name="svd-1-fold", nested=True):
        mlflow.log_metric("rmse", 0.95)
with mlflow.start_run(run_name="als-1") as als:
    mlflow.log_param("model", "als")
    mlflow.log_metric("rmse", 0.6)
with mlflow.start_run(run_name="svd-2"):
    mlflow.log_param("model", "svd")
    mlflow.log_metric("rmse", 0.7)
mlflow.start_run(run_name="broken")
mlflow.log_metric("rmse", 3.0)
mlflow.end_run(status="FAILED")

import hashlib, os, tempfile
src = tempfile.mkdtemp()
with open(os.path.join(src, "model.bin"), "wb") as f:
    f.write(os.urandom(3_000_000))
os.makedirs(os.path.join(src, "plots", "deep"))
for name, text in (("a.txt", "a"), ("b.txt", "bb"), ("deep/c.txt", "ccc")):
    with open(os.path.join(src, "plots", name), "w") as f:
        f.write(text)
with mlflow.start_run(run_name="artifacts") as art:
    mlflow.log_artifact(os.path.join(src, "model.bin"))
    mlflow.log_artifacts(os.path.join(src, "plots"), artifact_path="plots")

client = MlflowClient()
listed = [[f.path, f.is_dir, f.file_size] for f in client.list_artifacts(art.info.run_id)]
inside = [f.path for f in client.list_artifacts(art.info.run_id, "plots")]
dst = mlflow.artifacts.download_artifacts(run_id=art.info.run_id, dst_path=tempfile.mkdtemp())
same = all(
    open(os.path.join(src, rel), "rb").read() == open(os.path.join(dst, target), "rb").read()
    for rel, target in (("model.bin", "model.bin"), ("plots/a.txt", "plots/a.txt"),
                        ("plots/deep/c.txt", "plots/deep/c.txt"))
)
found = mlflow.search_runs(
    filter_string="metrics.rmse < 1 and params.model = 'svd'",
    order_by=["metrics.rmse ASC"], output_format="list",
)
history = client.get_metric_history(parent.info.run_id, "loss")
client.delete_run(als.info.run_id)
after_delete = mlflow.search_runs(output_format="list")
exp = mlflow.get_experiment_by_name("recs")
failed = mlflow.search_runs(filter_string="attributes.status = 'FAILED'", output_format="list")
try:
    client.log_param(parent.info.run_id, "model", "als")
    changed = "accepted"
except mlflow.exceptions.MlflowException as e:
    changed = e.error_code
print(json.dumps({
    "experiment": exp.experiment_id,
    "parent": parent.info.run_id,
    "found": [r.info.run_name for r in found],
    "history": [[m.step, m.value, m.timestamp] for m in history],
    "after_delete": sorted(r.info.run_name for r in after_delete),
    "failed": [r.info.run_name for r in failed],
    "params": found[-1].data.params,
    "changed": changed,
    "listed": listed,
    "inside": inside,
    "same": same,
    "artifacts_run": art.info.run_id,
}))
"""


def run_mlflow(python: Path, url: str, script: str) -> dict[str, Any]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # fmt: skip
    done = subprocess.run([str(python), "-c", textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_an_unmodified_mlflow_script_logs_into_tether(
    mlflow_python: Path, ui: str, project: Workspace
) -> None:
    got = run_mlflow(mlflow_python, ui, SCRIPT)
    assert got["experiment"] == "1"
    # rmse < 1 and model = svd, best first: svd-2 (0.7), svd-1 (0.8); the nested run
    # has no params, als is not svd, broken's rmse is 3.
    assert got["found"] == ["svd-2", "svd-1"]
    assert got["params"] == {"model": "svd", "k": "10", "lr": "0.01"}
    assert got["history"] == [[s, 1 / (1 + s), 1_700_000_000_000 + s] for s in range(100)]
    assert got["after_delete"] == ["artifacts", "broken", "svd-1", "svd-1-fold", "svd-2"]
    # Artifacts up and down byte-identical; listed as MLflow lists them.
    assert got["same"] is True
    assert got["listed"] == [["model.bin", False, 3_000_000], ["plots", True, None]]
    assert got["inside"] == ["plots/a.txt", "plots/b.txt", "plots/deep"]
    stored = runs_repo.load_runs(project.db, [got["artifacts_run"]])[0].files
    assert sorted(f.path for f in stored if f.role == "artifact") == [
        "model.bin",
        "plots/a.txt",
        "plots/b.txt",
        "plots/deep/c.txt",
    ]
    assert got["failed"] == ["broken"]
    assert got["changed"] == "INVALID_PARAMETER_VALUE"
    # The same runs, as tether sees them.
    parent = runs_repo.load_runs(project.db, [got["parent"]])[0]
    assert parent.name == "svd-1" and parent.status == "finished"
    assert parent.params == {"model": "svd", "k": "10", "lr": "0.01"}
    assert parent.tags["team"] == "recs" and parent.tags["mlflow.experiment_id"] == "1"
    loss = metrics_repo.metric_series(project.db, parent.id, "loss")["loss"]
    assert [(s, v) for s, _, v in loss] == [(s, 1 / (1 + s)) for s in range(100)]
    assert loss[0][1] == 1_700_000_000.0
    broken = runs_repo.load_runs(project.db, [runs_repo.resolve(project.db, "broken")])[0]
    assert broken.status == "failed"


def test_mlflow_errors_keep_mlflows_shape(ui: str, project: Workspace) -> None:
    with httpx.Client(base_url=ui, timeout=30) as http:
        missing = http.get("/api/2.0/mlflow/runs/get", params={"run_id": "nope"})
        assert missing.status_code == 404
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        unknown = http.post("/api/2.0/mlflow/registered-models/rename", json={"name": "x"})
        assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
        stage = http.post("/api/2.0/mlflow/model-versions/transition-stage", json={})
        assert stage.status_code == 501 and stage.json()["error_code"] == "NOT_IMPLEMENTED"
        # A version is made from files tether holds, never from a path elsewhere.
        http.post("/api/2.0/mlflow/registered-models/create", json={"name": "m"})
        elsewhere = http.post("/api/2.0/mlflow/model-versions/create",
                              json={"name": "m", "source": "s3://bucket/model"})  # fmt: skip
        assert elsewhere.status_code == 400
        assert "files it holds" in elsewhere.json()["message"]
        bad_filter = http.get("/api/2.0/mlflow/model-versions/search",
                              params={"filter": "name ~ 'x'"})  # fmt: skip
        assert bad_filter.status_code == 400
        # A page on another site cannot post a form here: the body must be JSON.
        form = http.post("/api/2.0/mlflow/experiments/create", content=b"name=x",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert form.status_code == 400 and form.json()["error_code"] == "BAD_REQUEST"
        for climb in (
            "0/x/artifacts/../../etc/passwd",
            "0/x/artifacts/%2e%2e/y",
            "0/x/notartifacts/y",
        ):
            refused = http.put(f"/api/2.0/mlflow-artifacts/artifacts/{climb}", content=b"x")
            assert refused.status_code in (400, 404), climb
            assert refused.json()["error_code"] in ("INVALID_PARAMETER_VALUE", "ENDPOINT_NOT_FOUND")
        bad = http.post("/api/2.0/mlflow/runs/search", json={"filter": "metrics.rmse <"})
        assert bad.status_code == 400
        assert bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        made = http.post("/api/2.0/mlflow/experiments/create", json={"name": "<b>x</b>"})
        again = http.post("/api/2.0/mlflow/experiments/create", json={"name": "<b>x</b>"})
        assert made.status_code == 200
        assert again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


REGISTRY_SCRIPT = """
import json, os, tempfile, mlflow, numpy as np
from mlflow import MlflowClient
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV

mlflow.set_experiment("fraud")
mlflow.sklearn.autolog()
rng = np.random.RandomState(0)
X = rng.rand(60, 3)
y = X @ [1.0, 2.0, 3.0]
with mlflow.start_run(run_name="ridge") as run:
    Ridge(alpha=0.5).fit(X, y)
with mlflow.start_run(run_name="grid") as grid:
    GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=2).fit(X, y)
mlflow.sklearn.autolog(disable=True)

client = MlflowClient()
v1 = mlflow.register_model(f"runs:/{run.info.run_id}/model", "Fraud Model")
# Files logged as plain artifacts of a run, registered through the client.
folder = tempfile.mkdtemp()
with open(os.path.join(folder, "weights.bin"), "wb") as f:
    f.write(b"w" * 1000)
with mlflow.start_run(run_name="plain") as plain:
    mlflow.log_artifacts(folder, artifact_path="clf")
v2 = client.create_model_version("Fraud Model", f"runs:/{plain.info.run_id}/clf",
                                 plain.info.run_id)
client.set_registered_model_alias("Fraud Model", "champion", v1.version)
client.set_registered_model_alias("Fraud Model", "champion", v2.version)
client.set_registered_model_alias("Fraud Model", "challenger", v1.version)
champion = client.get_model_version_by_alias("Fraud Model", "champion")
client.delete_registered_model_alias("Fraud Model", "challenger")
try:
    client.get_model_version_by_alias("Fraud Model", "challenger")
    gone = "still there"
except mlflow.exceptions.MlflowException as e:
    gone = e.error_code
versions = client.search_model_versions("name = 'Fraud Model'")
by_run = client.search_model_versions(f"run_id = '{run.info.run_id}'")
loaded = mlflow.sklearn.load_model(f"models:/Fraud Model/{v1.version}")
weights = mlflow.artifacts.download_artifacts(f"models:/Fraud Model@champion")
model = client.get_registered_model("Fraud Model")
print(json.dumps({
    "run": run.info.run_id,
    "grid": grid.info.run_id,
    "plain": plain.info.run_id,
    "versions": [v1.version, v2.version],
    "champion": champion.version,
    "gone": gone,
    "searched": sorted(v.version for v in versions),
    "by_run": [v.version for v in by_run],
    "prediction": float(loaded.predict(X[:1])[0]),
    "expected": float(Ridge(alpha=0.5).fit(X, y).predict(X[:1])[0]),
    "weights": open(os.path.join(weights, "weights.bin"), "rb").read() == b"w" * 1000,
    "aliases": {a: v for a, v in model.aliases.items()},
    "label": model.name,
}))
"""


def test_mlflow_registry_and_sklearn_autolog_on_tethers_registry(
    mlflow_python: Path, ui: str, project: Workspace
) -> None:
    from tether.registry import models as registry

    got = run_mlflow(mlflow_python, ui, REGISTRY_SCRIPT)
    assert got["versions"] == ["1", "2"] and got["searched"] == ["1", "2"]
    assert got["champion"] == "2" and got["gone"] == "RESOURCE_DOES_NOT_EXIST"
    assert got["by_run"] == ["1"]
    assert got["prediction"] == pytest.approx(got["expected"])
    assert got["weights"] is True
    assert got["aliases"] == {"champion": "2"} and got["label"] == "Fraud Model"
    # autolog: the estimator's params, its training metrics, the model as a version.
    ridge = runs_repo.load_runs(project.db, [got["run"]])[0]
    assert ridge.params["alpha"] == "0.5" and ridge.status == "finished"
    assert "training_r2_score" in ridge.metrics
    grid = runs_repo.load_runs(project.db, [got["grid"]])[0]
    assert grid.params["best_alpha"] in ("0.1", "1.0")
    # In tether's registry the name is a slug; every version is a ModelKit made by its run,
    # every alias move is history.
    versions = registry.versions(project, "fraud-model")
    assert [(v.version, v.run_id) for v in versions] == [(1, got["run"]), (2, got["plain"])]
    moves = [(e.alias, e.action, e.new_version) for e in registry.history(project, "fraud-model")]
    assert ("champion", "move", 2) in moves and ("challenger", "remove", None) in moves
    kit = project.index.resolve(parse_reference("fraud-model:v1"))
    assert kit.digest == versions[0].digest
    lineage = subprocess.run(
        [sys.executable, "-m", "tether", "-C", str(project.root), "lineage",
         "model:fraud-model@v1"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "packed from run ridge" in lineage
    listed = subprocess.run(
        [sys.executable, "-m", "tether", "-C", str(project.root), "runs", "list", "--json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert {"ridge", "grid", "plain"} <= {r["name"] for r in json.loads(listed)["runs"]}


SERVER_SCRIPT = """
import json, mlflow
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression
mlflow.set_experiment("nightly")
with mlflow.start_run(run_name="from-mlflow") as run:
    mlflow.log_param("model", "svd")
    mlflow.log_metric("rmse", 0.75, step=1)
    mlflow.sklearn.log_model(LinearRegression().fit([[0], [1]], [0, 1]), name="model")
found = mlflow.search_runs(filter_string="params.model = 'svd'", output_format="list")
version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "nightly")
MlflowClient().set_registered_model_alias("nightly", "production", version.version)
served = MlflowClient().get_model_version_by_alias("nightly", "production")
print(json.dumps({"run": run.info.run_id, "found": [r.info.run_name for r in found],
                  "production": served.version}))
"""


def test_mlflow_logs_into_the_team_server_with_a_token(
    mlflow_python: Path,
    team: dict[str, Any],  # noqa: F811 - the fixture imported above
    deployment: Any,  # noqa: F811
) -> None:
    """``MLFLOW_TRACKING_URI=https://server/p/NAME`` and ``MLFLOW_TRACKING_TOKEN``: the
    same tokens and grants as everything else on the server."""
    from tests.test_server import admin, client

    url = f"{team['base']}/p/recs"
    os.environ["MLFLOW_TRACKING_TOKEN"] = team["tokens"]["ada"]
    try:
        got = run_mlflow(mlflow_python, url, SERVER_SCRIPT)
    finally:
        del os.environ["MLFLOW_TRACKING_TOKEN"]
    assert got["found"] == ["from-mlflow"] and got["production"] == "1"
    with client(team, "ada") as ada:
        shown = ada.get(f"/p/recs/api/runs/{got['run']}").json()
        assert shown["params"] == {"model": "svd"} and shown["metrics"]["rmse"]["last"] == 0.75
    # bob has no grant: the project is not there for him, through MLflow either.
    with client(team, "bob") as bob:
        hidden = bob.post("/p/recs/api/2.0/mlflow/runs/search", json={})
        assert hidden.status_code == 404
    # With a read grant he searches (a POST that only reads) but may not log.
    admin(deployment, "grant", "bob", "recs", "read")
    with client(team, "bob") as bob:
        assert bob.post("/p/recs/api/2.0/mlflow/runs/search", json={}).status_code == 200
        refused = bob.post("/p/recs/api/2.0/mlflow/runs/create", json={"experiment_id": "0"})
        assert refused.status_code == 403
    # Logging a run's points is not an audit entry each; creating the run is.
    out = admin(deployment, "audit", "--json", "-n", "200")
    actions = [e["object"] for e in json.loads(out[out.index("[") :])]
    assert any("runs/create" in a for a in actions)
    assert not any("log-metric" in a or "log-parameter" in a for a in actions)
