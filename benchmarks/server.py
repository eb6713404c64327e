"""The team server under load: live metric streams from 16 clients into one and into two
``tether server`` processes, and the runs table at 10,000 runs over HTTP, next to MLflow's
tracking server on the same PostgreSQL, measured in one run.

    python benchmarks/server.py [--clients 16] [--points 20000] [--runs 10000]
                                [--mlflow-runs 2000] [--skip-mlflow]

One durable PostgreSQL cluster (Debian's binaries, fsync on, 127.0.0.1) holds both
tools' databases. For tether: a deployment with one user, a token and a project per
measurement; the clients are separate processes using the library's own stream
(``tether.team.stream.RunStream``, what ``tether run`` uses when connected): each makes
a run and offers --points points in flushes of 10,000, as a training loop's buffer
would, then waits until the server acknowledged every point. Points/s = all points /
the time from a common start to the last acknowledgement. Then the server's copy is
checked: every run holds exactly its points.

The runs table: --runs runs (20 params, 10 metrics, 6 tags each) written into a project
through the library, then, over HTTP with a token, the first page of the runs page (HTML)
and a filtered page through the API (median of 5, warm).

MLflow 3.17.2 (``bench-work/mlflow-venv``): ``mlflow server`` on a database of the same
cluster with the same number of workers; 16 client processes each log --points points
with ``log_batch`` (1,000 per call, its limit) to their own run; then --mlflow-runs runs
through its API and ``runs/search`` for the first 50 with the same filter (fewer runs
than tether's table, which only flatters MLflow).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.pgcluster import Cluster, cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import mlflow_python
from ui import MLFLOW_ADD_RUNS, add_runs, fresh, timed

WORK = Path("bench-work") / "server"
FILTER = "metrics.m0 > 0.5 and params.p0 = 'a'"
FLUSH = 10_000  # points per flush, as tether.runs.api.BATCH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, path: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


class Team:
    """A deployment on the cluster and the servers started over it."""

    def __init__(self, pg: Cluster) -> None:
        pg.admin("CREATE DATABASE tether_team")
        self.db = pg.url("tether_team")
        self.blobs = fresh("blobs", WORK).resolve()
        self.servers: list[subprocess.Popen[str]] = []
        self.admin("user", "add", "bench")
        out = self.admin("token", "create", "bench", "--json")
        self.token = str(json.loads(out[out.index("{") :])["token"])

    def admin(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tether", "server", "--db", self.db,
             "--blobs", str(self.blobs), *args],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return done.stdout

    def project(self, name: str) -> str:
        self.admin("project", "add", name)
        self.admin("grant", "bench", name, "write")
        return name

    def serve(self) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "server", "--db", self.db,
             "--blobs", str(self.blobs), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.servers.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, "/healthz")
        return url

    def stop(self) -> None:
        for proc in self.servers:
            proc.terminate()
            proc.wait(timeout=30)
        self.servers.clear()


def _client(
    base: str, project: str, token: str, index: int, points: int, barrier: Any, out: Any
) -> None:
    # What a training process has loaded long before its metrics flow (the stream
    # imports them on its first batch): not part of what ingest costs.
    import orjson  # noqa: F401
    import zstandard  # noqa: F401

    from tether.runs.record import NewRun, new_run_id
    from tether.team.stream import RunStream
    from tether.team.sync import StreamEnd

    run_id = new_run_id()
    header = NewRun(name=f"client{index}", command=["python", "train.py"], cwd=".",
                    host=f"host{index}", user="bench", pid=index + 1, started=time.time(),
                    run_id=run_id)  # fmt: skip
    now = time.time()
    data = [("loss", i, now + i * 0.001, 1 / (1 + i)) for i in range(points)]
    barrier.wait()
    stream = RunStream(base, project, token, header, 0)
    for start in range(0, points, FLUSH):
        stream.offer(data[start : start + FLUSH])
    stream.finish(StreamEnd("finished", 0, None, time.time()))
    out.put((run_id, stream.close(timeout=900)))


class _NoBarrier:
    def wait(self) -> None:
        pass


def ingest(team: Team, bases: list[str], clients: int, points: int) -> float:
    """Points/s from ``clients`` processes streaming to ``bases`` in turn; checks that the
    server holds each run's points exactly."""
    project = team.project(f"ingest{len(bases)}")
    # Warm each server process first (its lazy imports, its connections), as a server
    # that has been up for a while is: a short stream of its own.
    warm = multiprocessing.get_context("fork").Queue()
    for base in bases:
        _client(base, project, team.token, 99, 2_000, _NoBarrier(), warm)
        warm.get(timeout=60)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_client,
            args=(bases[i % len(bases)], project, team.token, i, points, barrier, results),
        )
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    done = [results.get(timeout=1800) for _ in procs]
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    bad = [state for _, state in done if state != "done"]
    if bad:
        raise RuntimeError(f"streams ended {bad}")
    with httpx.Client(
        base_url=bases[0], headers={"Authorization": f"Bearer {team.token}"}, timeout=600
    ) as http:
        listed = http.get(f"/p/{project}/api/runs", params={"limit": "all"}).json()["runs"]
    counts = {r["id"]: r["metrics"]["loss"]["count"] for r in listed if r["name"] != "client99"}
    if sorted(counts) != sorted(r for r, _ in done) or set(counts.values()) != {points}:
        raise RuntimeError(f"the server holds other points than were sent: {counts}")
    return clients * points / elapsed


