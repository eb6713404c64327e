"""tether run and the runs API, on real projects: real git, real child processes, the
real SQLite database and store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tether.errors import ParamConflict, UsageError
from tether.hashing import Digest, hash_file
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.runs.code import strip_credentials
from tether.runs.launch import RunSpec, run_command
from tether.workspace import Workspace

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
}


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=root,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def script(root: Path, name: str, body: str) -> Path:
    path = root / name
    path.write_text(textwrap.dedent(body))
    return path


def show(tether: Callable[..., Result], ref: str = "latest") -> dict:
    result = tether("runs", "show", ref, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


TRAIN = """\
    import sys
    import tether
    data = open("data/ratings.csv").read()
    with open("models/out.bin", "wb") as f:
        f.write(data.encode() * 2)
    with tether.start_run(params={"lr": 0.01}) as run:
        for step in range(3):
            run.log_metric("loss", 1.0 / (step + 1))
    print("trained", len(data))
    print("to stderr", file=sys.stderr)
"""


def test_run_captures_files_code_env_and_output(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    root = project.root
    git(root, "init", "-q")
    script(root, "src/train.py", TRAIN)
    git(root, "add", "src", "Kitfile", "README.md")
    git(root, "commit", "-qm", "first")
    git(root, "remote", "add", "origin", "https://bob:s3cret@git.example.org/team/recs.git")
    (root / "src" / "train.py").write_text(textwrap.dedent(TRAIN).replace("1.0 /", "2.0 /"))
    (root / "src" / "new_helper.py").write_text("X = 1\n")  # untracked source

    result = tether("run", "--name", "first", "--seed", "7", "-p", "k=20", "--tag", "team=recs",
                    "--", sys.executable, "src/train.py")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained" in result.output
    run = show(tether)
    assert run["status"] == "finished" and run["exit_code"] == 0
    assert run["name"] == "first" and run["seed"] == 7
    assert run["params"] == {"k": "20", "lr": "0.01"}
    assert run["tags"] == {"team": "recs"}
    assert run["metrics"]["loss"]["last"] == pytest.approx(2 / 3)
    assert run["metrics"]["loss"]["count"] == 3

    files = {(f["role"], f["path"]): f for f in run["files"]}
    ratings = files[("input", "data/ratings.csv")]
    assert ratings["digest"] == str(hash_file(root / "data/ratings.csv")[0])
    assert ratings["source"] == "audit"
    out = files[("output", "models/out.bin")]
    assert out["stored"] and project.store.has(Digest.parse(out["digest"]))
    # The script's own source is code, not data.
    assert ("input", "src/train.py") not in files

    code = run["code"]
    assert code["kind"] == "git" and len(code["commit"]) == 40
    assert code["remote"] == "https://git.example.org/team/recs.git"
    assert "s3cret" not in json.dumps(run)
    assert code["dirty"] and "src/new_helper.py" in code["untracked"]
    diff = project.store.read_bytes(Digest.parse(code["diff_digest"])).decode()
    assert "2.0 /" in diff and "1.0 /" in diff

    env = run["environment"]
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["env_vars"]["PYTHONHASHSEED"] == "7"
    assert env["env_vars"]["TETHER_SEED"] == "7"
    assert "click" in env["packages"]
    assert env["cpu"]["count"] >= 1 and env["memory_bytes"] > 0
    assert run["capture"]["audit"]["active"]

    log = tether("runs", "log", run["id"])
    assert "trained" in log.output and "to stderr" in log.output


def test_run_outside_git_snapshots_sources(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    script(project.root, "src/job.py", "print(open('data/ratings.csv').read()[:4])\n")
    result = tether("run", "--", sys.executable, "src/job.py")
    assert result.exit_code == 0, result.output
    code = show(tether)["code"]
    assert code["kind"] == "files"
    manifest = json.loads(project.store.read_bytes(Digest.parse(code["snapshot_digest"])))
    assert "src/job.py" in manifest["files"]
    assert "Kitfile" in manifest["files"]
    # the snapshot blobs are kept alive by the run: gc must not take them
    from tether.data.gc import collect_garbage

    collect_garbage(project, dry_run=False)
    assert project.store.has(Digest.parse(manifest["files"]["src/job.py"]))


def test_failing_command_is_recorded_and_exit_status_kept(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    script(project.root, "boom.py", "import sys\nprint('about to fail')\nsys.exit(3)\n")
    result = tether("run", "--", sys.executable, "boom.py")
    assert result.exit_code == 3
    run = show(tether)
    assert run["status"] == "failed" and run["exit_code"] == 3
    assert "exit status 3" in run["reason"]


def test_uncaught_exception_inside_start_run_marks_failure(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    script(project.root, "crash.py", """\
        import tether
        with tether.start_run() as run:
            run.log_metric("loss", 0.5)
            raise RuntimeError("diverged")
    """)  # fmt: skip
    result = tether("run", "--", sys.executable, "crash.py")
    assert result.exit_code == 1
    run = show(tether)
    assert run["status"] == "failed"
    assert run["metrics"]["loss"]["last"] == 0.5  # flushed on the way out


def test_unknown_command_changes_nothing(project: Workspace, tether: Callable[..., Result]) -> None:
    result = tether("run", "--", "no-such-command-xyz")
    assert result.exit_code == 2
    assert "command not found" in result.output
    assert project.db.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0


def test_bad_param_and_seed_are_refused_before_running(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    marker = project.root / "ran"
    script(project.root, "touch.py", f"open({str(marker)!r}, 'w').close()\n")
    assert tether("run", "-p", "novalue", "--", sys.executable, "touch.py").exit_code == 2
    assert tether("run", "--seed", "-1", "--", sys.executable, "touch.py").exit_code == 2
    assert not marker.exists()
    assert project.db.query("SELECT count(*) AS n FROM runs")[0]["n"] == 0


def _tether_process(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tether", "-C", str(root), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


SLEEPER = """\
    import time, pathlib, tether
    with tether.start_run() as run:
        run.log_metric("progress", 1.0)
        run.flush()
        pathlib.Path("started").touch()
        time.sleep(60)
