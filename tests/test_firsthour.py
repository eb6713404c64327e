"""What a new user meets in the first hour: bytecode caches are not results, a param given
twice in two spellings is one value, and a conflict never stops the training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_reproduce import commit, last_json, make_project, record


def test_bytecode_of_an_editable_helper_is_not_an_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An editable install is a path in a .pth file: importing the helper writes its
    # __pycache__ beside its source, outside the project, on the first import only.
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    helper = tmp_path / "helper" / "src"
    (helper / "helper").mkdir(parents=True)
    (helper / "helper" / "__init__.py").write_text("VALUE = 'forty-two'\n")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "helper.pth").write_text(str(helper) + "\n")
    python = str(venv / "bin" / "python")
    script = "import helper\nopen('out.txt', 'w').write(helper.VALUE)\n"
    tether = make_project(tmp_path / "p", {"job.py": script})
    commit(tmp_path / "p")
    record(tether, "j", python, "job.py", seed=1)
    assert list((helper / "helper" / "__pycache__").glob("*.pyc"))  # it was written
    run = json.loads(tether("runs", "show", "j", "--json").output)
    assert not [f for f in run["files"] if f["path"].endswith(".pyc")], run["files"]
    result = tether("reproduce", "j", "--json")
    assert result.exit_code == 0 and last_json(result)["verdict"] == "REPRODUCED", result.output


def test_a_param_from_the_command_line_and_the_script_is_one_value(tmp_path: Path) -> None:
    script = (
        "import argparse, tether\n"
        "p = argparse.ArgumentParser(); p.add_argument('--alpha', type=float)\n"
        "a = p.parse_args()\n"
        "with tether.start_run(params={'alpha': a.alpha}) as run:\n"
        "    run.log_params({'depth': 3})\n"
        "    open('model.txt', 'w').write(str(a.alpha))\n"
    )
    tether = make_project(tmp_path / "p", {"train.py": script})
    commit(tmp_path / "p")
    res = tether(
        "run", "--name", "a", "-p", "alpha=50000", "-p", "depth=4", "--",
        sys.executable, "train.py", "--alpha", "50000",
    )  # fmt: skip
    # 50000 and 50000.0 are one value; depth 4 vs 3 is a real conflict, which is reported
    # and kept as a tag while the training finishes.
    assert res.exit_code == 0, res.output
    assert "param 'depth' is already '4'" in res.output
    run = json.loads(tether("runs", "show", "a", "--json").output)
    assert run["status"] == "finished"
    assert run["params"] == {"alpha": "50000", "depth": "4"}
    assert run["tags"]["tether.param_conflict.depth"] == "3"
    assert (tmp_path / "p" / "model.txt").read_text() == "50000.0"


def test_filter_with_a_misspelt_prefix_suggests_the_field(tmp_path: Path) -> None:
    tether = make_project(tmp_path / "p", {})
    res = tether("runs", "list", "-f", "metric.r2 > 0.8")
    assert res.exit_code == 2
    assert "unknown field 'metric.r2'; did you mean 'metrics.r2'?" in res.output
    assert "metrics.KEY" in res.output


def test_status_check_exit_code_lineage_json_and_dir(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(root, {"data/x.csv": "a\n1\n"})
    assert tether("add", "data/x.csv").exit_code == 0
    assert tether("status", "--check").exit_code == 0
    assert tether("status").exit_code == 0
    (root / "data/x.csv").write_text("a\n2\n")
    assert tether("status").exit_code == 0  # without --check: informational
    assert tether("status", "--check").exit_code == 1
    assert tether("status", "--check", "--json").exit_code == 1
    record(tether, "r", sys.executable, "-c", "open('data/x.csv').read()")
    doc = json.loads(tether("lineage", "run:r", "--json").output)
    assert doc == json.loads(tether("lineage", "run:r", "--format", "json").output)
    import tether as api

    assert {"start_run", "seed_everything", "pack", "Workspace"} <= set(dir(api))


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(tmp_path: Path, shell: str) -> None:
    tether = make_project(tmp_path / "p", {})
    res = tether("completion", shell)
    assert res.exit_code == 0 and "_TETHER_COMPLETE" in res.output
    if shell == "bash":
        script = tmp_path / "tether.bash"
        script.write_text(res.output)
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_a_fresh_clone_with_committed_settings_is_a_project(tmp_path: Path) -> None:
    root = tmp_path / "origin"
    tether = make_project(root, {"data/x.csv": "a\n1\n"})
    assert tether("add", "data/x.csv").exit_code == 0
    remote = tmp_path / "remote"
    assert tether("remote", "add", "backup", str(remote), "--default").exit_code == 0
    assert tether("data", "push").exit_code == 0
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(
        ["git", "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-qm", "v1"],
        cwd=root,
        check=True,
    )
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    assert not (clone / ".tether" / "store").exists()  # only config.toml was committed
    assert not (clone / "data" / "x.csv").exists()
    res = subprocess.run(
        [sys.executable, "-m", "tether", "-C", str(clone), "data", "pull"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert (clone / "data" / "x.csv").read_text() == "a\n1\n"


def test_a_name_shared_by_runs_says_which_was_taken(tmp_path: Path) -> None:
    tether = make_project(tmp_path / "p", {})
    record(tether, "v1", sys.executable, "-c", "print(1)")
    record(tether, "v1", sys.executable, "-c", "print(2)")
    runs = json.loads(tether("runs", "list", "--json").output)["runs"]
    newest, older = runs[0]["id"], runs[1]["id"]
    res = tether("runs", "show", "v1", "--json")
    assert res.exit_code == 0
    assert "2 runs are named 'v1'; took the latest" in res.output and "v1~1" in res.output
    assert last_json(res)["id"] == newest
    res = tether("runs", "show", "v1~1", "--json")
    assert last_json(res)["id"] == older and "runs are named" not in res.output
    res = tether("runs", "show", "v1~2")
    assert res.exit_code == 1 and "only 2 run(s) named 'v1'" in res.output


def test_register_from_an_older_run_uses_its_kitfile_and_no_duplicates(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from click.testing import CliRunner

    from tether.cli import cli
    from tether.workspace import init_workspace

    from .conftest import KITFILE, TRAIN, demo_tree, separate_database, write_tree

    for use_git in (False, True):
        root = tmp_path / f"p-{use_git}"
        root.mkdir()
        write_tree(root, demo_tree())
        (root / "src" / "train.py").write_text(TRAIN)
        if use_git:
            subprocess.run(["git", "init", "-q"], cwd=root, check=True)
            subprocess.run(["git", "add", "-A"], cwd=root, check=True)
            subprocess.run(
                ["git", "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-qm", "v1"],
                cwd=root,
                check=True,
            )
            # Uncommitted when the run starts: the recorded diff holds this version.
            (root / "Kitfile").write_text(KITFILE.replace("version: 1.0.0", "version: 1.5.0"))
        init_workspace(root, propose_kitfile=False)
        separate_database(request, root)

        def tether(*args: str, root: Path = root) -> Any:
            return CliRunner().invoke(cli, ["-C", str(root), *args], catch_exceptions=False)

        res = tether("run", "--name", "r1", "--", sys.executable, "src/train.py", "a")
        assert res.exit_code == 0, res.output
        # The Kitfile moves on (uncommitted in the git project): version 2.0.0, k 99.
        (root / "Kitfile").write_text(
            KITFILE.replace("version: 1.0.0", "version: 2.0.0").replace("k: 50", "k: 99")
        )
        res = tether("model", "register", "recs", "--from", "r1", "--json")
        assert res.exit_code == 0, res.output
        assert "as run r1 saw it" in res.output
        # One grammar: the registry's NAME@vN works for ModelKit commands too, and
        # 'model show' takes the version as a second word.
        assert tether("model", "show", "recs", "v1").exit_code == 0
        res = tether("model", "show", "recs@v1", "v1")
        assert res.exit_code == 2 and "one too many" in res.output
        res = tether("inspect", "recs@v1", "--json")
        kitfile = json.loads(res.output[res.output.index("{") :])["kitfile"]
        assert kitfile["package"]["version"] == ("1.5.0" if use_git else "1.0.0")
        assert kitfile["model"]["parameters"] == {"k": 50}
        res = tether("model", "register", "recs", "--from", "r1")
        assert res.exit_code == 0 and "already is recs@v1" in res.output, res.output
        versions = json.loads(tether("model", "versions", "recs", "--json").output)
        assert len(versions["versions"] if isinstance(versions, dict) else versions) == 1


def test_an_earlier_runs_output_is_not_code(tmp_path: Path) -> None:
    script = (
        "import json, os, sys\nos.makedirs('out', exist_ok=True)\n"
        "json.dump({'alpha': float(sys.argv[1])}, open('out/metrics.json', 'w'))\n"
    )
    root = tmp_path / "p"
    tether = make_project(root, {"train.py": script})
    commit(root)
    record(tether, "a", sys.executable, "train.py", "1.0", seed=1)
    record(tether, "b", sys.executable, "train.py", "1000", seed=1)
    run = json.loads(tether("runs", "show", "b", "--json").output)
    assert "out/metrics.json" not in run["code"].get("untracked", [])
    assert "untracked" not in tether("reproduce", "b", "--plan").output
    explained = json.loads(tether("explain", "a", "b", "--json").output)
    categories = [c["category"] for c in explained["causes"]]
    assert categories[0] == "command" and "code" not in categories, explained["causes"]


def test_a_sweep_in_one_process_shares_captures_but_follows_a_new_project(
    tmp_path: Path,
) -> None:
    import shutil

    import tether as api
    from tether.repositories.run_filter import list_runs
    from tether.workspace import Workspace, init_workspace

    root = tmp_path / "sweep"
    root.mkdir()
    init_workspace(root, propose_kitfile=False)
    for i in range(20):
        with api.start_run(params={"i": i, "lr": 0.1}, project=root) as run:
            run.log_metric("loss", 1.0 / (i + 1))
    with pytest.raises(Exception, match="control characters"):
        api.start_run(params={"bad": "\x1b[2J"}, project=root)
    ws = Workspace.open(root)
    runs = list_runs(ws.db, limit=None).runs
    assert len(runs) == 20  # the refused one left nothing behind
    assert {r.env_digest for r in runs} == {runs[0].env_digest}
    assert all(r.status == "finished" for r in runs)
    ws.close()
    # The project is removed and made again while the process lives on.
    shutil.rmtree(root / ".tether")
    init_workspace(root, propose_kitfile=False)
    with api.start_run(project=root) as run:
        run.log_metric("loss", 0.5)
    ws = Workspace.open(root)
    # On PostgreSQL the database outlives .tether/, and the earlier runs with it.
    before = {r.id for r in runs}
    (again,) = [r for r in list_runs(ws.db, limit=None).runs if r.id not in before]
    from tether.repositories.runs import load_environment

    assert load_environment(ws.db, again.env_digest) is not None
    ws.close()
