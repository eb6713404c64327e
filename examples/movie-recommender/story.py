"""The movie-recommender story, end to end, with the real tether CLI.

Generate data and train v1 under ``tether run`` (which records code, data, environment
and seed by itself) -> pack movie-recommend:v1.0.0 (its provenance attached) -> train
v2 -> list runs, compare them -> reproduce v1 and explain v1 vs v2 -> pack v2.0.0 ->
diff -> register both as versions of the model, promote v2 to production -> v2
misbehaves: roll production back to v1 (files restored) -> the history shows both moves
with their reasons -> lineage: which versions used data/ratings.csv -> lose the data,
pull it back -> regenerate the data and train v3: its lineage shows the new data digest,
v1's the old one. Runs in a copy of this folder (``--workdir``, default a new temporary
directory), so the repository stays clean. Exits non-zero if any step fails or a check
does not hold.
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
from typing import Any

HERE = Path(__file__).resolve().parent
FILES = ["Kitfile", "README.md", "generate_data.py", "train.py", "recommend.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, help="where to run (default: a temp dir)")
    parser.add_argument("--users", type=int, default=300, help="size of the generated data")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp project and remote to look around"
    )
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="movie-recommender-"))
    remote = work.parent / f"{work.name}-remote"
    try:
        return _story(args, work, remote)
    finally:
        if args.workdir is None and not args.keep:
            # A temp project is the demo's own: leave nothing behind unless asked.
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(remote, ignore_errors=True)
            print(f"# removed {work} and its remote (--keep keeps them)")


def _story(args: argparse.Namespace, work: Path, remote: Path) -> int:
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
    sh("tether", "add", "data")
    sh("tether", "remote", "add", "backup", str(remote), "--default")
    sh("tether", "data", "push")
    data_before = _digests(work / "data")
    sh("tether", "run", "--name", "v1", "--seed", "42", "--", "python", "train.py",
       "--algorithm", "user-cosine")  # fmt: skip
    check_run_capture(
        json.loads(sh("tether", "runs", "show", "v1", "--json", capture=True, echo=False))
    )
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
    sh("tether", "inspect", "--provenance", "movie-recommend:v2.0.0")

    print("# the model registry: numbered versions, and production as a movable alias\n")
    model = "movie-recommend"
    sh("tether", "model", "register", model, "--from", "movie-recommend:v1.0.0",
       "-d", "user-cosine baseline")  # fmt: skip
    sh("tether", "model", "register", model, "--from", "v2")  # from the run: packs its outputs
    sh("tether", "model", "alias", model, "production", "v1", "-m", "first release")
    sh("tether", "model", "alias", model, "production", "v2", "-m", "lower RMSE offline")
    sh("tether", "model", "versions", model)

    print("# version 2 misbehaves in production: roll production back, files included\n")
    sh("tether", "model", "rollback", model, "production", "--restore",
       "-m", "v2 recommends the same blockbusters to everyone")  # fmt: skip
    restored = json.loads(sh("python", "recommend.py", capture=True))
    print()
    sh("tether", "model", "history", model)
    check_history(json.loads(sh("tether", "model", "history", model, "production", "--json",
                                capture=True, echo=False)))  # fmt: skip

    print("# ratings.csv turns out to be mislabeled: which models are affected?\n")
    sh("tether", "lineage", "--downstream", "data/ratings.csv")
    affected = _lineage("--downstream", "data/ratings.csv", sh=sh)
    if {"movie-recommend v1", "movie-recommend v2"} - affected["version"]:
        raise SystemExit(f"lineage misses a version: {sorted(affected['version'])}")
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

    print("# fix the data: regenerate it, train v3 on it, register it\n")
    old_ratings = "sha256:" + data_before["ratings.csv"]
    sh("tether", "run", "--name", "data-fixed", "--", "python", "generate_data.py", "--users",
       str(args.users), "--seed", "8")  # fmt: skip
    sh("tether", "add", "data")
    sh("tether", "run", "--name", "v3", "--seed", "42", "--", "python", "train.py",
       "--algorithm", "user-cosine")  # fmt: skip
    sh("tether", "model", "register", model, "--from", "v3")
    sh("tether", "lineage", f"{model}@v3")
    new_ratings = "sha256:" + _digests(work / "data")["ratings.csv"]
    v3_data = _lineage(f"{model}@v3", sh=sh)["data"]
    v1_data = _lineage(f"{model}@v1", sh=sh)["data"]
    if new_ratings not in v3_data or old_ratings in v3_data:
        raise SystemExit("v3's lineage does not show (only) the regenerated ratings")
    if old_ratings not in v1_data or new_ratings in v1_data:
        raise SystemExit("v1's lineage does not show (only) the original ratings")
    print(
        f"OK: after rollback the recommendations equal v1's ({restored['algorithm']}), "
        f"not v2's ({v2_recs['algorithm']}); the history records both moves and why; "
        "lineage finds v1 and v2 downstream of ratings.csv and tells v3's data apart; "
        "the data came back byte for byte."
    )
    return 0


def check_history(events: list[dict[str, object]]) -> None:
    moves = [(e["action"], e["from"], e["to"], bool(e["reason"])) for e in events]
    expected = [("set", None, 1, True), ("move", 1, 2, True), ("rollback", 2, 1, True)]
    if moves != expected:
        raise SystemExit(f"production's history is {moves}, expected {expected}")


def _lineage(*args: str, sh: Any) -> dict[str, set[str]]:
    """Node labels (and data digests) by kind, from 'tether lineage --format json'."""
    graph = json.loads(sh("tether", "lineage", *args, "--format", "json", capture=True,
                          echo=False))  # fmt: skip
    out: dict[str, set[str]] = {}
    for node in graph["nodes"]:
        key = node["digest"] if node["kind"] == "data" else node["label"]
        out.setdefault(node["kind"], set()).add(key)
    return out


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