"""


def test_sigterm_to_tether_records_killed(project: Workspace) -> None:
    script(project.root, "sleeper.py", SLEEPER)
    proc = _tether_process(project.root, "run", "--", sys.executable, "sleeper.py")
    _wait_for(project.root / "started")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    [row] = project.db.query("SELECT status, reason FROM runs")
    assert row["status"] == "killed"
    assert "SIGTERM" in row["reason"]
    series = metrics_repo.metric_series(project.db, runs_repo.resolve(project.db, "latest"))
    assert series["progress"][0][2] == 1.0


def test_sigkilled_tether_is_reaped_not_left_running(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    script(project.root, "sleeper.py", SLEEPER)
    proc = _tether_process(project.root, "run", "--", sys.executable, "sleeper.py")
    _wait_for(project.root / "started")
    proc.kill()
    proc.communicate(timeout=30)
    [row] = project.db.query("SELECT id, status FROM runs")
    assert row["status"] == "running"
    # the orphaned command is still sleeping: stop it, as a user would
    subprocess.run(["pkill", "-f", "sleeper.py"], check=False)
    listing = tether("runs", "list", "--json")
    [run] = json.loads(listing.output)["runs"]
    assert run["status"] == "killed"
    assert "vanished" in run["reason"]


def test_command_killed_by_signal(project: Workspace, tether: Callable[..., Result]) -> None:
    script(project.root, "suicide.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    result = tether("run", "--", sys.executable, "suicide.py")
    assert result.exit_code == 128 + signal.SIGKILL
    run = show(tether)
    assert run["status"] == "killed" and "SIGKILL" in run["reason"]


def test_outputs_declared_with_o_and_non_python_commands(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    result = tether("run", "-o", "out", "--", "sh", "-c", "mkdir -p out && echo hi > out/a.txt")
    assert result.exit_code == 0, result.output
    assert "no Python process reported" in result.output
    files = show(tether)["files"]
    assert [(f["role"], f["path"], f["source"], f["stored"]) for f in files] == [
        ("input", "data/ratings.csv", "kitfile", False),
        ("output", "out/a.txt", "declared", True),
    ]


def test_rename_into_place_records_final_name(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    script(project.root, "atomic.py", """\
        import os
        with open("model.tmp", "w") as f:
            f.write("weights")
        os.replace("model.tmp", "model.bin")
    """)  # fmt: skip
    assert tether("run", "--", sys.executable, "atomic.py").exit_code == 0
    outputs = [f["path"] for f in show(tether)["files"] if f["role"] == "output"]
    assert outputs == ["model.bin"]


def test_seeding_detection(project: Workspace, tether: Callable[..., Result]) -> None:
    script(project.root, "seeded.py", """\
        import random
        import numpy as np
        random.seed(1)
        np.random.seed(2)
        rng = np.random.default_rng(3)
        from sklearn.utils import check_random_state  # libraries' own seeding is ignored
        check_random_state(4)
    """)  # fmt: skip
    pytest.importorskip("sklearn")
    assert tether("run", "--", sys.executable, "seeded.py").exit_code == 0
    seeding = show(tether)["capture"]["seeding"]
    assert seeding == [
        {"call": "random.seed", "seed": "1"},
        {"call": "numpy.random.seed", "seed": "2"},
        {"call": "numpy.random.default_rng", "seed": "3"},
    ]
    script(project.root, "unseeded.py", "import random\nprint(random.random())\n")
    assert tether("run", "--", sys.executable, "unseeded.py").exit_code == 0
    assert show(tether)["capture"]["seeding"] == []
    assert "none seen" in tether("runs", "show", "latest").output


def test_seed_everything_is_recorded_on_the_run(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    script(project.root, "se.py", """\
        import random, tether
        report = tether.seed_everything(123, deterministic=True)
        assert report.recorded and "random" in report.seeded
        print(random.random())
    """)  # fmt: skip
    first = tether("run", "--", sys.executable, "se.py")
    assert first.exit_code == 0, first.output
    assert show(tether)["capture"]["seed_everything"]["seed"] == 123
    second = tether("run", "--", sys.executable, "se.py")
    assert first.output.splitlines()[0] == second.output.splitlines()[0]


def test_seed_everything_alone(project: Workspace) -> None:
    import random

    import tether

    report = tether.seed_everything(5)
    a = random.random()
    tether.seed_everything(5)
    assert random.random() == a
    assert not report.recorded and report.seed == 5
    with pytest.raises(UsageError):
        tether.seed_everything(-1)


def test_params_are_write_once_and_metrics_are_series(project: Workspace) -> None:
    import tether

    with tether.start_run(name="api", project=project.root, params={"k": 50}) as run:
        run.log_param("k", 50)  # same value: fine
        with pytest.raises(ParamConflict):
            run.log_param("k", 60)
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 10})
        run.log_metric("loss", float("nan"), step=10)
        run.set_tag("stage", "dev")
        run.set_tag("stage", "prod")  # tags move
        (project.root / "artifact.txt").write_text("result")
        run.log_artifact(project.root / "artifact.txt")
    [loaded] = runs_repo.load_runs(project.db, [run.id])
    assert loaded.status == "finished"
    assert loaded.params == {"k": "50"}
    assert loaded.tags == {"stage": "prod"}
    assert loaded.metrics["acc"].last == pytest.approx(0.4)
    loss = loaded.metrics["loss"]
    assert loss.step == 10 and loss.last != loss.last  # NaN at the last step
    assert loss.min == pytest.approx(0.2) and loss.max == 1.0 and loss.count == 6
    series = metrics_repo.metric_series(project.db, run.id, "acc")["acc"]
    assert [s for s, _, _ in series] == [0, 1, 2, 3, 4]
    [artifact] = loaded.files_with_role("artifact")
    assert artifact.stored and artifact.path == "artifact.txt"


def test_log_step_takes_a_frameworks_values_as_they_are(project: Workspace) -> None:
    import numpy as np

    import tether

    with tether.start_run(name="steps", project=project.root) as run:
        for step in range(3):
            run.log_step({"loss": np.float32(1 / (step + 1)), "note": "n/a", "": 1.0}, step)
        run.flush()  # converted by the flusher: the step's own thread never waits
        run.log_step({"loss": 0.125}, 10)
    [loaded] = runs_repo.load_runs(project.db, [run.id])
    assert set(loaded.metrics) == {"loss"}  # no number, no valid key: left out, no error
    series = metrics_repo.metric_series(project.db, run.id, "loss")["loss"]
    assert [(s, v) for s, _, v in series] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3)),
                                              (10, 0.125)]  # fmt: skip


def test_standalone_run_watches_files(project: Workspace) -> None:
    import tether

    with tether.start_run(project=project.root) as run:
        (project.root / "data" / "ratings.csv").read_text()
        (project.root / "models" / "new.bin").write_bytes(b"w")
    [loaded] = runs_repo.load_runs(project.db, [run.id])
    paths = {(f.role, f.path) for f in loaded.files}
    assert ("input", "data/ratings.csv") in paths
    assert ("output", "models/new.bin") in paths
    assert loaded.env_digest is not None


def test_keyboard_interrupt_in_api_marks_killed(project: Workspace) -> None:
    import tether

    with pytest.raises(KeyboardInterrupt), tether.start_run(project=project.root) as run:
        raise KeyboardInterrupt
    [loaded] = runs_repo.load_runs(project.db, [run.id])
    assert loaded.status == "killed"


WRITER = """\
    import sys, tether
    with tether.start_run(name=sys.argv[1], project=sys.argv[2]) as run:
        run.log_param("worker", sys.argv[1])
        for step in range(int(sys.argv[3])):
            run.log_metric("x", step)
            if step % 500 == 0:
                run.flush()  # many small transactions racing the other writers
