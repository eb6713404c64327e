"""The movie-recommender story, end to end, with the real tether CLI.

Generate data and train v1 under ``tether run`` (which records code, data, environment
and seed by itself) -> pack movie-recommend:v1.0.0 -> train v2 -> list runs, compare
them -> reproduce v1 and explain v1 vs v2 -> pack v2.0.0 -> list -> diff -> roll back
to v1.0.0 -> show that the
recommendations equal v1's. Runs in a copy of
this folder (``--workdir``, default a new temporary directory), so the repository
stays clean. Exits non-zero if any step fails or the rollback does not restore v1.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ["Kitfile", "README.md", "generate_data.py", "train.py", "recommend.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, help="where to run (default: a temp dir)")
    parser.add_argument("--users", type=int, default=300, help="size of the generated data")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="movie-recommender-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(HERE / name, work / name)
    print(f"# working in {work}\n")

    def sh(*cmd: str, capture: bool = False, echo: bool = True) -> str:
        shown = " ".join(shlex.quote(c) for c in cmd)
        print(f"$ {shown}", flush=True)
        if cmd[0] == "tether":
            cmd = (sys.executable, "-m", "tether", *cmd[1:])
        elif cmd[0] == "python":
            cmd = (sys.executable, *cmd[1:])
        result = subprocess.run(cmd, cwd=work, text=True, capture_output=capture)
        if result.returncode != 0:
            if capture:
                print(result.stdout + result.stderr)
            raise SystemExit(f"step failed ({result.returncode}): {shown}")
        if capture:
            if echo:
                print(result.stdout, end="")
            return result.stdout
        print()
        return ""

    sh("tether", "init")
    sh("tether", "run", "--name", "data", "--", "python", "generate_data.py", "--users",
       str(args.users))  # fmt: skip
    print("# version the data: content in the store, a pointer to commit, a copy on a remote\n")
    remote = work.parent / f"{work.name}-remote"
    sh("tether", "add", "data")
    sh("tether", "remote", "add", "backup", str(remote), "--default")
    sh("tether", "data", "push")
    data_before = _digests(work / "data")
    sh("tether", "run", "--name", "v1", "--seed", "42", "--", "python", "train.py",
       "--algorithm", "user-cosine")  # fmt: skip
    check_run_capture(json.loads(sh("tether", "runs", "show", "v1", "--json", capture=True)))
    v1_recs = json.loads(sh("python", "recommend.py", capture=True))
    print()
    sh("tether", "pack", "-t", "movie-recommend:v1.0.0,latest")

    print("# edit the Kitfile for version 2: new version and algorithm parameters\n")
    kitfile = (work / "Kitfile").read_text()
    kitfile = kitfile.replace("version: 1.0.0", "version: 2.0.0")
    kitfile = kitfile.replace("algorithm: user-cosine", "algorithm: truncated-svd")
    (work / "Kitfile").write_text(kitfile)
    sh("tether", "run", "--name", "v2", "--seed", "42", "--", "python", "train.py",
       "--algorithm", "truncated-svd")  # fmt: skip
    v2_recs = json.loads(sh("python", "recommend.py", capture=True))
    print()
    sh("tether", "runs", "list", "--sort", "metrics.rmse")
    sh("tether", "runs", "compare", "v1", "v2")

    print("# prove v1 still reproduces: rebuilt from its recorded code snapshot, data")
    print("# (by digest) and seed, re-run, verified; then ask why v1 and v2 differ\n")
    sh("tether", "reproduce", "v1", "--tolerance", "rmse=0.1%")
    verdict = json.loads(sh("tether", "runs", "show", "v1.repro", "--json", capture=True,
                            echo=False))["tags"]["tether.verdict"]  # fmt: skip
    if verdict not in ("REPRODUCED", "WITHIN TOLERANCE"):
        raise SystemExit(f"v1 did not reproduce: {verdict}")
    sh("tether", "explain", "v1", "v2")
    sh("tether", "pack", "-t", "movie-recommend:v2.0.0,latest")
    sh("tether", "list")
    sh("tether", "diff", "movie-recommend:v1.0.0", "movie-recommend:v2.0.0")

    print("# version 2 misbehaves in production: roll back to version 1\n")
    sh("tether", "rollback", "movie-recommend:v1.0.0")
    restored = json.loads(sh("python", "recommend.py", capture=True))
    print()
    if v1_recs == v2_recs:
        raise SystemExit("v1 and v2 recommend the same movies; the story shows nothing")
    if restored != v1_recs:
        raise SystemExit(f"rollback did not restore v1: {restored} != {v1_recs}")
    print("# the data folder is lost: status sees it, data pull restores it, verified\n")
    shutil.rmtree(work / "data")
    sh("tether", "status")
    sh("tether", "data", "pull")
    sh("tether", "status")
    if _digests(work / "data") != data_before:
        raise SystemExit("data pull did not restore the data byte for byte")
    print(
        f"OK: after rollback the recommendations equal v1's ({restored['algorithm']}), "
        f"not v2's ({v2_recs['algorithm']}); the data came back byte for byte."
    )
    return 0


def _digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def check_run_capture(run: dict[str, object]) -> None:
    """The training script declares no files: tether must have seen them itself."""
    files = {(f["role"], f["path"]): f["digest"] for f in run["files"]}  # type: ignore[attr-defined]
    expected = [("input", "data/ratings.csv"), ("input", "data/movies.csv"),
                ("output", "models/model.npz")]  # fmt: skip
    missing = [f"{role} {path}" for role, path in expected if not files.get((role, path))]
    if missing:
        raise SystemExit(f"tether run did not record {', '.join(missing)}")
    if "rmse" not in run["metrics"]:  # type: ignore[operator]
        raise SystemExit("the rmse the script logged is not on the run")
    print("# tether run recorded, without the script declaring them:")
    for role, path in expected:
        print(f"#   {role:<6} {path}  {files[(role, path)][:19]}")
    print()


if __name__ == "__main__":
    sys.exit(main())
