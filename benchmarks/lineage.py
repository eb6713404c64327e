"""Lineage over many runs: tether's indexed walk next to scanning every run record.

    python benchmarks/lineage.py [--runs 1000 10000] [--repeat 5]

For each size N, a fresh project gets N finished runs (one SQL transaction through
the library's tables, not timed): every run reads the same data file plus one of 100
feature files, writes a model, the model is packed into a ModelKit, and every tenth
ModelKit is a version of model ``big`` with an alias on the last one; a chain of 50
runs each reads the previous one's output. Then, median of --repeat:

- tether ``lineage --downstream`` of the shared data file: every run, model, ModelKit,
  version and alias it reached (the "which models used this file?" question);
- tether upstream lineage of the aliased version (the run, its data, the runs that
  made that data);
- tether upstream lineage through the 50-run chain;
- baselines: what a tracker without an edge index does — load every run with its files
  (``load_runs``) and filter in Python: for the downstream question, the runs that read
  the file (fewer facts than tether's answer, which goes on to outputs, ModelKits,
  versions and aliases); for the upstream one, the runs that produced the version's
  run's inputs.

Prints times and the ratio tether / baseline (below 1 means tether is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tether.hashing import Digest
from tether.lineage import lineage
from tether.repositories.runs import load_runs
from tether.workspace import Workspace, init_workspace

WORK = Path("bench-work") / "lineage"
T = TypeVar("T")


def populate(ws: Workspace, n: int) -> tuple[str, int]:
    shared = str(Digest.of_bytes(b"ratings"))
    features = [str(Digest.of_bytes(f"features {i}".encode())) for i in range(100)]
    t0 = time.time()
    last_version = 0
    with ws.db.atomic() as conn:
        conn.execute("INSERT INTO models (name, created, user) VALUES ('big', 0, 'u')")
        for i in range(n):
            run_id = f"r{i:07d}"
            conn.execute(
                "INSERT INTO runs (id, name, status, command, cwd, started, host, user, pid,"
                " seed, code) VALUES (?, ?, 'finished', '[\"python\", \"train.py\"]', '.', ?,"
                " 'h', 'u', 1, ?, '{\"commit\": \"abc\"}')",
                (run_id, f"train-{i}", t0 + i, i),
            )
            conn.executemany(
                "INSERT INTO run_params VALUES (?, ?, ?, NULL)",
                [(run_id, "lr", "0.01"), (run_id, "k", str(i % 50))],
            )
            model = str(Digest.of_bytes(f"model {i}".encode()))
            kit = str(Digest.of_bytes(f"kit {i}".encode()))
            conn.executemany(
                "INSERT INTO run_files VALUES (?, ?, ?, ?, 1, 'audit', 0)",
                [
                    (run_id, "input", "data/ratings.csv", shared),
                    (run_id, "input", "data/features.csv", features[i % 100]),
                    (run_id, "output", "models/model.pkl", model),
                ],
            )
            conn.execute("INSERT INTO kit_runs VALUES (?, ?, 'from-run')", (kit, run_id))
            if i % 10 == 0:
                last_version = i // 10 + 1
                conn.execute(
                    "INSERT INTO model_versions (model, version, digest, run_id, source,"
                    " created, user) VALUES ('big', ?, ?, ?, 'x', 0, 'u')",
                    (last_version, kit, run_id),
                )
        conn.execute("INSERT INTO model_aliases VALUES ('big', 'production', ?)", (last_version,))
        previous = shared
        for j in range(50):  # a pipeline: each step reads the previous step's output
            run_id = f"c{j:07d}"
            conn.execute(
                "INSERT INTO runs (id, name, status, command, cwd, started, host, user, pid)"
                " VALUES (?, ?, 'finished', '[]', '.', ?, 'h', 'u', 1)",
                (run_id, f"step-{j}", t0 + n + j),
            )
            out = str(Digest.of_bytes(f"step {j}".encode()))
            conn.executemany(
                "INSERT INTO run_files VALUES (?, ?, ?, ?, 1, 'audit', 0)",
                [(run_id, "input", f"s{j}.in", previous), (run_id, "output", f"s{j}.out", out)],
            )
            previous = out
    return shared, last_version


def median_time(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def scan_downstream(ws: Workspace, digest: str) -> int:
    ids = [r["id"] for r in ws.db.query("SELECT id FROM runs")]
    runs = load_runs(ws.db, ids)
    return sum(1 for r in runs if any(f.digest == digest for f in r.files_with_role("input")))


def scan_upstream(ws: Workspace, run_id: str) -> int:
    (run,) = load_runs(ws.db, [run_id])
    inputs = {f.digest for f in run.files_with_role("input")}
    ids = [r["id"] for r in ws.db.query("SELECT id FROM runs")]
    return sum(
        1
        for r in load_runs(ws.db, ids)
        if any(f.digest in inputs for f in r.files_with_role("output"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"{'runs':>7}  {'question':<38} {'tether':>10} {'scan':>10} {'ratio':>7}")
    for n in args.runs:
        measure(n, args.repeat)


def measure(n: int, repeat: int) -> None:
    root = WORK / f"p{n}-{time.time_ns()}"
    root.mkdir(parents=True)
    init_workspace(root, propose_kitfile=False)
    ws = Workspace.open(root)
    shared, last = populate(ws, n)
    down_s, graph = median_time(
        lambda: lineage(ws, f"path:data/ratings.csv@{shared}", downstream=True), repeat
    )
    scan_s, hits = median_time(lambda: scan_downstream(ws, shared), repeat)
    assert len(graph.of_kind("run")) == n + 50 and hits == n + 1  # + the chain's runs
    up_s, up = median_time(lambda: lineage(ws, "big:production"), repeat)
    last_run = f"r{(last - 1) * 10:07d}"
    up_scan_s, _ = median_time(lambda: scan_upstream(ws, last_run), repeat)
    chain_s, chain = median_time(lambda: lineage(ws, "run:c0000049"), repeat)
    assert len(chain.of_kind("run")) == 50
    print(
        f"{n:>7}  {'downstream of a data file (all runs)':<38} "
        f"{down_s * 1000:>8.1f}ms {scan_s * 1000:>8.1f}ms {down_s / scan_s:>6.2f}x"
    )
    print(
        f"{n:>7}  {'upstream of big:production':<38} {up_s * 1000:>8.2f}ms "
        f"{up_scan_s * 1000:>8.1f}ms {up_s / up_scan_s:>6.3f}x"
    )
    print(f"{n:>7}  {'upstream through a 50-run chain':<38} {chain_s * 1000:>8.2f}ms")
    print(
        f"{'':>7}  ({len(graph.nodes)} nodes, {len(graph.edges)} edges downstream; "
        f"{len(up.nodes)} upstream)"
    )
    ws.close()


if __name__ == "__main__":
    main()
