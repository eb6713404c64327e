"""A fleet of reproductions with real programs: six recorded runs (seeded scikit-learn,
seeded torch, seeded plain Python, an unseeded draw, a run with no evidence, a run
whose input blob is gone) reproduced at once, on threads here and on a real Ray
cluster (a head and a second worker node on 127.0.0.1)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.test_reproduce import (
    SEEDED,
    SKLEARN,
    TORCH,
    UNSEEDED,
    Tether,
    commit,
    last_json,
    make_project,
    record,
)
from tether.errors import ReproError
from tether.hashing import Digest
from tether.workspace import Workspace

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_RAY = importlib.util.find_spec("ray") is not None
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}

LOST = """\
    import os
    os.makedirs("out", exist_ok=True)
    open("out/lost.txt", "w").write(open("data/old.csv").read()[::-1])
"""
QUIET = "print('no outputs, no metrics')\n"


def fleet_project(root: Path) -> Tether:
    files = {
        "train.py": SEEDED,
        "train_sk.py": SKLEARN,
        "draw.py": UNSEEDED,
        "lost.py": LOST,
        "quiet.py": QUIET,
        "data/in.csv": "1\n2\n3\n4\n",
        "data/old.csv": "a,b\n1,2\n",
        ".gitignore": "out/\n",
    }
    if HAS_TORCH:
        files["train_torch.py"] = TORCH
    tether = make_project(root, files)
    assert tether("add", "data").exit_code == 0
    commit(root)
    record(tether, "py", sys.executable, "train.py", seed=3)
    record(tether, "sk", sys.executable, "train_sk.py", seed=11)
    if HAS_TORCH:
        record(tether, "torch", sys.executable, "train_torch.py")
    record(tether, "draw", sys.executable, "draw.py")
    record(tether, "quiet", sys.executable, "quiet.py")
    record(tether, "lost", sys.executable, "lost.py")
    # The input of 'lost' leaves the store and changes in the project: nothing has it.
    shown = json.loads(tether("runs", "show", "lost", "--json").stdout)
    digest = next(f["digest"] for f in shown["files"] if f["path"] == "data/old.csv")
    ws = Workspace.open(root)
    ws.store.delete(Digest.parse(digest))
    ws.close()
    (root / "data" / "old.csv").write_text("changed\n")
    return tether


EXPECTED = {
    "py": {"REPRODUCED"},
    "sk": {"REPRODUCED"},
    "torch": {"REPRODUCED", "WITHIN TOLERANCE"},  # older NumPy dated .npz members
    "draw": {"DIVERGED"},
    "quiet": {"UNVERIFIED"},
    "lost": {"REFUSED"},
}


def check_report(tether: Tether, report: dict, junit: Path) -> None:  # type: ignore[type-arg]
    by_label = {r["label"]: r for r in report["runs"]}
    assert set(by_label) == {k for k in EXPECTED if HAS_TORCH or k != "torch"}
    for label, row in by_label.items():
        assert row["verdict"] in EXPECTED[label], (label, row)
    lost = by_label["lost"]
    assert "data/old.csv" in lost["reason"] and "not in the store" in lost["reason"]
    assert lost["reproduction"] is None  # refused: nothing ran
    assert by_label["draw"]["worst"] == "output out/draw.txt differs"
    assert report["exit_code"] == 3
    # Every reproduction is a run of this project, linked to what it reproduces.
    for label, row in by_label.items():
        if label == "lost":
            continue
        new = row["reproduction"]["reproduction"]
        shown = json.loads(tether("runs", "show", new, "--json").stdout)
        assert shown["tags"]["tether.reproduces"] == row["run"]
        assert shown["tags"]["tether.verdict"] == row["verdict"]
        lineage = json.loads(tether("lineage", new, "--json").stdout)
        assert row["run"] in json.dumps(lineage)
    # One JUnit test case per run: failures for the diverged, an error for the refused.
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == set(by_label)
    assert cases["lost"].find("error") is not None
    assert cases["draw"].find("failure") is not None
    assert cases["py"].find("failure") is None and cases["py"].find("error") is None
    assert suite.get("tests") == str(len(by_label))


def reproduction_spans(root: Path) -> list[tuple[float, float]]:
    ws = Workspace.open(root)
    try:
        from tether.api import runs

        found = runs.list_runs(ws, runs.RunQuery(where="tags.`tether.reproduces` != ''"))
        return [(r.started, r.ended or r.started) for r in found.runs]
    finally:
        ws.close()


def test_the_whole_fleet_is_planned_then_reproduced_two_at_a_time(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = fleet_project(root)
    planned = tether("reproduce", "--all", "--plan")
    assert planned.exit_code == 0, planned.output
    assert "refused" in planned.output and "lost" in planned.output
    junit = tmp_path / "reports" / "fleet.xml"
    result = tether("reproduce", "--all", "--jobs", "2", "--json", "--junit", str(junit))
    assert result.exit_code == 3, result.output
    report = last_json(result)
    assert report["jobs"] == 2 and report["executor"] == "local"
    check_report(tether, report, junit)
    # Two at a time: some reproductions overlapped.
    spans = sorted(reproduction_spans(root))
    assert len(spans) == len(report["runs"]) - 1
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    # --all leaves reproductions out: the fleet is the same six runs again.
    again = tether("reproduce", "--all", "--plan", "--json")
    # (click < 8.2 mixes stderr into stdout: the JSON starts at its bracket)
    assert len(json.loads(again.stdout[again.stdout.index("[\n") :])) == len(report["runs"])
    assert "left out" in again.output
    # The human report: a row per run and the counts.
    human = tether("reproduce", "py", "draw", "--jobs", "2")
    assert human.exit_code == 3
    assert "py" in human.output and "DIVERGED" in human.output
    assert "2 run(s): 1 diverged, 1 reproduced" in human.output


def test_alias_selects_the_runs_behind_every_version_with_it(tmp_path: Path) -> None:
    root = tmp_path / "p"
    kitfile = "manifestVersion: '1.0'\npackage: {name: m}\nmodel: {name: m, path: out/model.json}\n"
    tether = make_project(
        root,
        {"train.py": SEEDED, "data/in.csv": "1\n2\n", ".gitignore": "out/\n", "Kitfile": kitfile},
    )
    assert tether("add", "data").exit_code == 0
    commit(root)
    record(tether, "a", sys.executable, "train.py", seed=1)
    record(tether, "b", sys.executable, "train.py", seed=2)
    for name, run in (("ranker", "a"), ("scorer", "b")):
        assert tether("model", "register", name, "--from", run).exit_code == 0
        assert tether("model", "alias", name, "production", "v1").exit_code == 0
    result = tether("reproduce", "--alias", "production", "--json")
    assert result.exit_code == 0, result.output
    report = last_json(result)
    assert [r["label"] for r in report["runs"]] == [
        "ranker:v1 (production)",
        "scorer:v1 (production)",
    ]
    assert {r["verdict"] for r in report["runs"]} == {"REPRODUCED"}
    missing = tether("reproduce", "--alias", "staging")
    assert missing.exit_code != 0 and "no model version has the alias 'staging'" in missing.output


def test_bad_fleet_arguments_are_refused_with_a_hint(tmp_path: Path) -> None:
    tether = make_project(tmp_path / "p", {"a.py": "print(1)\n"})
    none = tether("reproduce")
    assert none.exit_code != 0 and "no runs selected" in none.output and "--all" in none.output
    workdir = tether("reproduce", "--all", "--workdir", str(tmp_path / "w"))
    assert workdir.exit_code != 0 and "one per run" in workdir.output
    address = tether("reproduce", "--all", "--address", "127.0.0.1:1")
    assert address.exit_code != 0 and "--executor ray" in address.output
    typo = tether("reproduce", "nosuchrun", "--all")
    assert typo.exit_code != 0 and "nosuchrun" in typo.output


def test_a_worker_that_cannot_see_the_store_fetches_inputs_from_the_remote(
    tmp_path: Path,
) -> None:
    """What a Ray task runs, in this process: a worker elsewhere gets the code as an
    archive and each input by digest from the project's data remote."""
    from dataclasses import replace

    from tether.envcapture.environment import Environment
    from tether.repro import on_ray
    from tether.repro.fleet import FleetOptions
    from tether.repro.plan import make_plan
    from tether.repro.remote_job import run_job
    from tether.repro.reproduce import Execution, conclude

    root = tmp_path / "p"
    tether = make_project(
        root, {"train.py": SEEDED, "data/in.csv": "1\n2\n3\n", ".gitignore": "out/\n"}
    )
    assert tether("add", "data").exit_code == 0
    commit(root)
    assert tether("remote", "add", "backup", str(tmp_path / "remote"), "--default").exit_code == 0
    assert tether("data", "push").exit_code == 0
    record(tether, "v1", sys.executable, "train.py", seed=4)
    ws = Workspace.open(root)
    try:
        from tether.api import runs

        plan = make_plan(ws, runs.get(ws, "v1"))
        # --env current: the task runs on the worker's environment as it is (the job sets
        # the seed and variables on the command); a GPU run asks Ray for its GPUs.
        assert on_ray.runtime_env(plan) == {}
        assert on_ray.gpus(plan) == 0
        assert plan.environment is not None
        devices = [{"name": "NVIDIA H200", "driver": "570", "memory_mib": "143771"}] * 2
        body = {**plan.environment.body, "gpu": {"devices": devices}}
        assert on_ray.gpus(replace(plan, environment=Environment(body))) == 2
        job = on_ray.job_of(ws, plan)
        assert [path for path, _ in job.inputs] == ["data/in.csv"]
        assert [name for name, _, _ in job.remotes] == ["backup"]
        # Nowhere to fetch from: refused, naming the input.
        with pytest.raises(ReproError, match=r"input data/in\.csv .* worker"):
            run_job(replace(job, stores=(), remotes=()))
        result = run_job(replace(job, stores=()))  # only the remote
        run_id = on_ray.record(ws, result)
        execution = Execution(run_id, None, None, None, (), measure_drift=True)
        done = conclude(ws, plan, execution, FleetOptions().reproduce, 0.0)
    finally:
        ws.close()
    assert done.verdict == "REPRODUCED"
    shown = json.loads(tether("runs", "show", run_id, "--json").stdout)
    assert shown["tags"]["tether.reproduces"] == plan.run.id
    log = tether("runs", "log", run_id)
    assert log.exit_code == 0


