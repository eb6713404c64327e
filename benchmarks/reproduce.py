"""What proving a result costs: ``tether reproduce`` next to running the command again
by hand, and a recreated environment next to bare ``uv``, measured in one run.

    python benchmarks/reproduce.py [--users 1000] [--repeat 3] [--workdir DIR]

On the movie-recommender example (its generated data, its train.py), every command a
new process, best of --repeat:

- baseline: ``python train.py`` run by hand in a copy of the project (its own tether
  project, as the script logs a metric) — what checking a result by hand costs at least;
- ``tether run`` of the same command (recording it);
- ``tether reproduce v1`` (plan, rebuild code and inputs by digest in a temporary
  folder, re-run, record, verify) — the ratio to the baseline is reproduce's overhead;
- environments: ``uv venv`` + ``uv pip install numpy scikit-learn -e tether`` by hand
  (uv's cache warm) next to ``tether reproduce --env recreate`` building the same environment
  from the record (its first time) and then finding it in its cache.

Projects are created fresh under --workdir; nothing is timed right after a mass delete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "movie-recommender"


def timed(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sh(cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-reproduce-"))
    project = work / "project"
    project.mkdir(parents=True)
    for name in ("Kitfile", "generate_data.py", "train.py", "recommend.py"):
        shutil.copy2(EXAMPLE / name, project / name)
    env = {**os.environ, "TETHER_CACHE_DIR": str(work / "cache")}
    tether = (sys.executable, "-m", "tether")
    py = sys.executable
    train = ("train.py", "--algorithm", "user-cosine")

    sh(project, *tether, "init", env=env)
    sh(project, py, "generate_data.py", "--users", str(args.users), env=env)
    sh(project, *tether, "add", "data", env=env)

    by_hand = work / "by-hand"
    shutil.copytree(project, by_hand, ignore=shutil.ignore_patterns(".tether"))
    sh(by_hand, *tether, "init", env=env)  # train.py logs its metric with tether.start_run
    t_hand = timed(lambda: sh(by_hand, py, *train, env=env), args.repeat)
    t_run = timed(lambda: sh(project, *tether, "run", "--name", "v1", "--seed", "42", "--",
                             py, *train, env=env), args.repeat)  # fmt: skip
    t_repro = timed(lambda: sh(project, *tether, "reproduce", "v1", env=env), args.repeat)

    # Environments: a run in a small venv, rebuilt from its record.
    venv = project / ".venv"
    # train.py imports tether: the venv has it (editable), as a user's would.
    packages = ("numpy", "scikit-learn", "-e", str(HERE.parent))
    start = time.perf_counter()
    sh(work, "uv", "venv", "-q", "--python", py, str(venv))
    sh(work, "uv", "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *packages)
    t_uv = time.perf_counter() - start
    sh(project, *tether, "run", "--name", "sk", "--seed", "42", "--",
       str(venv / "bin" / "python"), *train, env=env)  # fmt: skip
    start = time.perf_counter()
    sh(project, *tether, "reproduce", "sk", "--env", "recreate", env=env)
    t_recreate_first = time.perf_counter() - start
    t_recreate_cached = timed(
        lambda: sh(project, *tether, "reproduce", "sk", "--env", "recreate", env=env), args.repeat
    )

    print(f"movie-recommender, {args.users} users; best of {args.repeat}; each a new process")
    rows = [
        ("python train.py by hand (baseline)", t_hand, t_hand),
        ("tether run (records it)", t_run, t_hand),
        ("tether reproduce v1 (rebuild + run + verify)", t_repro, t_hand),
        ("uv venv + uv pip install numpy scikit-learn tether (baseline)", t_uv, t_uv),
        ("tether reproduce --env recreate, environment built", t_recreate_first, t_uv),
        ("tether reproduce --env recreate, environment cached", t_recreate_cached, t_uv),
    ]
    for label, seconds, base in rows:
        print(f"  {label:<62} {seconds:7.2f} s   {seconds / base:5.2f}x baseline")
    print(f"  reproduce overhead over the bare command: {t_repro - t_hand:+.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
