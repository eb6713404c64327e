"""Experiment tracking: tether on SQLite and on PostgreSQL, next to MLflow on the same
engines, measured in one run.

    python benchmarks/tracking.py [--points 100000] [--runs 10000] [--mlflow-points 2000]
                                  [--mlflow-runs 10000] [--repeat 3] [--skip-mlflow]
                                  [--skip-postgres]

Measures, on this machine, in this run, for each engine (SQLite: a file in WAL mode;
PostgreSQL: a throwaway local cluster from Debian's binaries, fsync on, on 127.0.0.1):

- limit: the engine's bulk insert rate for rows shaped like metric points (one
  transaction: executemany on SQLite, COPY on PostgreSQL) — what any logger can at best
  reach on it;
- tether: ``run.log_metric`` × --points from one run, flush included (best of --repeat);
- tether: ``runs list`` with ``metrics.acc > 0.5 and params.lr = '0.01'`` over --runs
  runs, fetching every hit with its params, metrics and tags (median of 5), and the
  same with the CLI's default limit of 50;
- MLflow 3.17.2 in its own virtualenv (``bench-work/mlflow-venv``, created on first use
  with pip, psycopg2 for PostgreSQL), tracking URI on the same engine: ``log_metric`` ×
  --mlflow-points (its rate is far lower, so the count is smaller; rates are compared),
  ``log_batch`` of 1,000 × 100 batches, and ``MlflowClient.search_runs`` with the same
  filter over --mlflow-runs runs created through its API.

Setup of the tether runs goes through the library's own recording calls in one
transaction (not timed). Every project and database is created fresh, so no timing
follows a mass delete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.repositories.run_filter import list_runs
from tether.runs import record
from tether.runs.api import start_run
from tether.workspace import Workspace, init_workspace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.pgcluster import Cluster, cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import mlflow_python

WORK = Path("bench-work") / "tracking"
FILTER = "metrics.acc > 0.5 and params.lr = '0.01'"
MLFLOW_FILTER = "metrics.acc > 0.5 and params.lr = '0.01'"
_names = iter(range(1_000_000))

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


@dataclass
class Engine:
    """Where a measurement records: SQLite (url None: the project's own file) or a new
    database on the PostgreSQL cluster for each project."""

    name: str
    pg: Cluster | None = None

    def new_url(self) -> str | None:
        if self.pg is None:
            return None
        name = f"bench{next(_names)}"
        self.pg.admin(f"CREATE DATABASE {name}")
        return self.pg.url(name)

    def project(self, label: str) -> Path:
        root = fresh(f"{label}-{self.name}")
        init_workspace(root, propose_kitfile=False, database_url=self.new_url())
        return root


def floor(engine: Engine, n: int) -> float:
    rows = [("r" * 26, "loss", i, time.time(), 1.0 / (i + 1)) for i in range(n)]
    if engine.pg is None:
        db = sqlite3.connect(fresh("floor") / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE m (run_id TEXT, key TEXT, step INTEGER, at REAL, value REAL)")
        db.execute("CREATE INDEX m_series ON m (run_id, key, step)")
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        db.close()
        return n / elapsed
    import psycopg

    url = engine.new_url()
    assert url is not None
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE m (run_id text, key text, step bigint, at double precision,"
            " value double precision)"
        )
        conn.execute("CREATE INDEX m_series ON m (run_id, key, step)")
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY m FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return n / (time.perf_counter() - start)


def tether_logging(engine: Engine, points: int) -> float:
    root = engine.project("log")
    with start_run(project=root, watch_files=False) as run:
        start = time.perf_counter()
        for i in range(points):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
        run.flush()
        elapsed = time.perf_counter() - start
        run_id = run.id
    ws = Workspace.open(root)
    stored = len(metrics_repo.metric_series(ws.db, run_id)["loss"])
    assert stored == points, (stored, points)
    ws.close()
    return points / elapsed


def tether_runs(engine: Engine, n: int) -> Workspace:
    ws = Workspace.open(engine.project("query"))
    rng = random.Random(7)
    now = time.time()
    with ws.db.atomic():
        for i in range(n):
            started = now - n + i
            new = record.NewRun(
                name=f"run{i}",
                command=[],
                cwd=".",
                host="h",
                user="u",
                pid=1,
                started=started,
                run_id=record.new_run_id(started),
            )
            run_id = runs_repo.create_run(ws.db, new)
            runs_repo.log_params(
                ws.db, run_id, {"lr": rng.choice(["0.1", "0.01", "0.001"]), "k": str(i % 50)}
            )
            runs_repo.set_tags(ws.db, run_id, {"team": rng.choice(["recs", "search"])})
            metrics_repo.insert_metrics(
                ws.db, run_id, [("acc", 0, now, rng.random()), ("loss", 0, now, rng.random())]
            )
            runs_repo.finish_run(ws.db, run_id, "finished", ended=started + 5)
    with ws.db.atomic() as conn:
        conn.execute("ANALYZE")  # fresh statistics for the planner, on either engine
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


def mlflow(points: int, runs: int, uri: str) -> dict[str, float]:
    python = mlflow_python("psycopg2-binary:psycopg2")
    out = subprocess.run(
        [str(python), "-c", MLFLOW_SCRIPT, str(points), str(runs), uri, MLFLOW_FILTER],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    if out.returncode:
        raise RuntimeError(f"MLflow failed on {uri}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@contextlib.contextmanager
def engine(name: str) -> Iterator[Engine]:
    """SQLite, or a durable PostgreSQL cluster that lives only while it is measured (its
    background workers would otherwise share the cores with the SQLite figures)."""
    if name == "sqlite":
        yield Engine("sqlite")
        return
    with cluster(Path(tempfile.mkdtemp(prefix="tether-bench-pg-")), durable=True) as pg:
        yield Engine("postgresql", pg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--mlflow-points", type=int, default=2_000)
    parser.add_argument("--mlflow-runs", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    mlflow_runs = args.mlflow_runs or args.runs

    rows: dict[str, dict[str, float]] = {}
    for name in ("sqlite",) if args.skip_postgres else ("sqlite", "postgresql"):
        with engine(name) as measured:
            r = rows.setdefault(name, {})
            r["floor"] = max(floor(measured, args.points) for _ in range(args.repeat))
            r["log"] = max(tether_logging(measured, args.points) for _ in range(args.repeat))
            ws = tether_runs(measured, args.runs)
            r["q_all"], r["hits"] = time_query(ws, None)
            r["q_50"], _ = time_query(ws, 50)
            ws.close()
            if not args.skip_mlflow:
                if measured.pg is None:
                    uri = f"sqlite:///{(fresh('mlflow') / 'mlflow.db').resolve()}"
                else:
                    # MLflow's SQLAlchemy reads the driver from the scheme.
                    uri = str(measured.new_url()).replace("postgresql://", "postgresql+psycopg2://")
                m = mlflow(args.mlflow_points, mlflow_runs, uri)
                r.update({f"mlflow_{k}": v for k, v in m.items() if k != "version"})
                print(f"  (mlflow {m['version']} on {measured.name} measured)", file=sys.stderr)

    names = list(rows)
    print(f"tracking benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
    print(f"{'':44}" + "".join(f"{n:>16}" for n in names))

    def line(label: str, key: str, fmt: str, scale: float = 1.0) -> None:
        cells = [format(rows[n][key] * scale, fmt) if key in rows[n] else "-" for n in names]
        print(f"  {label:<42}" + "".join(f"{c:>16}" for c in cells))

    line("limit: bulk insert, 1 txn (rows/s)", "floor", ",.0f")
    line(f"tether log_metric x {args.points:,} (points/s)", "log", ",.0f")
    for n in names:
        rows[n]["log_share"] = rows[n]["log"] / rows[n]["floor"]
    line("  share of the limit", "log_share", ".0%")
    line(f"tether runs list, {args.runs:,} runs, all hits (ms)", "q_all", ".1f", 1000)
    line(f"tether runs list, {args.runs:,} runs, first 50 (ms)", "q_50", ".1f", 1000)
    line("  hits", "hits", ",.0f")
    if args.skip_mlflow:
        return
    for n in names:
        r = rows[n]
        r["x_log"] = r["log"] / r["mlflow_log_metric_pps"]
        r["x_batch"] = r["log"] / r["mlflow_log_batch_pps"]
        r["x_search"] = r["mlflow_search_s"] / r["q_all"]
    line(f"mlflow log_metric x {args.mlflow_points:,} (points/s)", "mlflow_log_metric_pps", ",.0f")
    line("  tether faster by", "x_log", ",.0f")
    line("mlflow log_batch 100 x 1,000 (points/s)", "mlflow_log_batch_pps", ",.0f")
    line("  tether faster by", "x_batch", ",.1f")
    line("mlflow create+log_batch+end (runs/s)", "mlflow_create_runs_per_s", ",.1f")
    line(f"mlflow search_runs, {mlflow_runs:,} runs (ms)", "mlflow_search_s", ".1f", 1000)
    line("  hits", "mlflow_search_hits", ",.0f")
    line("  tether (all hits) faster by", "x_search", ",.1f")


if __name__ == "__main__":
    main()