# -- Ray ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A Ray head on 127.0.0.1 and a second worker node, as two real `ray start`s."""
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    assert ray is not None
    # Ray's sockets live under its temp folder, whose path must stay short.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    port, client = _free_port(), _free_port()
    # Loopback only, no token: a ~/.ray/auth_token left by an earlier local Ray would
    # otherwise switch the head (and not this driver) to token authentication.
    env = {**os.environ, **RAY_ENV}
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [ray, "start", "--head", f"--port={port}", f"--ray-client-server-port={client}",
             "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp}", *common],
            check=True, capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", *common],
            check=True, capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="pip install 'tether-ml[ray]'")
def test_the_fleet_on_a_ray_cluster_comes_back_as_runs_of_this_project(
    tmp_path: Path, ray_cluster: str
) -> None:
    root = tmp_path / "p"
    tether = fleet_project(root)
    junit = tmp_path / "fleet.xml"
    # The real CLI in its own process, as a nightly job runs it.
    proc = subprocess.run(
        [sys.executable, "-m", "tether", "-C", str(root), "reproduce", "--all",
         "--executor", "ray", "--address", ray_cluster, "--json", "--junit", str(junit)],
        capture_output=True, text=True, timeout=900, env={**os.environ, **RAY_ENV},
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["executor"] == "ray"
    check_report(tether, report, junit)
    nodes = set()
    for row in report["runs"]:
        if row["reproduction"] is not None:
            ran_on = [w for w in row["reproduction"]["warnings"] if w.startswith("ran on Ray")]
            assert ran_on, row
            nodes.add(ran_on[0])
    assert len(nodes) == 2  # both nodes of the cluster took tasks
    assert len(reproduction_spans(root)) == len(report["runs"]) - 1


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="pip install 'tether-ml[ray]'")
@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_on_ray_recreate_installs_the_recorded_versions_through_runtime_env(
    tmp_path: Path, ray_cluster: str
) -> None:
    from tests.test_reproduce import make_venv

    root = tmp_path / "p"
    script = "import os, six\nos.makedirs('out', exist_ok=True)\n"
    script += "open('out/v.txt', 'w').write(six.__version__)\n"
    tether = make_project(root, {"t.py": script, ".gitignore": ".venv/\n"}, use_git=False)
    # six 1.16.0 in the run's venv; the cluster's own environment has another (or none).
    python = make_venv(root / ".venv", "six==1.16.0", "packaging==24.1")
    record(tether, "old-six", str(python), "t.py", seed=5)
    proc = subprocess.run(
        [sys.executable, "-m", "tether", "-C", str(root), "reproduce", "old-six",
         "--executor", "ray", "--address", ray_cluster, "--env", "recreate", "--json"],
        capture_output=True, text=True, timeout=900, env={**os.environ, **RAY_ENV},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["runs"][0]
    assert row["verdict"] == "REPRODUCED", row
    reproduction = row["reproduction"]
    assert "runtime_resources/uv" in " ".join(reproduction["warnings"])
    drift = {d["name"]: d for d in reproduction["drift"] if d["section"] == "packages"}
    assert "six" not in drift and "packaging" not in drift  # the recorded versions
    # What the Ray environment adds (Ray itself, tether) is drift, and shown as such.
    assert all(d["recorded"] is None for d in drift.values())


def test_the_ci_recipes_call_tether_as_it_parses_them() -> None:
    """docs/ci.md's jobs are YAML their CI reads, and every tether command in them is
    one the CLI accepts (options and arguments parsed, nothing run)."""
    import re
    import shlex

    import click
    import yaml

    from tether.cli import cli

    text = (Path(__file__).resolve().parent.parent / "docs" / "ci.md").read_text()
    commands: list[str] = []

    def shell_lines(value: object) -> None:
        if isinstance(value, str):
            for line in value.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].strip()
                if line.startswith(("tether ", "echo")) and "tether " in line:
                    commands.append(line[line.index("tether ") :])
        elif isinstance(value, dict):
            for v in value.values():
                shell_lines(v)
        elif isinstance(value, list):
            for v in value:
                shell_lines(v)

    blocks = re.findall(r"```(yaml|sh)\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    for kind, block in blocks:
        shell_lines(yaml.safe_load(block) if kind == "yaml" else block)
    assert sum("reproduce --alias production" in c for c in commands) == 3
    assert sum(c.startswith("tether connect") for c in commands) == 2
    for command in commands:
        args = [a for a in shlex.split(command)[1:] if a != "<<<"]
        group: click.Command = cli
        while isinstance(group, click.Group) and args and args[0] in group.commands:
            group = group.commands[args.pop(0)]
        assert not isinstance(group, click.Group), command
        group.make_context(group.name or "", args)
