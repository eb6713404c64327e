"""reproduce, explain and doctor with real programs: real git repositories, real
interpreters and real uv virtualenvs, the CLI run in-process."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner, Result

from tests.test_runs import GIT_ENV, git
from tether.cli import cli
from tether.hashing import Digest
from tether.workspace import Workspace, init_workspace

Tether = Callable[..., Result]
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(autouse=True)
def env_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One cache of recreated environments for the whole module's tests.
    cache = tmp_path_factory.getbasetemp() / "tether-cache"
    monkeypatch.setenv("TETHER_CACHE_DIR", str(cache))
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    return cache


def make_project(root: Path, files: dict[str, str], *, use_git: bool = True) -> Tether:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    if use_git:
        git(root, "init", "-q", "-b", "main")
    init_workspace(root, propose_kitfile=False)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, ["-C", str(root), *args], catch_exceptions=False)

    return run


def commit(root: Path, message: str = "work") -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


def last_json(result: Result) -> dict:  # type: ignore[type-arg]
    out = result.stdout
    return json.loads(out[out.index("{\n") :])


def record(tether: Tether, name: str, *command: str, seed: int | None = None) -> None:
    seeding = ["--seed", str(seed)] if seed is not None else []
    result = tether("run", "--name", name, *seeding, "--", *command)
    assert result.exit_code == 0, result.output


def lose_input(root: Path, tether: Tether) -> None:
    """Delete v1's input from the store and change it in the project."""
    ws = Workspace.open(root)
    digest = Digest.parse(
        json.loads(tether("runs", "show", "v1", "--json").stdout)["files"][0]["digest"]
    )
    ws.store.delete(digest)
    ws.close()
    (root / "data" / "in.csv").write_text("9\n")


def run_ids(root: Path) -> list[str]:
    ws = Workspace.open(root)
    try:
        return [r["id"] for r in ws.db.query("SELECT id FROM runs ORDER BY started")]
    finally:
        ws.close()


# -- scripts ------------------------------------------------------------------------------

SEEDED = """\
    import json, os, random
    import tether
    rows = open("data/in.csv").read().split()
    random.seed(int(os.environ["TETHER_SEED"]))
    score = sum(random.random() * float(r) for r in rows)
    os.makedirs("out", exist_ok=True)
    json.dump({"score": score}, open("out/model.json", "w"))
    with tether.start_run() as run:
        run.log_metric("score", score)
"""

UNSEEDED = """\
    import os, random
    os.makedirs("out", exist_ok=True)
    open("out/draw.txt", "w").write(repr(random.random()))
"""


def seeded_project(root: Path, *, use_git: bool = True) -> Tether:
    tether = make_project(
        root,
        {"train.py": SEEDED, "data/in.csv": "1\n2\n3\n4\n", ".gitignore": "out/\n"},
        use_git=use_git,
    )
    assert tether("add", "data").exit_code == 0
    if use_git:
        commit(root)
    return tether


# -- reproduce ----------------------------------------------------------------------------


