"""Fixtures: real temporary projects with a real store and database, and the CLI run
in-process. Nothing of tether's own is mocked."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tether.cli import cli
from tether.workspace import Workspace, init_workspace


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No user settings, no TETHER_* variables, no colour, fixed width."""
    for var in list(os.environ):
        # PYTHONHASHSEED: seed_everything() sets it in-process, and a child would
        # inherit it into its recorded environment.
        if var.startswith("TETHER_") or var in ("SOURCE_DATE_EPOCH", "PYTHONHASHSEED"):
            monkeypatch.delenv(var)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


def write_tree(root: Path, tree: dict[str, Any]) -> None:
    """Create files from {"dir": {"file": "text" | bytes}}."""
    for name, value in tree.items():
        path = root / name
        if isinstance(value, dict):
            path.mkdir(parents=True, exist_ok=True)
            write_tree(path, value)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, bytes):
                path.write_bytes(value)
            else:
                path.write_text(value)


KITFILE = """\
manifestVersion: 1.0.0
package:
  name: demo
  version: 1.0.0
  authors: [Ada]
model:
  name: recommender
  path: models/model.pkl
  parameters: {k: 50}
code:
  - path: src
datasets:
  - name: ratings
    path: data/ratings.csv
docs:
  - path: README.md
"""


def demo_tree(model: bytes = b"model-v1" * 1000) -> dict[str, Any]:
    return {
        "Kitfile": KITFILE,
        "README.md": "# demo\n",
        "models": {"model.pkl": model},
        "src": {"train.py": "print('train')\n", "lib": {"util.py": "X = 1\n"}},
        "data": {"ratings.csv": "user,item,rating\n1,2,5\n"},
    }


TRAIN = """\
import pathlib, sys
data = pathlib.Path("data/ratings.csv").read_text()
pathlib.Path("models").mkdir(exist_ok=True)
pathlib.Path("models/model.pkl").write_text(f"trained on {len(data)} bytes, {sys.argv[1]}")
"""


def train(tether: Callable[..., Result], project: Workspace, name: str, variant: str) -> str:
    """Record a real 'tether run' that reads data/ratings.csv and writes models/model.pkl;
    returns its id."""
    import sys

    from tether.runs import record

    (project.root / "src" / "train.py").write_text(TRAIN)
    r = tether("run", "--name", name, "--seed", "42", "--", sys.executable, "src/train.py", variant)
    assert r.exit_code == 0, r.output
    return record.resolve(project.db, name)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Workspace]:
    """An initialized project with a Kitfile, a model, code, data and docs."""
    root = tmp_path / "proj"
    root.mkdir()
    write_tree(root, demo_tree())
    init_workspace(root)
    ws = Workspace.open(root)
    yield ws
    ws.close()


@pytest.fixture
def tether(project: Workspace) -> Callable[..., Result]:
    """Run the CLI in the project: tether("pack", "-t", "x:v1")."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(
            cli, ["-C", str(project.root), *args], input=input, catch_exceptions=False
        )

    return run
