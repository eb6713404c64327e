"""Fixtures: real temporary projects with a real store and database, and the CLI run
in-process. Nothing of tether's own is mocked."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tether.cli import cli
from tether.workspace import Workspace, init_workspace

# The suite runs once per engine: TETHER_TEST_DATABASE=postgresql gives every test its own
# database on a throwaway local cluster (a copy of a template made at the current schema).
BACKEND = os.environ.get("TETHER_TEST_DATABASE", "sqlite")
_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    from tests.pgcluster import cluster
    from tether.db.connection import open_database
    from tether.db.migrations import migrate
    from tether.db.url import DatabaseURL

    # Not under pytest's temp folder: as root the cluster runs as 'postgres', which may
    # not enter it.
    base = Path(tempfile.mkdtemp(prefix="tether-pg-"))
    with cluster(base) as c:
        c.admin("CREATE DATABASE tether_template")
        db = open_database(DatabaseURL.parse(c.url("tether_template"), root=Path("/")))
        try:
            migrate(db)
        finally:
            db.close()
        yield c
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def database(request: pytest.FixtureRequest, clean_env: None) -> Iterator[None]:
    """On PostgreSQL: a database of this test's own, named in the user settings (so a
    project that names another one, see ``separate_database``, keeps it)."""
    if BACKEND != "postgresql" or request.node.get_closest_marker("sqlite_only"):
        yield
        return
    c = request.getfixturevalue("pg_cluster")
    name = _new_database(c)
    settings = Path(os.environ["XDG_CONFIG_HOME"]) / "tether" / "config.toml"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f'[database]\nurl = "{c.url(name)}"\n')
    _test_databases.append(name)
    yield
    while _test_databases:
        c.admin(f"DROP DATABASE {_test_databases.pop()} WITH (FORCE)")


_test_databases: list[str] = []


def _new_database(c: Any) -> str:
    name = f"t{next(_names)}"
    c.admin(f"CREATE DATABASE {name} TEMPLATE tether_template")
    return name


def separate_database(request: pytest.FixtureRequest, root: Path) -> None:
    """Give the project at ``root`` (initialized) a database of its own, as two
    projects on two machines have; nothing to do on SQLite (one file per project)."""
    if BACKEND != "postgresql":
        return
    c = request.getfixturevalue("pg_cluster")
    name = _new_database(c)
    _test_databases.append(name)
    import tomlkit

    config = root / ".tether" / "config.toml"
    doc = tomlkit.parse(config.read_text())
    doc.setdefault("database", tomlkit.table())["url"] = c.url(name)
    config.write_text(tomlkit.dumps(doc))


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

    from tether.repositories import runs as runs_repo

    (project.root / "src" / "train.py").write_text(TRAIN)
    r = tether("run", "--name", name, "--seed", "42", "--", sys.executable, "src/train.py", variant)
    assert r.exit_code == 0, r.output
    return runs_repo.resolve(project.db, name)


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


# -- S3 through moto in server mode on loopback -------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="tether-data")
    yield endpoint
    server.stop()
