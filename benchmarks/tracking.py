"""Experiment tracking: tether next to MLflow (SQLite backend), measured in one run.

    python benchmarks/tracking.py [--points 100000] [--runs 10000] [--mlflow-points 2000]
                                  [--mlflow-runs 10000] [--repeat 3] [--skip-mlflow]

Measures, on this machine, in this run:

- limit: SQLite's bulk insert rate for rows shaped like metric points (one
  transaction, WAL) — what any logger on SQLite can at best reach;
- tether: ``run.log_metric`` × --points from one run, flush included (best of --repeat);
- tether: ``runs list`` with ``metrics.acc > 0.5 and params.lr = '0.01'`` over --runs
  runs, fetching every hit with its params, metrics and tags (median of 5), and the
  same with the CLI's default limit of 50;
- MLflow 3.17.2 in its own virtualenv (``bench-work/mlflow-venv``, created on first use
  with pip), tracking URI ``sqlite:///…``: ``log_metric`` × --mlflow-points (its rate is
  ~150 points/s, so the count is smaller; rates are compared), ``log_batch`` of 1,000 ×
  100 batches, and ``MlflowClient.search_runs`` with the same filter over --mlflow-runs
  runs created through its API.

Setup of the 10,000 tether runs is one SQL transaction through the same statements the
library uses (not timed). Every project and database is created fresh in a new
directory, so no timing follows a mass delete.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tether.runs import record
from tether.runs.api import start_run
from tether.runs.query import list_runs
from tether.workspace import Workspace, init_workspace

WORK = Path("bench-work") / "tracking"
VENV = Path("bench-work") / "mlflow-venv"
FILTER = "metrics.acc > 0.5 and params.lr = '0.01'"
MLFLOW_FILTER = "metrics.acc > 0.5 and params.lr = '0.01'"

MLFLOW_SCRIPT = r"""
import json, os, random, statistics, sys, time
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
t0 = time.perf_counter()
import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
import_s = time.perf_counter() - t0
points, n_runs = int(sys.argv[1]), int(sys.argv[2])
mlflow.set_tracking_uri(sys.argv[3])
client = MlflowClient()
exp = client.create_experiment("bench")
out = {"version": mlflow.__version__, "import_s": import_s}

run = client.create_run(exp)
start = time.perf_counter()
for i in range(points):
    client.log_metric(run.info.run_id, "loss", 1.0 / (i + 1), step=i)
out["log_metric_pps"] = points / (time.perf_counter() - start)

run = client.create_run(exp)
start = time.perf_counter()
for b in range(100):
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[
        Metric("loss", 1.0 / (b * 1000 + i + 1), now, b * 1000 + i) for i in range(1000)])
out["log_batch_pps"] = 100_000 / (time.perf_counter() - start)

rng = random.Random(7)
search_exp = client.create_experiment("search")
start = time.perf_counter()
for i in range(n_runs):
    r = client.create_run(search_exp)
    now = int(time.time() * 1000)
    client.log_batch(r.info.run_id,
        metrics=[Metric("acc", rng.random(), now, 0), Metric("loss", rng.random(), now, 0)],
        params=[Param("lr", rng.choice(["0.1", "0.01", "0.001"])), Param("k", str(i % 50))],
        tags=[RunTag("team", rng.choice(["recs", "search"]))])
    client.set_terminated(r.info.run_id)
out["create_runs_per_s"] = n_runs / (time.perf_counter() - start)
times = []
for _ in range(5):
    start = time.perf_counter()
    hits = client.search_runs([search_exp], sys.argv[4], max_results=50000)
    times.append(time.perf_counter() - start)
