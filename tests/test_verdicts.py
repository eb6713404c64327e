"""Verdicts on the scripts people write: no REPRODUCED without evidence, no DIVERGED from
timestamps and caches, and explain that names the real nondeterminism. Real scripts,
real interpreters, real torch, matplotlib and scikit-learn where installed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.test_reproduce import commit, last_json, make_project, record

TORCH = """\
import torch
{seed}
model = torch.nn.Linear(8, 2)
torch.save(model.state_dict(), "model.pt")
"""

needs = {
    name: pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"needs {name}")
    for name in ("torch", "matplotlib", "sklearn")
}


@pytest.mark.torch
@needs["torch"]
@pytest.mark.parametrize("seeded", [False, True])
def test_torch_save_is_an_output_and_judged(tmp_path: Path, seeded: bool) -> None:
    seed = "torch.manual_seed(7)" if seeded else ""
    tether = make_project(tmp_path / "p", {"train.py": TORCH.format(seed=seed)})
    commit(tmp_path / "p")
    record(tether, "t", sys.executable, "train.py")
    run = json.loads(tether("runs", "show", "t", "--json").output)
    outputs = {f["path"]: f for f in run["files"] if f["role"] == "output"}
    assert outputs["model.pt"]["source"] == "hook" and outputs["model.pt"]["stored"]
    result = tether("reproduce", "t", "--json")
    verdict = last_json(result)["verdict"]
    if seeded:
        assert result.exit_code == 0 and verdict == "REPRODUCED", result.output
    else:
        assert result.exit_code == 3 and verdict == "DIVERGED", result.output


def test_a_script_that_only_prints_is_unverified(tmp_path: Path) -> None:
    tether = make_project(tmp_path / "p", {"hello.py": "print('accuracy 0.93')\n"})
    commit(tmp_path / "p")
    record(tether, "h", sys.executable, "hello.py", seed=1)
    result = tether("reproduce", "h")
    assert result.exit_code == 3, result.output
    assert "UNVERIFIED" in result.output and "-o PATH" in result.output
    assert "REPRODUCED" not in result.output
    shown = tether("runs", "show", "h").output
    assert "(UNVERIFIED)" in shown
    findings = json.loads(tether("doctor", "h", "--json").stdout)["findings"]
    assert "nothing-verifiable" in {f["code"] for f in findings}


def test_writes_below_python_are_found_by_the_scan(tmp_path: Path) -> None:
    script = "import subprocess\nsubprocess.run('echo 42 > shell.txt', shell=True, check=True)\n"
    tether = make_project(tmp_path / "p", {"job.py": script})
    commit(tmp_path / "p")
    record(tether, "s", sys.executable, "job.py")
    run = json.loads(tether("runs", "show", "s", "--json").output)
    found = {f["path"]: f["source"] for f in run["files"] if f["role"] == "output"}
    assert found == {"shell.txt": "scan"}
    assert last_json(tether("reproduce", "s", "--json"))["verdict"] == "REPRODUCED"


PLOT = """\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
rng = np.random.default_rng(3)
plt.plot(rng.normal(size=40))
plt.savefig("fig.pdf")
plt.savefig("fig.png")
"""


@needs["matplotlib"]
def test_seeded_plots_reproduce_despite_embedded_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh HOME: matplotlib writes its font cache there on first import, a side
    # effect that the reproduction does not rewrite and that is not a result.
    home = tmp_path / "fresh-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    tether = make_project(tmp_path / "p", {"plot.py": PLOT})
    commit(tmp_path / "p")
    record(tether, "plot", sys.executable, "plot.py")
    run = json.loads(tether("runs", "show", "plot", "--json").output)
    effects = [f["path"] for f in run["files"] if f["role"] == "side-effect"]
    assert any("matplotlib" in p for p in effects), run["files"]
    assert not any(f["role"] == "output" and f["path"].startswith("/") for f in run["files"])
    assert run["capture"]["source_date_epoch"] == str(int(run["started"]))
    result = tether("reproduce", "plot", "--json")
    report = last_json(result)
    assert result.exit_code == 0 and report["verdict"] == "REPRODUCED", result.output
    # Asked to verify side effects too: the cache is not written again, so it is missing.
    result = tether("reproduce", "plot", "--verify-outside", "--json")
    report = last_json(result)
    assert result.exit_code == 3 and report["verdict"] == "DIVERGED", result.output
    missing = [o["path"] for o in report["outputs"] if o["status"] == "missing"]
    assert missing and all("matplotlib" in p for p in missing)

    # Without SOURCE_DATE_EPOCH the PDF embeds the time of writing: the same content,
    # reported as such, and explain names the timestamp, not randomness.
    monkeypatch.setenv("TETHER_RUN_SOURCE_DATE_EPOCH", "0")
    record(tether, "plot2", sys.executable, "plot.py")
    import time

    time.sleep(1.1)  # PDF dates have one-second resolution
    result = tether("reproduce", "plot2", "--json")
    report = last_json(result)
    assert result.exit_code == 0 and report["verdict"] == "REPRODUCED", result.output
    assert "embedded timestamps" in report["reason"]
    statuses = {o["path"]: o["status"] for o in report["outputs"]}
    assert statuses["fig.pdf"] == "same-content"
    explained = json.loads(tether("explain", "plot2", report["reproduction"], "--json").output)
    categories = [c["category"] for c in explained["causes"]]
    assert categories[:1] == ["output-format"] and "randomness" not in categories
    assert "unseeded" not in categories


SKLEARN = """\
import numpy as np
from sklearn.ensemble import RandomForestRegressor
X = np.arange(200, dtype=float).reshape(100, 2)
y = X[:, 0] * 0.5 + np.random.normal(size=100)
model = RandomForestRegressor(n_estimators=5).fit(X, y)
np.save("pred.npy", model.predict(X))
"""


@needs["sklearn"]
def test_unseeded_sklearn_with_seed_flag_diverges_and_is_explained(tmp_path: Path) -> None:
    tether = make_project(tmp_path / "p", {"fit.py": SKLEARN})
    commit(tmp_path / "p")
    record(tether, "f", sys.executable, "fit.py", seed=42)
    result = tether("reproduce", "f", "--json")
    report = last_json(result)
    assert result.exit_code == 3 and report["verdict"] == "DIVERGED", result.output
    explained = json.loads(tether("explain", "f", report["reproduction"], "--json").output)
    first = explained["causes"][0]
    assert first["category"] == "unseeded", explained["causes"]
    assert "numpy" in first["title"] and "sklearn" in first["title"]
    assert any("--seed 42 was given" in d for d in first["details"])
    findings = json.loads(tether("doctor", "f", "--json").stdout)["findings"]
    no_seed = [f for f in findings if f["code"] == "no-seed"]
    assert no_seed and "--seed 42" in no_seed[0]["message"]


def test_a_seeded_run_gets_no_randomness_hint(tmp_path: Path) -> None:
    script = "import random\nrandom.seed(1)\nopen('r.txt', 'w').write(str(random.random()))\n"
    tether = make_project(tmp_path / "p", {"r.py": script})
    commit(tmp_path / "p")
    record(tether, "a", sys.executable, "r.py", seed=1)
    record(tether, "b", sys.executable, "r.py", seed=1)
    explained = json.loads(tether("explain", "a", "b", "--json").output)
    assert not explained["results_differ"] and explained["causes"] == []
    findings = json.loads(tether("doctor", "a", "--json").stdout)["findings"]
    assert "no-seed" not in {f["code"] for f in findings}


def test_a_committed_csv_and_earlier_outputs_are_not_code(tmp_path: Path) -> None:
    script = (
        "import csv\nrows = list(csv.reader(open('data.csv')))\n"
        "open('out.txt', 'w').write(str(len(rows)))\n"
    )
    root = tmp_path / "p"
    tether = make_project(root, {"job.py": script, "data.csv": "a\n1\n"})
    commit(root)
    record(tether, "a", sys.executable, "job.py", seed=1)
    (root / "data.csv").write_text("a\n1\n2\n")
    commit(root, "more data")
    record(tether, "b", sys.executable, "job.py", seed=1)
    explained = json.loads(tether("explain", "a", "b", "--json").output)
    categories = [c["category"] for c in explained["causes"]]
    assert categories and categories[0] == "data", explained["causes"]
    assert "code" not in categories
