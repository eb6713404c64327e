"""What recording costs: `tether run` next to the bare script, and runs created per second
by `start_run()` in one process next to MLflow's API on SQLite, measured in one run.

    python benchmarks/run_overhead.py [--repeat 5] [--sweep 500] [--mlflow-sweep 200]
                                      [--skip-mlflow]

- overhead: a 0.1 s and a 2 s script (sleep), each run bare and through `tether run` in a
  fresh project, --repeat times; the median difference is what tether adds (start-up,
  code and environment capture, the post-run scan, recording). The first `tether run`
  (which fills the interpreter probe cache) is not timed, as on a user's second run.
- sweep: `tether.start_run()` × --sweep in one process, 5 params and 5 metrics each,
  against MLflow 3.17.2 (its own virtualenv, bench-work/mlflow-venv, created on first
  use) doing the same with `mlflow.start_run()` on a fresh `sqlite:///` store.
Projects are created fresh in new folders; nothing is deleted before a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import mlflow_python

WORK = Path("bench-work") / "run-overhead"

SWEEP = r"""
import sys, time
import tether
n = int(sys.argv[1])
with tether.start_run() as r:
    pass  # the first run lists the packages; a sweep pays that once
t = time.perf_counter()
for i in range(n):
    with tether.start_run(params={f"p{j}": i + j for j in range(5)}) as run:
        for j in range(5):
            run.log_metric(f"m{j}", i * 0.1 + j)
print(n / (time.perf_counter() - t))
"""

MLFLOW_SWEEP = r"""
import os, sys, time
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
import mlflow
mlflow.set_tracking_uri(sys.argv[2])
n = int(sys.argv[1])
with mlflow.start_run():
    pass
t = time.perf_counter()
for i in range(n):
    with mlflow.start_run():
        mlflow.log_params({f"p{j}": i + j for j in range(5)})
        for j in range(5):
            mlflow.log_metric(f"m{j}", i * 0.1 + j)
print(n / (time.perf_counter() - t))
"""


def fresh(name: str) -> Path:
    base = WORK / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    base.mkdir(parents=True)
    return base.resolve()


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t


def overhead(seconds: float, repeat: int) -> tuple[float, float]:
    project = fresh(f"sleep-{seconds}")
    (project / "job.py").write_text(f"import time\ntime.sleep({seconds})\n")
    tether = [sys.executable, "-m", "tether"]
    subprocess.run([*tether, "init"], cwd=project, check=True, capture_output=True)
    subprocess.run([*tether, "run", "--", sys.executable, "job.py"], cwd=project, check=True,
                   capture_output=True)  # fmt: skip
    bare = [timed([sys.executable, "job.py"], project) for _ in range(repeat)]
    ours = [timed([*tether, "run", "--", sys.executable, "job.py"], project) for _ in range(repeat)]
    return statistics.median(bare), statistics.median(ours)


def sweep_rate(n: int) -> float:
    project = fresh("sweep")
    subprocess.run([sys.executable, "-m", "tether", "init"], cwd=project, check=True,
                   capture_output=True)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", SWEEP, str(n)], cwd=project, check=True,
                         capture_output=True, text=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def mlflow_rate(n: int) -> float:
    python = mlflow_python()
    where = fresh("mlflow")
    out = subprocess.run(
        [os.path.abspath(python), "-c", MLFLOW_SWEEP, str(n), f"sqlite:///{where}/mlflow.db"],
        cwd=where,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sweep", type=int, default=500)
    ap.add_argument("--mlflow-sweep", type=int, default=200)
    ap.add_argument("--skip-mlflow", action="store_true")
    args = ap.parse_args()
    results: dict[str, float] = {}
    print(f"{'script':<10} {'bare':>8} {'tether':>8} {'overhead':>9}   (aim: <= 0.25 s)")
    for seconds in (0.1, 2.0):
        bare, ours = overhead(seconds, args.repeat)
        results[f"overhead_{seconds}"] = ours - bare
        print(f"{seconds:<10} {bare:>7.3f}s {ours:>7.3f}s {ours - bare:>8.3f}s")
    ours_rate = sweep_rate(args.sweep)
    results["tether_runs_per_s"] = ours_rate
    print(f"start_run() sweep: tether {ours_rate:,.0f} runs/s", end="")
    if not args.skip_mlflow:
        theirs = mlflow_rate(args.mlflow_sweep)
        results["mlflow_runs_per_s"] = theirs
        print(f", MLflow {theirs:,.0f} runs/s, ratio {ours_rate / theirs:.1f}x", end="")
    print("   (aim: >= 500 runs/s, >= 15x MLflow)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
