"""The database boundary: choosing the engine, explicit migrations, a database made by an
earlier release, concurrency, and errors that reach users as one line with a hint."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tether.cli import cli
from tether.db.connection import open_database
from tether.db.url import DatabaseURL
from tether.errors import ConfigError
from tether.registry import models
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.repositories.run_filter import list_runs
from tether.runs.record import NewRun
from tether.workspace import Workspace, init_workspace

from .conftest import BACKEND, demo_tree, write_tree

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0"


def _cli(root: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["-C", str(root), *args])


def test_urls_parse_and_bad_ones_are_refused(tmp_path: Path) -> None:
    url = DatabaseURL.parse("sqlite:///.tether/tether.db", root=tmp_path)
    assert url.dialect == "sqlite" and url.path == tmp_path / ".tether" / "tether.db"
    assert DatabaseURL.parse("sqlite:////var/t.db", root=tmp_path).path == Path("/var/t.db")
    pg = DatabaseURL.parse("postgres://ml:s3cret@db:5433/tether", root=tmp_path)
    assert pg.dialect == "postgresql" and pg.url.startswith("postgresql://")
    assert "s3cret" not in pg.display and ":***@" in pg.display
    for bad in ("mysql://db/x", "sqlite://", "postgresql://db/", "tether.db"):
        with pytest.raises(ConfigError) as err:
            DatabaseURL.parse(bad, root=tmp_path)
        assert err.value.hint and "s3cret" not in str(err.value)


def test_a_password_never_goes_into_settings(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    res = _cli(root, "init", "--db", "postgresql://ml:s3cret@127.0.0.1:1/tether")
    assert res.exit_code != 0
    assert "password" in res.output and "PGPASSWORD" in res.output
    assert (
        not (root / ".tether" / "config.toml").exists()
        or "s3cret" not in (root / ".tether" / "config.toml").read_text()
    )
    # Written by hand into the project's settings: refused when read, too.
    init_workspace(root, propose_kitfile=False)
    config = root / ".tether" / "config.toml"
    config.write_text(
        config.read_text().replace(
            "[database]\n", '[database]\nurl = "postgresql://ml:s3cret@db/x"\n', 1
        )
    )
    res = _cli(root, "runs", "list")
    assert res.exit_code != 0 and "carries a password" in res.output


def test_an_unreachable_database_is_one_line_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    init_workspace(root, propose_kitfile=False)
    # Port 1 on loopback: nothing listens there.
    monkeypatch.setenv("TETHER_DATABASE_URL", "postgresql://tether@127.0.0.1:1/none")
    res = _cli(root, "runs", "list")
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: database error") and "Traceback" not in res.output
    assert lines[1].startswith("hint: check that PostgreSQL at postgresql://tether@127.0.0.1:1")


@pytest.mark.sqlite_only
def test_a_database_from_release_0_1_0_opens_after_migrate(tmp_path: Path) -> None:
    """The database a 0.1.0 project has: every run, metric, tag, version and alias is
    there, through the library, after 'tether migrate'."""
    root = tmp_path / "p"
    root.mkdir()
    init_workspace(root, propose_kitfile=False)
    shutil.copy(FIXTURE / "tether.db", root / ".tether" / "tether.db")
    facts = json.loads((FIXTURE / "facts.json").read_text())
    res = _cli(root, "migrate", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{") :])["dialect"] == "sqlite"

    ws = Workspace.open(root)
    runs = {r.id: r for r in list_runs(ws.db, limit=None).runs}
    runs = {r.id: r for r in runs_repo.load_runs(ws.db, list(runs))}
    assert {i: {"name": r.name, "status": r.status, "seed": r.seed} for i, r in runs.items()} == (
        facts["runs"]
    )
    assert (
        sorted([i, k, v] for i, r in runs.items() for k, v in r.params.items()) == (facts["params"])
    )
    assert sorted([i, k, v] for i, r in runs.items() for k, v in r.tags.items()) == facts["tags"]
    points = sorted(
        [i, key, step, value]
        for i in runs
        for key, series in metrics_repo.metric_series(ws.db, i).items()
        for step, _at, value in series
    )
    assert points == facts["metrics"]
    versions = models.versions(ws, "recs")
    assert sorted([v.model, v.version, str(v.digest)] for v in versions) == facts["versions"]
    assert sorted(["recs", a, v.version] for v in versions for a in v.aliases) == (facts["aliases"])
    events = [
        [e.model, e.alias, e.action, e.old_version, e.new_version, e.reason]
        for e in models.history(ws, "recs")
    ]
    assert events == facts["model_events"]
    links = sorted(
        [a, kind, b] for i in runs for a, kind, b, _ in runs_repo.links(ws.db, i) if a == i
    )
    assert links == facts["links"]
    from tether.modelkit.tags import history

    for repo, tag, digest in facts["kit_tags"]:
        assert digest in {e.new_digest for e in history(ws, repo, tag)}
    ws.close()


@pytest.mark.sqlite_only
def test_an_older_schema_asks_for_migrate_and_a_newer_is_refused(tmp_path: Path) -> None:
    from tether.db.migrations import migrate
    from tether.db.schema_sqlite import MIGRATIONS

    root = tmp_path / "p"
    root.mkdir()
    write_tree(root, demo_tree())
    init_workspace(root, propose_kitfile=False)
    path = root / ".tether" / "tether.db"
    path.unlink()
    # A database an older tether made: every migration but the last.
    db = open_database(DatabaseURL.parse("sqlite:///.tether/tether.db", root=root))
    migrate(db, through=MIGRATIONS[-2].name)
    db.close()

    res = _cli(root, "runs", "list")
    assert res.exit_code == 1
    assert "older than this tether" in res.output and "tether migrate" in res.output
    res = _cli(root, "migrate")
    assert res.exit_code == 0 and MIGRATIONS[-1].name in res.output, res.output
    assert _cli(root, "runs", "list").exit_code == 0
    assert "up to date" in _cli(root, "migrate").output


def test_migrate_on_an_up_to_date_database_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    init_workspace(root, propose_kitfile=False)
    res = _cli(root, "migrate", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    assert report["applied"] == [] and report["dialect"] == BACKEND


_WORKER = textwrap.dedent(
    """
    import sys, time
    import tether
    from tether.registry import models
    from tether.workspace import Workspace

    root, me = sys.argv[1], int(sys.argv[2])
    with tether.start_run(name=f"w{me}", project=root) as run:
        for step in range(10_000):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
    ws = Workspace.open(root)
    for j in range(50):
        models.set_alias(ws, "recs", f"mine-{me}", f"v{1 + j % 2}", reason=f"{me}-{j}")
        models.set_alias(ws, "recs", "shared", f"v{1 + (me + j) % 2}", reason=f"s{me}-{j}")
    ws.close()
    """
)


@pytest.mark.slow
def test_eight_processes_log_and_move_aliases_at_once(project: Workspace, tmp_path: Path) -> None:
    """Every point and every alias event lands, the shared alias's history is one
    unbroken chain (each move starts where the one before ended), and nothing fails."""
    root = project.root
    runner = CliRunner()
    for tag, body in (("recs:v1", b"one"), ("recs:v2", b"two")):
        (root / "models" / "model.pkl").write_bytes(body * 100)
        assert runner.invoke(cli, ["-C", str(root), "pack", "-t", tag]).exit_code == 0
        res = runner.invoke(cli, ["-C", str(root), "model", "register", "recs", "--from", tag])
        assert res.exit_code == 0, res.output
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-2000:]
    elapsed = time.monotonic() - t0

    runs = list_runs(project.db, limit=None).runs
    assert sorted(r.name or "" for r in runs) == [f"w{i}" for i in range(8)]
    for run in runs:
        series = metrics_repo.metric_series(project.db, run.id)["loss"]
        assert [s for s, _at, _v in series] == list(range(10_000))
        assert run.status == "finished" and run.metrics["loss"].count == 10_000
    events = models.history(project, "recs")
    for i in range(8):
        mine = [e for e in events if e.alias == f"mine-{i}"]
        assert [e.reason for e in mine] == [f"{i}-{j}" for j in range(50)]
    shared = [e for e in events if e.alias == "shared"]
    for before, after in itertools.pairwise(shared):
        assert after.old_version == before.new_version
    final = models.resolve(project, "recs:shared").version
    assert shared[-1].new_version == final
    assert elapsed < 600


def test_reading_runs_writes_nothing(project: Workspace) -> None:
    """A run whose process vanished reads as killed, but listing and showing it leave
    the database as it was; a command that writes records it."""
    ghost = NewRun(
        name="ghost",
        command=["python", "x.py"],
        cwd=".",
        host=socket.gethostname(),
        user="u",
        pid=2**22 + 12345,  # no such process
    )
    run_id = runs_repo.create_run(project.db, ghost)
    for args in (("runs", "list", "--json"), ("runs", "show", run_id, "--json")):
        res = _cli(project.root, *args)
        assert res.exit_code == 0, res.output
        assert '"killed"' in res.output
    [row] = project.db.query("SELECT status FROM runs WHERE id = ?", (run_id,))
    assert row["status"] == "running"
    res = _cli(project.root, "runs", "delete", "ghost")
    assert res.exit_code == 0, res.output  # not running any more: no --force needed
    assert not project.db.query("SELECT 1 FROM runs WHERE id = ?", (run_id,))


def test_records_round_trip_through_their_json(project: Workspace) -> None:
    """What a face sends (to_json) reads back as the same record (from_json)."""
    from tether.api import runs
    from tether.modelkit.tags import history
    from tether.registry.records import ModelEvent, ModelVersion
    from tether.repositories.kits import TagEvent
    from tether.runs.api import start_run
    from tether.runs.record import RunRecord

    (project.root / "out.txt").write_text("result\n")
    with start_run(name="r", params={"k": 3}, tags={"team": "x"}, project=project.root) as run:
        run.log_metric("loss", 0.5, step=1)
        run.log_artifact(project.root / "out.txt")
    record = runs.show(project, "r").run
    assert record.files and record.metrics and record.code.kind != "none"
    assert RunRecord.from_json(record.to_json()) == record
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record

    runner = CliRunner()
    assert runner.invoke(cli, ["-C", str(project.root), "pack", "-t", "demo:v1"]).exit_code == 0
    res = runner.invoke(cli, ["-C", str(project.root), "model", "register", "demo", "--from", "r"])
    assert res.exit_code == 0, res.output
    runner.invoke(cli, ["-C", str(project.root), "model", "alias", "demo", "prod", "v1"])
    (version,) = models.versions(project, "demo")
    assert ModelVersion.from_json(json.loads(json.dumps(version.to_json()))) == version
    for event in models.history(project, "demo"):
        assert ModelEvent.from_json(json.loads(json.dumps(event.to_json()))) == event
    for tag_event in history(project, "demo", "v1"):
        assert TagEvent.from_json(json.loads(json.dumps(tag_event.to_json()))) == tag_event


def test_init_with_a_postgresql_url_records_there(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """'tether init --db postgresql://…' writes the URL (no password) to the committed
    settings and the project's runs land in that database, not in .tether/tether.db."""
    from tests.pgcluster import pg_bin

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    cluster = request.getfixturevalue("pg_cluster")
    cluster.admin("CREATE DATABASE init_here")
    url = cluster.url("init_here")
    root = tmp_path / "p"
    root.mkdir()
    (root / "train.py").write_text("import tether\nwith tether.start_run(name='pg'):\n    pass\n")
    res = _cli(root, "init", "--db", url)
    assert res.exit_code == 0, res.output
    config = (root / ".tether" / "config.toml").read_text()
    assert f'url = "{url}"' in config
    res = _cli(root, "run", "--", sys.executable, "train.py")
    assert res.exit_code == 0, res.output
    assert not (root / ".tether" / "tether.db").exists()
    ws = Workspace.open(root)
    assert ws.db.dialect.name == "postgresql"
    assert [r.name for r in list_runs(ws.db).runs] == ["pg"]
    ws.close()
    cluster.admin("DROP DATABASE init_here WITH (FORCE)")