def runs_table(team: Team, base: str, n_runs: int) -> dict[str, float]:
    from tether.team.deployment import Deployment

    project = team.project("table")
    deployment = Deployment(team.db, team.blobs)
    ws = deployment.project(project)
    add_runs(ws, n_runs, random.Random(7), time.time())
    with ws.db.atomic() as conn:
        conn.execute("ANALYZE")
    deployment.close()
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {team.token}"}, timeout=600
    ) as http:

        def get(path: str, **params: str) -> None:
            http.get(path, params=params).raise_for_status()

        return {
            "page": timed(lambda: get(f"/p/{project}/runs"), 5),
            "filtered": timed(lambda: get(f"/p/{project}/api/runs", q=FILTER), 5),
        }


MLFLOW_SCRIPT = (
    MLFLOW_ADD_RUNS
    + r"""
import json, multiprocessing, os, random, statistics, sys, time
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
import httpx
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
url, clients, points, n_runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
client = MlflowClient(tracking_uri=url)

def worker(exp, index, barrier, out):
    c = MlflowClient(tracking_uri=url)
    run = c.create_run(exp, run_name=f"client{index}").info.run_id
    now = int(time.time() * 1000)
    data = [Metric("loss", 1 / (1 + i), now + i, i) for i in range(points)]
    barrier.wait()
    for start in range(0, points, 1000):
        c.log_batch(run, metrics=data[start:start + 1000])
    c.set_terminated(run)
    out.put(run)

def ingest(label):
    exp = client.create_experiment(label)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(exp, i, barrier, out)) for i in range(clients)]
    for p in procs: p.start()
    barrier.wait(); start = time.perf_counter()
    runs = [out.get(timeout=3600) for _ in procs]
    elapsed = time.perf_counter() - start
    for p in procs: p.join()
    held = sum(len(client.get_metric_history(r, "loss")) for r in runs)
    assert held == clients * points, held
    return clients * points / elapsed

result = {"ingest": ingest(sys.argv[5])}
if n_runs:
    rng = random.Random(7)
    exp = client.create_experiment("table")
    add_runs(client, exp, n_runs, rng)
    http = httpx.Client(base_url=url, timeout=600)
    body = {"experiment_ids": [exp], "max_results": 50,
            "filter": "metrics.m0 > 0.5 and params.p0 = 'a'"}
    def search():
        http.post("/api/2.0/mlflow/runs/search", json=body).raise_for_status()
    search(); times = []
    for _ in range(5):
        t = time.perf_counter(); search(); times.append(time.perf_counter() - t)
    result["filtered"] = statistics.median(times)
print(json.dumps(result))
"""
)


