"""The same unmodified MLflow client script against MLflow's own tracking server and
against tether's MLflow API (``tether ui --writable``), on this machine, in one run.

    python benchmarks/mlflow_api.py [--points 100000] [--runs 1000] [--searches 5]

Both on their embedded default, SQLite: ``mlflow server --backend-store-uri
sqlite:///…`` (MLflow 3.17.2 in ``bench-work/mlflow-venv``, its default workers) and a
fresh tether project. The script (the real ``mlflow`` client, in MLflow's venv):

1. one run, ``--points`` ``log_metric`` points sent with ``log_batch`` in batches of
   1,000 (MLflow's limit per call); then reads the history back and checks it;
2. ``--runs`` runs created, each with 5 params, 3 metrics and its end
   (``create_run``, ``log_batch``, ``set_terminated``);
3. ``search_runs`` over them: ``metrics.rmse < 0.5 and params.model = 'svd'`` ordered by
   ``metrics.rmse``, every page (median of ``--searches``).

Each server gets the same short warm-up first. Printed: each tool's time, and how many
times faster tether is (MLflow's time / tether's). Aim: 5x on each. Then each server's
own time for one log_batch and one search (the client's JSON posted ready-made): the
client library's share is the same against either server, and bounds the ratio above.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import mlflow_python
from server import free_port, wait_healthy

WORK = Path("bench-work") / "mlflow_api"
HEALTH = "/api/2.0/mlflow/experiments/get?experiment_id=0"

SCRIPT = r"""
import json, os, random, statistics, sys, time
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
url, points, runs, searches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
client = MlflowClient(tracking_uri=url)

def phase(exp, points, runs, searches):
    out = {}
    run = client.create_run(exp).info.run_id
    now = int(time.time() * 1000)
    data = [Metric("loss", 1 / (1 + i), now + i, i) for i in range(points)]
    t = time.perf_counter()
    for start in range(0, points, 1000):
        client.log_batch(run, metrics=data[start:start + 1000])
    out["log"] = time.perf_counter() - t
    client.set_terminated(run)
    assert len(client.get_metric_history(run, "loss")) == points
    rng = random.Random(7)
    t = time.perf_counter()
    for i in range(runs):
        r = client.create_run(exp, run_name=f"r{i}").info.run_id
        client.log_batch(r, params=[Param("model", rng.choice(["svd", "als"])),
                                    *(Param(f"p{j}", str(rng.random())) for j in range(4))],
                         metrics=[Metric(k, rng.random(), now, 0) for k in ("rmse", "mae", "r2")])
        client.set_terminated(r)
    out["create"] = time.perf_counter() - t
    times, found = [], 0
    for _ in range(searches):
        t = time.perf_counter()
        page = client.search_runs([exp], "metrics.rmse < 0.5 and params.model = 'svd'",
                                  order_by=["metrics.rmse ASC"], max_results=1000)
        found = len(page)
        while page.token:
            page = client.search_runs([exp], "metrics.rmse < 0.5 and params.model = 'svd'",
                                      order_by=["metrics.rmse ASC"], max_results=1000,
                                      page_token=page.token)
            found += len(page)
        times.append(time.perf_counter() - t)
    out["search"] = statistics.median(times)
    out["found"] = found
    return out

