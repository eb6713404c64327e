"""A fleet of reproductions: 8 runs of a ~5 s CPU-bound training script reproduced one
at a time, two at a time, and as Ray tasks, measured in one run on this machine.

    python benchmarks/fleet.py [--runs 8] [--seconds 5] [--workdir DIR] [--no-ray]

- baseline: the 8 commands run by hand, one after another, and two at a time (the
  machine's limit with 2 cores: nothing can reproduce them faster);
- ``tether reproduce --all --jobs 1`` and ``--jobs 2`` (plan, rebuild in isolation,
  re-run, record, verify each);
- ``tether reproduce --all --executor ray`` on a Ray started by the command (what a
  laptop without a cluster gets), and with ``--address`` on a running head with as many
  CPUs (what a team's cluster gets);
- Ray's fixed overhead: one trivial run through each executor: the cost of starting or
  joining Ray, packing the code, a scratch workspace on the worker and the way back.

Every command is a new process, as a nightly job runs it. The training script hashes a
fixed number of times (calibrated here to --seconds), so a reproduction's work is the
original's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TRAIN = """\
import hashlib, os
# A fixed amount of CPU work: {n} chained SHA-256 of 64 bytes, seeded.
h = hashlib.sha256(os.environ["TETHER_SEED"].encode() + open("data/in.txt", "rb").read()).digest()
for _ in range({n}):
    h = hashlib.sha256(h * 2).digest()
os.makedirs("out", exist_ok=True)
open("out/model.bin", "wb").write(h)
"""


def calibrate(seconds: float) -> int:
    h = b"x" * 32
    n, start = 200_000, time.perf_counter()
    for _ in range(n):
        h = hashlib.sha256(h * 2).digest()
    return int(n * seconds / (time.perf_counter() - start))


# Loopback only: no token, no usage report (and no ~/.ray/auth_token left behind).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def tether(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "-C", str(project), *args],
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, **RAY_ENV},
    )


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def fleet(project: Path, *args: str) -> tuple[float, dict]:  # type: ignore[type-arg]
    start = time.perf_counter()
    proc = tether(project, "reproduce", "--all", "--json", *args, check=False)
    elapsed = time.perf_counter() - start
    if not proc.stdout.strip():
        raise SystemExit(f"reproduce {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    verdicts = {r["verdict"] for r in report["runs"]}
    if verdicts != {"REPRODUCED"}:
        raise SystemExit(f"reproduce {' '.join(args)}: {verdicts}\n{proc.stderr[-2000:]}")
    return elapsed, report


def make_project(root: Path, script: str, runs: int) -> None:
    root.mkdir(parents=True)
    (root / "train.py").write_text(script)
    (root / "data").mkdir()
    (root / "data" / "in.txt").write_text("the training data\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    tether(root, "init")
    tether(root, "add", "data")
    (root / ".gitignore").write_text("out/\n")
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b"}  # fmt: skip
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=root, check=True, env={**os.environ, **env})
    for i in range(runs):
        tether(root, "run", "--seed", str(i + 1), "--name", f"r{i + 1}", "--", sys.executable,
               "train.py")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    cores = os.cpu_count() or 1
    n = calibrate(args.seconds)
    print(f"{args.runs} runs of ~{args.seconds:.0f} s ({n:,} hashes), {cores} cores")
    project = work / "fleet"
    make_project(project, TRAIN.format(n=n), args.runs)
    trivial = work / "trivial"
    make_project(trivial, TRAIN.format(n=1), 1)

    # The machine's limit: the commands by hand, in copies of the project.
    copies = []
    for i in range(args.runs):
        copy = work / f"copy{i}"
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".tether", ".git"))
        copies.append((copy, str(i + 1)))

    def by_hand(item: tuple[Path, str]) -> None:
        copy, seed = item
        env = {**os.environ, "TETHER_SEED": seed, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "train.py"], cwd=copy, check=True, env=env)

    hand_seq = timed(lambda: [by_hand(c) for c in copies])
    with ThreadPoolExecutor(2) as pool:
        hand_par = timed(lambda: list(pool.map(by_hand, copies)))

    rows = [
        ("by hand, one at a time", hand_seq, None),
        ("by hand, two at a time (machine limit)", hand_par, None),
    ]
    seq, _ = fleet(project, "--jobs", "1")
    rows.append(("tether reproduce --all --jobs 1", seq, None))
    par, _ = fleet(project, "--jobs", "2")
    rows.append(("tether reproduce --all --jobs 2", par, None))
    overhead = {}
    one_local, _ = fleet(trivial, "--jobs", "1")
    if not args.no_ray:
        env = {**os.environ, **RAY_ENV}
        try:
            ray_own, _ = fleet(project, "--executor", "ray")
            rows.append(("tether reproduce --all --executor ray (Ray started)", ray_own, None))
            one_ray_own, _ = fleet(trivial, "--executor", "ray")
            port = free_port()
            temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
            ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
            subprocess.run(
                [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                 f"--num-cpus={cores}", "--include-dashboard=false", "--disable-usage-stats",
                 f"--temp-dir={temp}"],
                check=True, capture_output=True, env=env,
            )  # fmt: skip
            try:
                address = f"127.0.0.1:{port}"
                fleet(trivial, "--executor", "ray", "--address", address)  # warm the workers
                ray_up, _ = fleet(project, "--executor", "ray", "--address", address)
                rows.append(("tether reproduce --all --executor ray --address (running)",
                             ray_up, None))  # fmt: skip
                one_ray_up, _ = fleet(trivial, "--executor", "ray", "--address", address)
            finally:
                subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)
                shutil.rmtree(temp, ignore_errors=True)
            overhead = {
                "Ray started by the command": one_ray_own - one_local,
                "Ray already running": one_ray_up - one_local,
            }
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"Ray left out: {e}")
    print(f"\n{'':58}{'wall':>8}{'vs seq':>8}{'vs limit':>9}")
    for label, seconds, _ in rows:
        print(f"{label:58}{seconds:7.1f}s{seq / seconds:7.2f}x{seconds / hand_par:8.2f}x")
    print(f"\none trivial run through the local executor: {one_local:.2f} s")
    for label, extra in overhead.items():
        print(f"Ray's fixed overhead ({label}): {extra:+.2f} s per command")
    per_run_seq = (seq - hand_seq) / args.runs
    print(f"tether's cost per reproduction, one at a time: {per_run_seq:+.2f} s over the bare run")
    print(
        textwrap.dedent(f"""
        speed-up of --jobs 2 over --jobs 1: {seq / par:.2f}x (the machine allows
        {hand_seq / hand_par:.2f}x: {cores} cores)""")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