def mlflow(pg: Cluster, workers: int, clients: int, points: int, n_runs: int) -> dict[str, float]:
    python = mlflow_python("psycopg[binary]:psycopg", "httpx:httpx").absolute()
    name = f"mlflow{workers}"
    pg.admin(f"CREATE DATABASE {name}")
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    where = fresh(name, WORK).resolve()
    log = (where / "server.log").open("w")
    server = subprocess.Popen(
        [str(python), "-m", "mlflow", "server", "--backend-store-uri", pg.url(name),
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=where, stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(url, "/health")
        except RuntimeError:
            raise RuntimeError(
                f"MLflow's server did not start; see {where / 'server.log'}"
            ) from None
        out = subprocess.run(
            [str(python), "-c", MLFLOW_SCRIPT, url, str(clients), str(points), str(n_runs),
             f"ingest{workers}"],
            check=False, capture_output=True, text=True, env=env,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    if out.returncode:
        raise RuntimeError(f"MLflow failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--mlflow-runs", type=int, default=2_000)
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()

    with cluster(Path(tempfile.mkdtemp(prefix="tether-bench-pg-")), durable=True) as pg:
        team = Team(pg)
        try:
            one = team.serve()
            tether1 = ingest(team, [one], args.clients, args.points)
            table = runs_table(team, one, args.runs)
            two = team.serve()
            tether2 = ingest(team, [one, two], args.clients, args.points)
        finally:
            team.stop()
        peer1 = peer2 = None
        if not args.skip_mlflow:
            peer1 = mlflow(pg, 1, args.clients, args.points, args.mlflow_runs)
            peer2 = mlflow(pg, 2, args.clients, args.points, 0)

    total = args.clients * args.points
    print(f"server benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; "
          f"PostgreSQL (fsync on) on 127.0.0.1; {args.clients} clients x "
          f"{args.points:,} points = {total:,} points per measurement")  # fmt: skip
    head = f"{'':44}{'tether':>12}"
    if peer1:
        head += f"{'MLflow':>12}{'tether faster':>15}"
    print(head)

    def row(label: str, ours: float, theirs: float | None, fmt: str, aim: str) -> None:
        line = f"  {label:<42}{ours:>12{fmt}}"
        if theirs is not None:
            ratio = ours / theirs if "points/s" in label else theirs / ours
            line += f"{theirs:>12{fmt}}{ratio:>14.1f}x"
        print(line + f"   {aim}")

    aim = 200_000
    row("ingest, 1 server process (points/s)", tether1, peer1 and peer1["ingest"], ",.0f",
        f"aim {aim:,}: {'met' if tether1 >= aim else 'MISSED'}")  # fmt: skip
    row("ingest, 2 server processes (points/s)", tether2, peer2 and peer2["ingest"], ",.0f",
        f"aim {aim:,}: {'met' if tether2 >= aim else 'MISSED'}")  # fmt: skip
    row(f"runs page, {args.runs:,} runs, HTML (ms)", table["page"] * 1000, None, ".1f",
        f"aim 150 ms: {'met' if table['page'] <= 0.150 else 'MISSED'}")  # fmt: skip
    theirs = peer1 and peer1.get("filtered")
    row("filtered page via API (ms)", table["filtered"] * 1000,
        theirs * 1000 if theirs else None, ".1f",
        f"aim 150 ms: {'met' if table['filtered'] <= 0.150 else 'MISSED'}"
        + (f" (MLflow over {args.mlflow_runs:,} runs)" if theirs else ""))  # fmt: skip


if __name__ == "__main__":
    main()
