"""The web UI at scale: tether ui over HTTP next to plain SQL on the same file and, with
--mlflow, MLflow's tracking server on the same data shape, measured in one run.

    python benchmarks/ui.py [--runs 10000] [--points 1000000] [--repeat 5]
                            [--mlflow] [--mlflow-runs N]

Generates into a fresh project (SQLite, the embedded default) --runs runs with 20
params, 10 metrics and 6 tags each, and one run with a metric of --points points logged
in batches of 10,000 as a training loop would; then starts ``tether ui`` and times, warm
(one call first, then the median of --repeat):

- the first page of the runs table (HTML, 50 rows);
- a filtered page (``metrics.m0 > 0.5 and params.p0 = 'a'``, HTML);
- all runs through the API (``/api/runs?limit=all``);
- the big metric's chart data (``/api/runs/RUN/metrics/big/chart?width=1000``), and its
  size in bytes;
- the big run's page (HTML), and the run through the API (``/api/runs/RUN``);
- the big run's page in headless Chromium (``/usr/bin/chromium`` through Playwright):
  from navigation until the page and every request of its data (the chart's included)
  have finished, warm cache. This is the like-for-like comparison with MLflow, whose run
  page is a script that asks its server for the run (GraphQL), its children
  (``runs/search``) and its model versions.

The baseline is the machine's limit for the same questions: plain ``sqlite3`` on the same
file (50 newest runs with their params, metrics and tags; the filtered ids; every run with
everything; and 1,000 min/max buckets of the big series by GROUP BY). With --mlflow,
MLflow 3.17.2 (``bench-work/mlflow-venv``) gets the same shape through its client into a
SQLite store, then its server answers the equivalents: ``runs/search`` for 50, filtered
and all (paged by 1,000), ``metrics/get-history-bulk-interval`` for the big metric (320
points, its UI's default), ``runs/get`` (next to the run through the API), and its run page
in the same browser.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.runs import record
from tether.workspace import Workspace, init_workspace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import mlflow_python

WORK = Path("bench-work") / "ui"
FILTER = "metrics.m0 > 0.5 and params.p0 = 'a'"


def fresh(name: str, work: Path = WORK) -> Path:
    """A new, never-used directory under ``work`` (nothing is deleted before a timing)."""
    path = work / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True)
    return path


def generate(root: Path, n_runs: int, n_points: int) -> str:
    init_workspace(root, propose_kitfile=False)
    ws = Workspace.open(root)
    rng = random.Random(7)
    now = time.time()
    add_runs(ws, n_runs, rng, now)
    big = runs_repo.create_run(
        ws.db,
        record.NewRun(name="big", command=["python", "train.py"], cwd=".", host="h", user="u",
                      pid=1, started=now, run_id=record.new_run_id(now)),
    )  # fmt: skip
    for start in range(0, n_points, 10_000):
        batch = [
            ("big", i, now + i * 0.001, 1 / (1 + i) + rng.random() * 0.01)
            for i in range(start, min(n_points, start + 10_000))
        ]
        metrics_repo.insert_metrics(ws.db, big, batch)
    runs_repo.finish_run(ws.db, big, "finished", ended=now + n_points * 0.001)
    with ws.db.atomic() as conn:
        conn.execute("ANALYZE")
    ws.close()
    return big


def add_runs(ws: Workspace, n_runs: int, rng: random.Random, now: float) -> None:
    """``n_runs`` finished runs with 20 params, 10 metrics and 6 tags each, in one
    transaction (the shape of every runs-table benchmark)."""
    with ws.db.atomic():
        for i in range(n_runs):
            started = now - n_runs + i
            run_id = runs_repo.create_run(
                ws.db,
                record.NewRun(
                    name=f"run{i}",
                    command=["python", "train.py"],
                    cwd=".",
                    host="h",
                    user="u",
                    pid=1,
                    started=started,
                    run_id=record.new_run_id(started),
                ),
            )
            params = {
                f"p{j}": rng.choice("abcd") if j == 0 else str(rng.random()) for j in range(20)
            }
            runs_repo.log_params(ws.db, run_id, params)
            runs_repo.set_tags(ws.db, run_id, {f"t{j}": rng.choice(["x", "y"]) for j in range(6)})
            metrics_repo.insert_metrics(
                ws.db, run_id, [(f"m{j}", 0, started, rng.random()) for j in range(10)]
            )
            runs_repo.finish_run(ws.db, run_id, "finished", ended=started + 5)


def timed(call: Callable[[], object], repeat: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def page_load(url: str, repeat: int) -> float:
    """Median seconds from navigating to ``url`` until the document has loaded and every
    request for data it made (the document, fetch, XHR, preloads) has finished, with none new for
    0.5 s, after one warm-up load. Scripts and styles come from the warm cache; they are
    not awaited, since a worker script (MLflow's telemetry) never reports finishing."""
    from playwright.sync_api import Request, sync_playwright

    pending: set[Request] = set()
    finished = [0.0]

    def started(request: Request) -> None:
        if request.resource_type in ("document", "fetch", "xhr", "other"):  # other: preload
            pending.add(request)

    def ended(request: Request) -> None:
        if request in pending:
            pending.discard(request)
            finished[0] = time.perf_counter()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", started)
        page.on("requestfinished", ended)
        page.on("requestfailed", ended)

        def once() -> float:
            page.goto("about:blank")
            pending.clear()
            start = time.perf_counter()
            page.goto(url, wait_until="load", timeout=600_000)
            loaded = time.perf_counter()
            while pending or time.perf_counter() - max(finished[0], loaded) < 0.5:
                page.wait_for_timeout(20)
                if time.perf_counter() - start > 600:
                    raise RuntimeError(f"{url} kept loading for 10 minutes")
            return max(finished[0], loaded) - start

        once()
        times = [once() for _ in range(repeat)]
        browser.close()
    return statistics.median(times)


def serve_tether(root: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "-C", str(root), "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    match = re.search(r"(http://\S+?)/?$", proc.stdout.readline().strip())
    assert match, "tether ui did not print its URL"
    return proc, match.group(1)


def measure_tether(url: str, big: str, repeat: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=600) as http:

        def get(path: str, **params: object) -> httpx.Response:
            r = http.get(path, params=params)  # type: ignore[arg-type]
            r.raise_for_status()
            return r

        out["first_page"] = timed(lambda: get("/runs"), repeat)
        out["filtered_page"] = timed(lambda: get("/runs", q=FILTER), repeat)
        out["all_runs"] = timed(lambda: get("/api/runs", limit="all"), max(1, repeat // 2))
        out["all_runs_count"] = len(get("/api/runs", limit="all").json()["runs"])
        chart = f"/api/runs/{big}/metrics/big/chart"
        out["chart"] = timed(lambda: get(chart, width=1000), repeat)
        out["chart_bytes"] = len(get(chart, width=1000).content)
        out["zoom"] = timed(lambda: get(chart, width=1000, lo=400_000, hi=401_000), repeat)
        out["run_page"] = timed(lambda: get(f"/runs/{big}"), repeat)
        out["run_api"] = timed(lambda: get(f"/api/runs/{big}"), repeat)
    out["run_browser"] = page_load(f"{url}/runs/{big}", repeat)
    return out


def measure_sql(db_path: Path, big: str, repeat: int) -> dict[str, float]:
    """The machine's limit: the same answers from plain SQL on the same file."""
    con = sqlite3.connect(db_path)

    def children(ids: list[str]) -> None:
        marks = ",".join("?" * len(ids))
        for table in ("run_params", "run_tags", "run_metric_summary"):
            con.execute(f"SELECT * FROM {table} WHERE run_id IN ({marks})", ids).fetchall()

    def first_page() -> None:
        ids = [r[0] for r in con.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 50")]
        children(ids)

    def filtered() -> None:
        ids = [r[0] for r in con.execute(
            "SELECT r.id FROM runs r JOIN run_metric_summary m ON m.run_id = r.id AND m.key = 'm0'"
            " JOIN run_params p ON p.run_id = r.id AND p.key = 'p0'"
            " WHERE m.last > 0.5 AND p.value = 'a' ORDER BY r.started DESC LIMIT 50")]  # fmt: skip
        children(ids)

    def everything() -> None:
        con.execute("SELECT * FROM runs").fetchall()
        for table in ("run_params", "run_tags", "run_metric_summary"):
            con.execute(f"SELECT * FROM {table}").fetchall()

    def buckets() -> None:
        con.execute(
            "SELECT step / 1000, min(value), max(value), avg(value) FROM run_metrics"
            " WHERE run_id = ? AND key = 'big' GROUP BY step / 1000",
            (big,),
        ).fetchall()

    out = {
        "first_page": timed(first_page, repeat),
        "filtered_page": timed(filtered, repeat),
        "all_runs": timed(everything, max(1, repeat // 2)),
        "chart": timed(buckets, max(1, repeat // 2)),
    }
    con.close()
    return out


# The runs-table shape through MLflow's client (``add_runs`` above, for MLflow): the
# start of every script that runs in MLflow's virtualenv and fills a runs table.
MLFLOW_ADD_RUNS = r"""
import os, time
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
from mlflow.entities import Metric, Param, RunTag

def add_runs(client, exp, n_runs, rng):
    for i in range(n_runs):
        r = client.create_run(exp, run_name=f"run{i}")
        now = int(time.time() * 1000)
        client.log_batch(r.info.run_id,
            metrics=[Metric(f"m{j}", rng.random(), now, 0) for j in range(10)],
            params=[Param(f"p{j}", rng.choice("abcd") if j == 0 else str(rng.random()))
                    for j in range(20)],
            tags=[RunTag(f"t{j}", rng.choice(["x", "y"])) for j in range(6)])
        client.set_terminated(r.info.run_id)
"""

MLFLOW_SCRIPT = (
    MLFLOW_ADD_RUNS
    + r"""
import json, os, random, socket, statistics, subprocess, sys, time
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
import mlflow, httpx
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
n_runs, n_points, db, repeat = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = MlflowClient(tracking_uri=f"sqlite:///{db}")
exp = client.create_experiment("bench")
rng = random.Random(7)
t0 = time.perf_counter()
add_runs(client, exp, n_runs, rng)
big = client.create_run(exp, run_name="big").info.run_id
for start in range(0, n_points, 1000):
    now = int(time.time() * 1000)
    client.log_batch(big, metrics=[Metric("big", 1 / (1 + i), now, i)
                                   for i in range(start, min(n_points, start + 1000))])
client.set_terminated(big)
setup_s = time.perf_counter() - t0
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
    f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
base = f"http://127.0.0.1:{port}"
try:
    for _ in range(600):
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    http = httpx.Client(base_url=base, timeout=3600)
    def timed(call, n):
        call(); times = []
        for _ in range(n):
            t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
        return statistics.median(times)
    def search(**body):
        body = {"experiment_ids": [exp], **body}
        return http.post("/api/2.0/mlflow/runs/search", json=body).json()
    def all_runs():
        token, n = None, 0
        while True:
            page = search(max_results=1000, **({"page_token": token} if token else {}))
            n += len(page.get("runs", []))
            token = page.get("next_page_token")
            if not token:
                return n
    out = {"setup_s": setup_s, "version": mlflow.__version__}
    out["first_page"] = timed(lambda: search(max_results=50), repeat)
    where = "metrics.m0 > 0.5 and params.p0 = 'a'"
    out["filtered_page"] = timed(lambda: search(max_results=50, filter=where), repeat)
    out["all_runs"] = timed(all_runs, 1)
    out["all_runs_count"] = all_runs()
    chart = lambda: http.get("/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                             params={"run_ids": big, "metric_key": "big", "max_results": 320})
    out["chart"] = timed(chart, 1)
    out["chart_bytes"] = len(chart().content)
    get_run = lambda: http.get("/api/2.0/mlflow/runs/get", params={"run_id": big})
    out["run_api"] = timed(get_run, repeat)
    out["run_page_url"] = f"{base}/#/experiments/{exp}/runs/{big}"
    # The caller loads the run page in its browser while this server still runs.
    print(json.dumps(out), flush=True)
    sys.stdin.readline()
finally:
    server.terminate(); server.wait()
"""
)


def measure_mlflow(n_runs: int, n_points: int, repeat: int) -> dict[str, float]:
    python = mlflow_python("httpx:httpx")
    db = (fresh("mlflow") / "mlflow.db").resolve()
    proc = subprocess.Popen(
        [str(python), "-c", MLFLOW_SCRIPT, str(n_runs), str(n_points), str(db), str(repeat)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    try:
        out = json.loads(line)
        out["run_browser"] = page_load(out.pop("run_page_url"), repeat)
    except ValueError:
        raise RuntimeError(f"MLflow failed:\n{proc.communicate()[1][-3000:]}") from None
    finally:
        proc.stdin.close()
        proc.wait()
    return out  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mlflow", action="store_true")
    parser.add_argument("--mlflow-runs", type=int)
    args = parser.parse_args()

    root = fresh("tether")
    start = time.perf_counter()
    big = generate(root, args.runs, args.points)
    setup = time.perf_counter() - start
    proc, url = serve_tether(root)
    try:
        tether = measure_tether(url, big, args.repeat)
    finally:
        proc.terminate()
        proc.wait()
    limit = measure_sql(root / ".tether" / "tether.db", big, args.repeat)
    mlflow = (
        measure_mlflow(args.mlflow_runs or args.runs, args.points, args.repeat)
        if args.mlflow
        else None
    )

    print(f"ui benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; "
          f"{args.runs:,} runs x (20 params, 10 metrics, 6 tags) + 1 metric of "
          f"{args.points:,} points (generated in {setup:.0f} s)")  # fmt: skip
    head = f"{'':34}{'tether ui':>12}{'plain SQL':>12}{'x SQL':>8}"
    if mlflow:
        head += f"{'MLflow':>12}{'tether faster':>15}"
    print(head)
    aims = {"first_page": 0.100, "filtered_page": 0.150, "all_runs": 1.5, "chart": 0.200,
            "run_page": 0.150, "run_browser": 0.150}  # fmt: skip
    labels = {
        "first_page": "first page of runs (ms)",
        "filtered_page": "filtered page (ms)",
        "all_runs": f"all {args.runs:,} runs via API (ms)",
        "chart": f"{args.points:,}-point chart data (ms)",
        "zoom": "  zoom into 1,000 steps (ms)",
        "run_page": "run page, HTML (ms)",
        "run_api": "one run via API (ms)",
        "run_browser": "run page in a browser, data (ms)",
    }
    for key, label in labels.items():
        t = tether[key]
        row = f"  {label:<32}{t * 1000:>12.1f}"
        row += (
            f"{limit[key] * 1000:>12.1f}{t / limit[key]:>8.1f}"
            if key in limit
            else f"{'-':>12}{'-':>8}"
        )
        if mlflow and key in mlflow:
            row += f"{mlflow[key] * 1000:>12.1f}{mlflow[key] / t:>14.0f}x"
        aim = aims.get(key)
        if aim is not None:
            row += f"   aim {aim * 1000:.0f} ms: {'met' if t <= aim else 'MISSED'}"
        print(row)
    size = tether["chart_bytes"]
    row = f"  {'chart data size (bytes)':<32}{size:>12,.0f}"
    if mlflow:
        row += f"{'':>20}{mlflow['chart_bytes']:>12,.0f}"
    print(row + "   aim 1 MB: " + ("met" if size <= 1 << 20 else "MISSED"))
    counts = f"  runs returned by the API: tether {tether['all_runs_count']:,.0f}"
    if mlflow:
        counts += f", MLflow {mlflow['all_runs_count']:,.0f} (its setup {mlflow['setup_s']:.0f} s)"
    print(counts)


if __name__ == "__main__":
    main()