out["search_s"] = statistics.median(times)
out["search_hits"] = len(hits)
print(json.dumps(out))
"""


def fresh(name: str) -> Path:
    """A new, never-used directory (nothing is deleted before a timing)."""
    for n in range(1000):
        path = WORK / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{n}"
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise RuntimeError("no fresh directory")


def sqlite_floor(n: int) -> float:
    db = sqlite3.connect(fresh("floor") / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE m (run_id TEXT, key TEXT, step INTEGER, at REAL, value REAL)")
    db.execute("CREATE INDEX m_series ON m (run_id, key, step)")
    rows = [("r" * 26, "loss", i, time.time(), 1.0 / (i + 1)) for i in range(n)]
    start = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return n / elapsed


def tether_logging(points: int) -> float:
    root = fresh("log")
    init_workspace(root, propose_kitfile=False)
    with start_run(project=root, watch_files=False) as run:
        start = time.perf_counter()
        for i in range(points):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
        run.flush()
        elapsed = time.perf_counter() - start
    ws = Workspace.open(root)
    stored = ws.db.query("SELECT count(*) AS n FROM run_metrics")[0]["n"]
    assert stored == points, (stored, points)
    ws.close()
    return points / elapsed


def tether_runs(n: int) -> Workspace:
    root = fresh("query")
    init_workspace(root, propose_kitfile=False)
    ws = Workspace.open(root)
    rng = random.Random(7)
    now = time.time()
    with ws.db.atomic() as conn:
        for i in range(n):
            run_id = record.new_run_id(now - n + i)
            conn.execute(
                "INSERT INTO runs (id, name, status, command, cwd, started, ended, host, user,"
                " pid, code, capture) VALUES (?, ?, 'finished', '[]', '.', ?, ?, 'h', 'u', 1,"
                " '{}', '{}')",
                (run_id, f"run{i}", now - n + i, now - n + i + 5),
            )
            for key, value in (("lr", rng.choice(["0.1", "0.01", "0.001"])), ("k", str(i % 50))):
                conn.execute(
                    "INSERT INTO run_params VALUES (?, ?, ?, ?)",
                    (run_id, key, *record.value_text(value)),
                )
            conn.execute(
                "INSERT INTO run_tags VALUES (?, 'team', ?, NULL)",
                (run_id, rng.choice(["recs", "search"])),
            )
            for key in ("acc", "loss"):
                v = rng.random()
                conn.execute(
                    "INSERT INTO run_metrics VALUES (?, ?, 0, ?, ?)", (run_id, key, now, v)
                )
                conn.execute(
                    "INSERT INTO run_metric_summary VALUES (?, ?, ?, 0, ?, ?, ?, 1)",
                    (run_id, key, v, now, v, v),
                )
    ws.db.conn.execute("ANALYZE")
    return ws


def time_query(ws: Workspace, limit: int | None) -> tuple[float, int]:
    times = []
    hits = 0
    for _ in range(5):
        start = time.perf_counter()
        result = list_runs(ws.db, where=FILTER, limit=limit)
        times.append(time.perf_counter() - start)
        hits = len(result.runs)
    return statistics.median(times), hits


def mlflow(points: int, runs: int) -> dict[str, float]:
    python = VENV / "bin" / "python"
    if not python.exists():
        print("creating the MLflow virtualenv (once)…", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "mlflow==3.17.2"], check=True)
    db = fresh("mlflow") / "mlflow.db"
    out = subprocess.run(
        [
            str(python),
            "-c",
            MLFLOW_SCRIPT,
            str(points),
            str(runs),
            f"sqlite:///{db.resolve()}",
            MLFLOW_FILTER,
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--mlflow-points", type=int, default=2_000)
    parser.add_argument("--mlflow-runs", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()

    floor = max(sqlite_floor(args.points) for _ in range(args.repeat))
    log_pps = max(tether_logging(args.points) for _ in range(args.repeat))
    ws = tether_runs(args.runs)
    q_all, hits = time_query(ws, None)
    q_50, _ = time_query(ws, 50)
    ws.close()

    print(f"tracking benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
    print(f"  limit  SQLite bulk insert, 1 txn, WAL:        {floor:>12,.0f} rows/s")
    print(
        f"  tether log_metric x {args.points:,}:            {log_pps:>12,.0f} points/s"
        f"  ({log_pps / floor:.0%} of the limit)"
    )
    print(f"  tether runs list, {args.runs:,} runs, all {hits} hits: {q_all * 1000:>8.1f} ms")
    print(f"  tether runs list, {args.runs:,} runs, first 50:     {q_50 * 1000:>8.1f} ms")
    if args.skip_mlflow:
        return
    m = mlflow(args.mlflow_points, args.mlflow_runs or args.runs)
    print(f"  mlflow {m['version']} (sqlite), import {m['import_s']:.2f} s")
    print(
        f"  mlflow log_metric x {args.mlflow_points:,}:            "
        f"{m['log_metric_pps']:>12,.0f} points/s  -> tether {log_pps / m['log_metric_pps']:,.0f}x"
    )
    print(
        f"  mlflow log_batch 100 x 1,000:           {m['log_batch_pps']:>12,.0f} points/s"
        f"  -> tether {log_pps / m['log_batch_pps']:,.1f}x"
    )
    print(f"  mlflow create+log_batch+end runs:       {m['create_runs_per_s']:>12,.1f} runs/s")
    print(
        f"  mlflow search_runs, {args.mlflow_runs or args.runs:,} runs, {m['search_hits']} hits:"
        f" {m['search_s'] * 1000:>8.1f} ms  -> tether {m['search_s'] / q_all:,.1f}x faster"
    )


if __name__ == "__main__":
    main()