phase(client.create_experiment("warm-up"), 5000, 20, 1)
print(json.dumps(phase(client.create_experiment("measured"), points, runs, searches)))
"""


def measure(python: Path, server: list[str], cwd: Path, health: str, args: argparse.Namespace,
            port: int) -> dict[str, float]:  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = (cwd / "server.log").open("w")
    proc = subprocess.Popen(server, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, health)
        done = subprocess.run(
            [str(python), "-c", SCRIPT, url, str(args.points), str(args.runs),
             str(args.searches)], capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        raw = server_side(url) if done.returncode == 0 else {}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    if done.returncode:
        raise RuntimeError(f"the client failed against {server[:3]}:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), **raw}


def server_side(url: str) -> dict[str, float]:
    """The server's own time: the JSON the client sends, posted ready-made (no client
    library), median of repeats; after the client script, on the same data."""
    import statistics

    import httpx

    def median(post: Any, n: int) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            post().raise_for_status()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    with httpx.Client(base_url=f"{url}/api/2.0/mlflow", timeout=600) as http:
        exp = http.get("/experiments/get-by-name", params={"experiment_name": "measured"})
        exp_id = exp.json()["experiment"]["experiment_id"]
        run = http.post("/runs/create", json={"experiment_id": exp_id}).json()["run"]["info"]
        now = int(time.time() * 1000)
        batches = iter(range(10**9))

        def log() -> httpx.Response:
            b = next(batches) * 1000
            metrics = [{"key": "loss", "value": 1 / (1 + i), "timestamp": now + i, "step": i}
                       for i in range(b, b + 1000)]  # fmt: skip
            return http.post("/runs/log-batch", json={"run_id": run["run_id"], "metrics": metrics})

        body = {"experiment_ids": [exp_id], "max_results": 1000,
                "filter": "metrics.rmse < 0.5 and params.model = 'svd'",
                "order_by": ["metrics.rmse ASC"]}  # fmt: skip
        return {"raw_log": median(log, 20),
                "raw_search": median(lambda: http.post("/runs/search", json=body), 5)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--searches", type=int, default=5)
    args = parser.parse_args()
    python = mlflow_python().absolute()
    WORK.mkdir(parents=True, exist_ok=True)

    where = Path(tempfile.mkdtemp(prefix="tether-", dir=WORK)).resolve()
    subprocess.run(["git", "init", "-q"], cwd=where, check=True)
    subprocess.run([sys.executable, "-m", "tether", "init"], cwd=where, check=True,
                   capture_output=True)  # fmt: skip
    port = free_port()
    ours = measure(python, [sys.executable, "-m", "tether", "ui", "--writable", "--no-open",
                            "--port", str(port)], where, HEALTH, args, port)  # fmt: skip

    where = Path(tempfile.mkdtemp(prefix="mlflow-", dir=WORK)).resolve()
    port = free_port()
    theirs = measure(python, [str(python), "-m", "mlflow", "server", "--backend-store-uri",
                              f"sqlite:///{where}/mlflow.db", "--host", "127.0.0.1",
                              "--port", str(port)], where, "/health", args, port)  # fmt: skip
    assert ours["found"] == theirs["found"], (ours["found"], theirs["found"])

    print(f"MLflow API benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; "
          "the real mlflow 3.17.2 client, SQLite behind both servers")  # fmt: skip
    print(f"{'':52}{'tether':>10}{'MLflow':>10}{'tether faster':>15}")
    rows = (
        (f"log_batch {args.points:,} points, 1,000 per call (s)", "log"),
        (f"create {args.runs:,} runs with params and metrics (s)", "create"),
        (f"search_runs over them, every page, {ours['found']} found (s)", "search"),
    )
    for label, key in rows:
        ratio = theirs[key] / ours[key]
        print(f"  {label:<50}{ours[key]:>10.3f}{theirs[key]:>10.3f}{ratio:>14.1f}x"
              f"   aim 5x: {'met' if ratio >= 5 else 'MISSED'}")  # fmt: skip
    print("the servers' own time, the client's JSON posted ready-made (ms):")
    for label, key in (("one log_batch of 1,000 points", "raw_log"),
                       ("one search_runs page of every match", "raw_search")):  # fmt: skip
        ratio = theirs[key] / ours[key]
        print(f"  {label:<50}{ours[key] * 1000:>10.1f}{theirs[key] * 1000:>10.1f}"
              f"{ratio:>14.1f}x")  # fmt: skip
    floor = {k: ours[k] - ours[f"raw_{k}"] * n for k, n in
             (("log", args.points / 1000), ("search", 1))}  # fmt: skip
    print(
        f"  (the mlflow client's own work, the same whichever server: about "
        f"{floor['log'] / (args.points / 1000) * 1000:.0f} ms per log_batch and "
        f"{floor['search'] * 1000:.0f} ms per search, which bounds any server's ratio)"
    )


if __name__ == "__main__":
    main()