"""


def test_concurrent_processes_lose_nothing(project: Workspace, tmp_path: Path) -> None:
    path = script(tmp_path, "writer.py", WRITER)
    points = 3000
    procs = [
        subprocess.Popen([sys.executable, str(path), f"w{i}", str(project.root), str(points)])
        for i in range(4)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    from tether.repositories import metrics as metrics_repo
    from tether.repositories import runs as runs_repo

    found = []
    for i in range(4):
        run_id = runs_repo.resolve(project.db, f"w{i}")
        values = [v for pts in metrics_repo.metric_series(project.db, run_id).values()
                  for _, _, v in pts]  # fmt: skip
        found.append((len(values), max(values)))
    assert found == [(points, points - 1)] * 4


def test_resolve_and_delete(project: Workspace, tether: Callable[..., Result]) -> None:
    import tether as api

    with api.start_run(name="a", project=project.root) as first:
        pass
    with api.start_run(name="b", project=project.root) as second:
        pass
    assert runs_repo.resolve(project.db, "a") == first.id
    assert runs_repo.resolve(project.db, first.id[:20].upper()) == first.id
    assert runs_repo.resolve(project.db, "latest") == second.id
    result = tether("runs", "show", "nope")
    assert result.exit_code == 1 and "no run with id or name" in result.output
    assert tether("runs", "delete", "a").exit_code == 0
    assert [r["name"] for r in project.db.query("SELECT name FROM runs")] == ["b"]


def test_joined_run_rejects_a_stale_run_id(
    project: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tether

    monkeypatch.setenv("TETHER_RUN_ID", "01nonexistentrunid0000000")
    monkeypatch.setenv("TETHER_PROJECT", str(project.root))
    with pytest.raises(tether.TetherError, match="names no run"):
        tether.start_run()


def test_credentials_are_stripped_from_remotes() -> None:
    assert strip_credentials("https://u:tok@h.org:8443/r.git?x=1") == "https://h.org:8443/r.git"
    assert strip_credentials("git@github.com:org/repo.git") == "git@github.com:org/repo.git"


def test_run_command_library_api(project: Workspace, tmp_path: Path) -> None:
    import io

    script(project.root, "hello.py", "print('hello from child')\n")
    out, err = io.BytesIO(), io.BytesIO()
    spec = RunSpec([sys.executable, "hello.py"], cwd=project.root)
    result = run_command(project, spec, stdout=out, stderr=err)
    assert result.status == "finished"
    assert out.getvalue() == b"hello from child\n"
    assert result.env_digest and result.audit_active


def test_sigint_to_tether_records_interrupted(project: Workspace) -> None:
    script(project.root, "sleeper.py", SLEEPER)
    proc = _tether_process(project.root, "run", "--", sys.executable, "sleeper.py")
    _wait_for(project.root / "started")
    proc.send_signal(signal.SIGINT)  # not from a terminal: tether forwards it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err.decode()
    [row] = project.db.query("SELECT status, reason FROM runs")
    assert row["status"] == "killed" and "interrupted" in row["reason"]


def test_run_blobs_survive_gc_until_the_run_is_deleted(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    script(project.root, "w.py", "open('result.bin', 'wb').write(b'unique output bytes')\n")
    assert tether("run", "--name", "keep", "--", sys.executable, "w.py").exit_code == 0
    run = show(tether)
    [out] = [f for f in run["files"] if f["role"] == "output"]
    blobs = [Digest.parse(out["digest"]), Digest.parse(run["log_digest"])]
    assert tether("gc", "--force").exit_code == 0
    assert all(project.store.has(d) for d in blobs)
    assert tether("runs", "delete", "keep").exit_code == 0
    assert tether("gc", "--force").exit_code == 0
    assert not any(project.store.has(d) for d in blobs)


def test_logging_from_several_threads_of_one_process(project: Workspace) -> None:
    import threading

    import tether

    with tether.start_run(project=project.root, watch_files=False) as run:

        def work(i: int) -> None:
            for step in range(2000):
                run.log_metric(f"t{i}", step, step=step)
                if step % 400 == 0:
                    run.set_tag(f"t{i}", step)
                    run.flush()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    [loaded] = runs_repo.load_runs(project.db, [run.id])
    assert {k: m.count for k, m in loaded.metrics.items()} == {f"t{i}": 2000 for i in range(4)}
    assert loaded.tags == {f"t{i}": "1600" for i in range(4)}


def test_active_run_follows_the_thread_that_started_it(project: Workspace) -> None:
    """Two threads with a run each log to their own; a helper thread with none logs to
    the process's run."""
    import threading

    from tether.runs import api

    seen: dict[str, str | None] = {}
    ready = threading.Barrier(2)

    def worker(name: str) -> None:
        with api.start_run(name=name, project=project.root, watch_files=False) as run:
            ready.wait(timeout=30)  # both runs open at once
            active = api.active_run()
            seen[name] = active.id if active is not None else None
            assert active is run
            ready.wait(timeout=30)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"] != seen["b"] and None not in seen.values()
    assert api.active_run() is None

    with api.start_run(name="main", project=project.root, watch_files=False) as main:
        helper: list[object] = []
        t = threading.Thread(target=lambda: helper.append(api.active_run()))
        t.start()
        t.join()
        assert helper == [main]


@pytest.mark.sqlite_only
def test_logging_never_waits_for_the_database(project: Workspace) -> None:
    """Points go to a buffer that a thread of the run writes: while another process
    holds the database's write lock, a training loop logging 25,000 points (past the
    batch size) goes on, and every point is written once the lock is released."""
    import sqlite3

    from tether.runs.api import BATCH, start_run

    run = start_run(project=project.root, watch_files=False)
    holder = sqlite3.connect(project.dot / "tether.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        for i in range(BATCH * 2 + 5_000):
            run.log_metric("loss", 1 / (i + 1), step=i)
    finally:
        holder.execute("COMMIT")
        holder.close()
    run.end()
    series = runs_repo.load_runs(project.db, [run.id])[0].metrics["loss"]
    assert series.count == BATCH * 2 + 5_000