def test_seeded_run_reproduces_bit_for_bit_with_a_dirty_tree(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = seeded_project(root)
    # An uncommitted edit is part of the code the run used; so is an untracked helper.
    (root / "train.py").write_text((root / "train.py").read_text() + "# tuned\n")
    (root / "helper.py").write_text("X = 1\n")
    record(tether, "v1", sys.executable, "train.py", seed=7)
    junit = tmp_path / "report.xml"
    result = tether("reproduce", "v1", "--json", "--junit", str(junit))
    assert result.exit_code == 0, result.output
    report = last_json(result)
    assert report["verdict"] == "REPRODUCED"
    assert [o["status"] for o in report["outputs"]] == ["identical"]
    assert report["metrics"][0]["status"] == "equal"
    assert report["plan"]["inputs"][0]["source"] == "store"
    assert report["workdir"] is None  # the temporary rebuild is gone
    # The reproduction is a run of its own, linked to the original.
    repro = json.loads(tether("runs", "show", report["reproduction"], "--json").stdout)
    assert repro["tags"]["tether.reproduces"] == report["original"]
    original = json.loads(tether("runs", "show", "v1", "--json").stdout)
    assert [(e["from"], e["kind"], e["detail"]["verdict"]) for e in original["links"]] == [
        (report["reproduction"], "reproduces", "REPRODUCED")
    ]
    assert repro["code"]["diff_digest"] == report["plan"]["code"]["diff_digest"]
    assert repro["code"]["snapshot_digest"] == report["plan"]["code"]["snapshot_digest"]
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    assert {c.get("name") for c in suite.iter("testcase")} == {"run", "out/model.json", "score"}
    # The user's working tree was not touched.
    assert "# tuned" in (root / "train.py").read_text()
    assert git(root, "worktree", "list").count("\n") == 1


def test_reproduce_outside_git_uses_the_code_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = seeded_project(root, use_git=False)
    record(tether, "v1", sys.executable, "train.py", seed=3)
    (root / "train.py").write_text("raise SystemExit('the project changed since')\n")
    keep = tmp_path / "rebuilt"
    result = tether("reproduce", "v1", "--workdir", str(keep))
    assert result.exit_code == 0, result.output
    assert "REPRODUCED" in result.stdout
    assert "random.seed" in (keep / "train.py").read_text()  # the recorded code, kept


def test_unseeded_run_diverges_and_explain_blames_randomness(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(root, {"draw.py": UNSEEDED})
    commit(root)
    record(tether, "draw", sys.executable, "draw.py")
    junit = tmp_path / "r.xml"
    result = tether("reproduce", "draw", "--junit", str(junit))
    assert result.exit_code == 3, result.output
    assert "DIVERGED" in result.stdout
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    repro = run_ids(root)[-1]
    explained = json.loads(tether("explain", "draw", repro, "--json").stdout)
    assert explained["nondeterminism"] is True
    assert explained["causes"][0]["category"] == "unseeded"
    assert "unseeded" in explained["causes"][0]["details"][0]
    text = tether("explain", "draw", repro).stdout
    assert "without a seed" in text and "seed_everything" in text


def test_tolerances_judge_metrics_and_exact_refuses_anything_but_identity(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(
        root,
        {
            "noisy.py": """\
                import random, tether
                with tether.start_run() as run:
                    run.log_metric("recall", 0.9 + random.random() * 1e-4)
                    run.log_metric("loss", 1.0)
            """
        },
    )
    commit(root)
    record(tether, "n", sys.executable, "noisy.py")
    assert tether("reproduce", "n").exit_code == 3  # default: metrics must be equal
    ok = tether("reproduce", "n", "-t", "recall=1%", "--json")
    assert ok.exit_code == 0, ok.output
    report = last_json(ok)
    assert report["verdict"] == "WITHIN TOLERANCE"
    assert {m["key"]: m["status"] for m in report["metrics"]} == {
        "loss": "equal",
        "recall": "within",
    }
    assert tether("reproduce", "n", "-t", "*=0.001").exit_code == 0  # glob, absolute
    assert tether("reproduce", "n", "-t", "recall=1%", "--exact").exit_code == 3
    bad = tether("reproduce", "n", "-t", "recall=lots")
    assert bad.exit_code == 2 and "not a number" in bad.output


def test_series_compares_every_step(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(
        root,
        {
            "curve.py": """\
                import random, tether
                with tether.start_run() as run:
                    for step in range(5):
                        # only the middle of the curve is noisy; the end is exact
                        noise = random.random() * 1e-3 if step == 2 else 0.0
                        run.log_metric("loss", 1.0 / (step + 1) + noise, step=step)
            """
        },
    )
    commit(root)
    record(tether, "c", sys.executable, "curve.py")
    assert tether("reproduce", "c").exit_code == 0  # the last value is equal
    result = tether("reproduce", "c", "--series", "--json")
    assert result.exit_code == 3
    metric = last_json(result)["metrics"][0]
    assert metric["status"] == "outside" and "step 2" in metric["detail"]


def test_failed_reproduction_is_failed(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(
        root, {"flaky.py": "import os, sys\nsys.exit(0 if os.path.exists('ok') else 4)\n"}
    )
    commit(root)
    (root / "ok").write_text("")  # not part of the code: the rebuild lacks it
    record(tether, "f", sys.executable, "flaky.py")
    result = tether("reproduce", "f", "--json")
    assert result.exit_code == 3
    assert last_json(result)["verdict"] == "FAILED"


def test_inputs_missing_everywhere_are_refused_before_anything_runs(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = seeded_project(root)
    record(tether, "v1", sys.executable, "train.py", seed=1)
    lose_input(root, tether)
    before = run_ids(root)
    result = tether("reproduce", "v1")
    assert result.exit_code == 1
    assert "cannot reproduce run" in result.output
    assert "data/in.csv" in result.output and "tether add" in result.output
    assert run_ids(root) == before  # nothing ran, nothing was recorded


def test_inputs_come_from_a_remote_when_the_store_lost_them(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = seeded_project(root)
    assert tether("remote", "add", "backup", str(tmp_path / "remote"), "--default").exit_code == 0
    assert tether("data", "push").exit_code == 0
    record(tether, "v1", sys.executable, "train.py", seed=1)
    lose_input(root, tether)
    result = tether("reproduce", "v1", "--json")
    assert result.exit_code == 0, result.output
    report = last_json(result)
    assert report["plan"]["inputs"][0]["source"] == "remote"
    assert report["plan"]["inputs"][0]["remote"] == "backup"
    assert report["verdict"] == "REPRODUCED"


def test_a_lost_commit_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = seeded_project(root)
    record(tether, "v1", sys.executable, "train.py", seed=1)
    git(root, "commit", "-q", "--amend", "-m", "rewritten")
    git(root, "reflog", "expire", "--expire=now", "--all")
    git(root, "gc", "-q", "--prune=now")
    result = tether("reproduce", "v1", "--plan")
    assert result.exit_code == 1
    assert "is not in the repository" in result.output and "git fetch" in result.output


def test_recreate_refuses_an_interpreter_this_machine_lacks(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = seeded_project(root)
    record(tether, "v1", sys.executable, "train.py", seed=1)
    ws = Workspace.open(root)
    digest = ws.db.query("SELECT env_digest FROM runs")[0]["env_digest"]
    sql = "SELECT body FROM environments WHERE digest = ?"
    body = json.loads(ws.db.query(sql, (digest,))[0]["body"])
    body["python"]["version"] = "3.99.1"
    with ws.db.atomic() as conn:
        sql = "UPDATE environments SET body = ? WHERE digest = ?"
        conn.execute(sql, (json.dumps(body), digest))
    ws.close()
    result = tether("reproduce", "v1", "--env", "recreate")
    assert result.exit_code == 1
    assert "cpython 3.99.1 is not available" in result.output
    assert "uv python install 3.99.1" in result.output


def test_workdir_must_be_empty(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = seeded_project(root)
    record(tether, "v1", sys.executable, "train.py", seed=1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    result = tether("reproduce", "v1", "--workdir", str(busy))
    assert result.exit_code == 2 and "not an empty folder" in result.output
    inside = tether("reproduce", "v1", "--workdir", str(root / ".tether" / "rebuild"))
    assert inside.exit_code == 2 and "inside .tether/" in inside.output
    assert not (root / ".tether" / "rebuild").exists()


# -- recreated environments (real uv) -----------------------------------------------------


def uv(*args: str) -> None:
    subprocess.run(["uv", *args], check=True, capture_output=True)


def make_wheel(directory: Path, name: str, version: str, module: str) -> Path:
    """A minimal pure-Python wheel, written by hand so no build backend is needed."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.py", module)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: tether-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    return path


def make_venv(path: Path, *packages: str) -> Path:
    uv("venv", "-q", "--python", sys.executable, str(path))
    if packages:
        uv("pip", "install", "-q", "--python", str(path / "bin" / "python"), *packages)
    return path / "bin" / "python"


SKLEARN = """\
    import os
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(int(os.environ["TETHER_SEED"]))
    x = rng.normal(size=(400, 5))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + rng.normal(size=400) > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    os.makedirs("out", exist_ok=True)
    np.save("out/coef.npy", model.coef_)
    print("accuracy", model.score(x, y))
"""


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_sklearn_run_reproduces_bit_identically_in_a_recreated_uv_venv(
    tmp_path: Path, env_cache: Path
) -> None:
    root = tmp_path / "p"
    tether = make_project(root, {"train.py": SKLEARN, ".gitignore": ".venv/\n"})
    commit(root)
    python = make_venv(root / ".venv", "numpy==2.2.6", "scikit-learn==1.6.1", "six==1.16.0")
    # The project's lock file, as 'uv pip freeze' writes it: the recreation uses it.
    frozen = subprocess.run(
        ["uv", "pip", "freeze", "--python", str(python)], capture_output=True, text=True
    ).stdout
    (root / "requirements.txt").write_text(frozen)
    record(tether, "sk", str(python), "train.py", seed=11)
    first = tether("reproduce", "sk", "--env", "recreate", "--json")
    assert first.exit_code == 0, first.output
    report = last_json(first)
    assert report["verdict"] == "REPRODUCED"
    assert report["plan"]["recreate"]["lock"] == "requirements.txt"
    assert report["env_cached"] is False
    assert report["drift"] == [] or all(d["section"] != "packages" for d in report["drift"])
    # The reproduction ran in the recreated venv, not in the recorded one.
    repro = json.loads(tether("runs", "show", report["reproduction"], "--json").stdout)
    assert repro["command"][0].startswith(str(env_cache))
    second = tether("reproduce", "sk", "--env", "recreate", "--json")
    assert second.exit_code == 0
    assert last_json(second)["env_cached"] is True
    # A lock file that disagrees with what was installed is not trusted over the record.
    (root / "requirements.txt").write_text(frozen.replace("numpy==2.2.6", "numpy==2.2.5"))
    record(tether, "sk2", str(python), "train.py", seed=11)
    third = tether("reproduce", "sk2", "--env", "recreate", "--plan", "--json")
    plan = last_json(third)
    assert plan["recreate"]["lock"] is None
    assert any("disagrees with what the run had installed" in w for w in plan["warnings"])
    # Only what the run imported (six was installed, never imported), dependencies
    # resolved by uv within the recorded versions.
    run = json.loads(tether("runs", "show", "sk", "--json").stdout)
    assert {"numpy", "scikit-learn"} <= set(run["capture"]["imported_distributions"])
    assert "six" not in run["capture"]["imported_distributions"]
    fourth = tether("reproduce", "sk", "--env", "recreate", "--packages", "imported", "--json")
    assert fourth.exit_code == 0, fourth.output
    report = last_json(fourth)
    assert report["verdict"] == "REPRODUCED"
    assert report["plan"]["recreate"]["installs"] == "imported"
    assert "six==1.16.0" not in report["plan"]["recreate"]["imported"]
    repro = json.loads(tether("runs", "show", report["reproduction"], "--json").stdout)
    recreated = json.loads(tether("env", "show", report["reproduction"], "--json").stdout)
    packages = (recreated.get("body") or recreated)["packages"]
    assert packages["numpy"] == "2.2.6" and packages["scikit-learn"] == "1.6.1"
    assert "six" not in packages and repro["status"] == "finished"


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_explain_names_the_package_whose_version_changed_the_output(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(
        root,
        {
            "use.py": """\
                import os, numfix
                os.makedirs("out", exist_ok=True)
                open("out/result.txt", "w").write(str(numfix.scale(10)))
            """,
            ".gitignore": "venv-*/\n",
        },
    )
    commit(root)
    wheels = tmp_path / "wheels"
    old = make_wheel(wheels, "numfix", "1.0", "def scale(x):\n    return x * 2\n")
    new = make_wheel(wheels, "numfix", "1.1", "def scale(x):\n    return x * 2.0000001\n")
    py_a = make_venv(root / "venv-a", str(old))
    py_b = make_venv(root / "venv-b", str(new))
    record(tether, "a", str(py_a), "use.py", seed=1)
    record(tether, "b", str(py_b), "use.py", seed=1)
    explained = json.loads(tether("explain", "a", "b", "--json").stdout)
    assert explained["outputs"][0]["path"] == "out/result.txt"
    assert explained["nondeterminism"] is False
    top = explained["causes"][0]
    assert top["category"] == "packages"
    assert top["details"] == ["numfix: 1.0 -> 1.1"]


def test_explain_names_the_changed_input_with_sizes_and_rows(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = seeded_project(root)
    record(tether, "a", sys.executable, "train.py", seed=5)
    (root / "data" / "in.csv").write_text("1\n2\n3\n4\n5\n6\n")
    assert tether("add", "data").exit_code == 0
    git(root, "commit", "-q", "-m", "more data", "data.tether")
    record(tether, "b", sys.executable, "train.py", seed=5)
    explained = json.loads(tether("explain", "a", "b", "--json").stdout)
    top = explained["causes"][0]
    assert top["category"] == "data"
    assert "data/in.csv" in top["title"]
    assert "3 -> 5 rows (+2)" in top["details"][0]  # header line excluded
    assert "0 row(s) of A not in B" in top["details"][0]  # rows were only added
    assert "0 row(s) of A not in B" in top["details"][0]  # rows were only added
    categories = [c["category"] for c in explained["causes"]]
    assert "code" not in categories  # the commits differ only in the data pointer
    assert "[data] input data changed: data/in.csv" in tether("explain", "a", "b").stdout


def test_explain_sees_zip_outputs_that_differ_only_in_timestamps(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(
        root,
        {
            "save.py": """\
                import os, sys, time, zipfile
                os.makedirs("out", exist_ok=True)
                with zipfile.ZipFile("out/model.npz", "w") as z:
                    info = zipfile.ZipInfo("w.npy", time.localtime(int(sys.argv[1]))[:6])
                    z.writestr(info, b"weights")
            """
        },
    )
    commit(root)
    record(tether, "a", sys.executable, "save.py", "1000000000")
    record(tether, "b", sys.executable, "save.py", "1500000000")
    explained = json.loads(tether("explain", "a", "b", "--json").stdout)
    assert explained["causes"][0]["category"] == "output-format"
    assert "only embedded timestamps differ" in explained["causes"][0]["title"]


# -- PyTorch ------------------------------------------------------------------------------

TORCH = """\
    import os
    import numpy as np
    import torch
    import tether
    tether.seed_everything(1234, deterministic=True)
    x = torch.randn(256, 8)
    y = (x.sum(1, keepdim=True) > 0).float()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tether.start_run() as run:
        for epoch in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            opt.step()
            run.log_metric("loss", loss.item(), step=epoch)
    os.makedirs("out", exist_ok=True)
    np.savez("out/weights.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
    np.save("out/w0.npy", model[0].weight.detach().numpy())
"""


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="pip install torch==2.13.0")
def test_torch_training_seeded_with_seed_everything_reproduces_bit_identically(
    tmp_path: Path,
) -> None:
    root = tmp_path / "p"
    tether = make_project(root, {"train_torch.py": TORCH})
    commit(root)
    record(tether, "t", sys.executable, "train_torch.py")
    result = tether("reproduce", "t", "--series", "--json")
    report = last_json(result)
    statuses = {o["path"]: o["status"] for o in report["outputs"]}
    assert statuses["out/w0.npy"] == "identical"
    assert report["metrics"][0]["status"] == "equal"  # all 20 steps
    # Older NumPy wrote .npz members with the current time (identical contents, other
    # bytes); explain recognises that.
    if statuses["out/weights.npz"] == "identical":
        assert report["verdict"] == "REPRODUCED"
    else:
        assert report["verdict"] == "WITHIN TOLERANCE"
        explained = json.loads(tether("explain", "t", report["reproduction"], "--json").stdout)
        assert explained["causes"][0]["category"] == "output-format"
    assert result.exit_code == 0


# -- doctor -------------------------------------------------------------------------------


def test_doctor_lists_project_and_run_hazards_with_fixes(tmp_path: Path) -> None:
    root = tmp_path / "p"
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    tether = make_project(
        root,
        {
            "requirements.txt": "numpy==2.2.6\nscikit-learn>=1.4\npandas\n",
            "job.py": f"""\
                import os, pickle, urllib.request
                open({str(outside)!r}).read()
                urllib.request.urlopen({outside.as_uri()!r}).read()
                open("raw.csv").read()
                os.makedirs("out", exist_ok=True)
                pickle.dump({{"w": 1}}, open("out/model.bin", "wb"))
            """,
            "raw.csv": "x\n1\n",
        },
    )
    git(root, "add", "requirements.txt", "job.py")
    git(root, "commit", "-q", "-m", "code")
    (root / "notes.py").write_text("# not committed\n")
    record(tether, "j", sys.executable, "job.py")
    result = tether("doctor", "j", "--json")
    assert result.exit_code == 1
    codes = {f["code"]: f for f in json.loads(result.stdout)["findings"]}
    assert "scikit-learn" in codes["unpinned-requirements"]["message"]
    assert "pandas" in codes["unpinned-requirements"]["message"]
    assert "numpy" not in codes["unpinned-requirements"]["message"]
    assert "notes.py" in codes["untracked-source"]["message"]
    assert "raw.csv" in codes["unversioned-input"]["message"]
    assert "tether add raw.csv" in codes["unversioned-input"]["fix"]
    assert str(outside) in codes["absolute-input"]["message"]
    assert outside.as_uri() in codes["url-input"]["message"]
    assert "no-seed" in codes and "random-hashseed" in codes
    assert "out/model.bin" in codes["pickle-output"]["message"]  # found by its bytes
    assert "safetensors" in codes["pickle-output"]["fix"]
    assert "no-lock-file" not in codes  # requirements.txt is one
    text = tether("doctor", "j").stdout
    assert "fix:" in text and "hazard(s)" in text


def test_doctor_on_a_clean_seeded_project_is_quiet(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(
        root,
        {
            "requirements.txt": "numpy==2.2.6 --hash=sha256:abc\n",
            "go.py": "import tether\ntether.seed_everything(3)\nopen('out.txt', 'w').write('3')\n",
        },
    )
    commit(root)
    assert tether("run", "--seed", "3", "--name", "g", "--", sys.executable, "go.py").exit_code == 0
    result = tether("doctor", "g", "--json")
    findings = json.loads(result.stdout)["findings"]
    # torch may be installed in this interpreter; nothing else may be flagged.
    assert [f["code"] for f in findings if f["code"] != "torch-nondeterministic"] == []
    assert tether("doctor").exit_code == 0
    assert os.path.exists(root / ".tether")


def test_a_committed_input_comes_from_the_recorded_commit(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(
        root,
        {
            "config.txt": "alpha=1\n",
            "job.py": """\
                import os
                os.makedirs("out", exist_ok=True)
                open("out/echo.txt", "w").write(open("config.txt").read().upper())
            """,
        },
    )
    commit(root)
    record(tether, "j", sys.executable, "job.py")
    (root / "config.txt").write_text("alpha=2\n")  # edited since, not committed
    result = tether("reproduce", "j", "--json")
    assert result.exit_code == 0, result.output
    report = last_json(result)
    assert [(i["path"], i["source"]) for i in report["plan"]["inputs"]] == [("config.txt", "code")]
    assert report["verdict"] == "REPRODUCED"
    assert (root / "config.txt").read_text() == "alpha=2\n"
