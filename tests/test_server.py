"""The team server on real components: a PostgreSQL cluster on 127.0.0.1, a blob folder,
'tether server' in its own process. Two users, grants, tokens that expire or are
revoked, the audit trail, and a walk of every route without a token."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tether.api import runs as api_runs
from tether.cli import cli
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.runs.record import NewRun
from tether.team.deployment import Deployment
from tether.workspace import Workspace, init_workspace

from . import conftest


@pytest.fixture
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cluster = request.getfixturevalue("pg_cluster")
    name = f"srv{next(conftest._names)}"
    cluster.admin(f"CREATE DATABASE {name}")
    conftest._test_databases.append(name)
    yield cluster.url(name), tmp_path / "blobs"


def admin(deployment: tuple[str, Path | str], *args: str) -> str:
    url, blobs = deployment
    result = CliRunner().invoke(
        cli, ["server", "--db", url, "--blobs", str(blobs), *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def token_of(deployment: tuple[str, Path | str], user: str, *extra: str) -> str:
    out = admin(deployment, "token", "create", user, "--json", *extra)
    return str(json.loads(out[out.index("{") :])["token"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def team(deployment: tuple[str, Path]) -> Iterator[dict[str, Any]]:
    """ada (write on recs), bob (no grant), root (server admin); a run in recs; the
    server running."""
    admin(deployment, "user", "add", "ada")
    admin(deployment, "user", "add", "bob")
    admin(deployment, "user", "add", "root", "--admin")
    admin(deployment, "project", "add", "recs")
    admin(deployment, "project", "add", "other")
    admin(deployment, "grant", "ada", "recs", "write")
    tokens = {u: token_of(deployment, u) for u in ("ada", "bob", "root")}
    # A run in the project, as a sync would leave it.
    url, blobs = deployment
    dep = Deployment(url, blobs)
    ws = dep.project("recs")
    run_id = runs_repo.create_run(ws.db, NewRun(
        name="<b>shared</b>", command=["python", "train.py"], cwd=".", host="h", user="ada",
        pid=1, seed=1, started=time.time(),
    ))  # fmt: skip
    runs_repo.log_params(ws.db, run_id, {"lr": "0.1"})
    metrics_repo.insert_metrics(ws.db, run_id, [("rmse", 0, time.time(), 0.9)])
    runs_repo.finish_run(ws.db, run_id, "finished", ended=time.time())
    dep.close()
    port = free_port()
    state: dict[str, Any] = {"base": f"http://127.0.0.1:{port}", "tokens": tokens, "run": run_id}
    state["proc"] = serve(deployment, port)
    try:
        yield state
    finally:
        proc = state["proc"]
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        print(out[-5000:])
        for secret in tokens.values():
            assert secret not in (out or ""), "a token reached the server's output"


def serve(
    deployment: tuple[str, Path | str], port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """'tether server' in its own process, once it answers."""
    url, blobs = deployment
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "server", "--db", url, "--blobs", str(blobs),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.communicate()[0][-2000:]}")


def client(team: dict[str, Any], user: str | None) -> httpx.Client:
    headers = {} if user is None else {"Authorization": f"Bearer {team['tokens'][user]}"}
    return httpx.Client(base_url=team["base"], headers=headers, timeout=30)


def teammate(
    team: dict[str, Any], user: str, root: Path, request: pytest.FixtureRequest,
    *, init: bool = True,
) -> Any:  # fmt: skip
    """``user``'s checkout at ``root`` (made here unless ``init`` is False: a clone),
    with a database of its own, connected to the project recs: a runner of tether
    commands in it."""
    if init:
        root.mkdir(parents=True)
        init_workspace(root, propose_kitfile=False)
    conftest.separate_database(request, root)

    def run(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(cli, ["-C", str(root), *args], input=input)

    connected = run(
        "connect", team["base"], "--project", "recs", "--token-stdin", input=team["tokens"][user]
    )
    assert connected.exit_code == 0, connected.output
    return run


def test_grants_decide_what_each_user_sees(team: dict[str, Any], deployment: Any) -> None:
    with client(team, "ada") as ada, client(team, "bob") as bob, client(team, "root") as root:
        assert ada.get("/api/projects").json()["projects"] == [{"name": "recs", "role": "write"}]
        runs = ada.get("/p/recs/api/runs").json()
        assert [r["name"] for r in runs["runs"]] == ["<b>shared</b>"]
        page = ada.get("/p/recs/runs")
        assert page.status_code == 200 and "&lt;b&gt;shared&lt;/b&gt;" in page.text
        assert "/p/recs/runs/" in page.text  # links stay inside the project
        assert ada.get(f"/p/recs/api/runs/{team['run']}/metrics/rmse/chart").status_code == 200
        # The project's own errors keep their JSON shape under the mount.
        missing = ada.get("/p/recs/api/runs/nope")
        assert missing.status_code == 404 and missing.json()["error"] == "run-not-found"
        # Another project, granted to nobody here: as if it did not exist.
        for path in ("/p/other/api/runs", "/p/nope/api/runs", "/p/other/runs"):
            response = ada.get(path)
            assert response.status_code == 404, path
            assert "other" not in response.json()["hint"]
        # bob has no grant: nothing of recs.
        assert bob.get("/api/projects").json()["projects"] == []
        assert bob.get("/p/recs/api/runs").status_code == 404
        assert bob.get(f"/p/recs/api/runs/{team['run']}").status_code == 404
        # A read grant lets bob read, not write.
        admin(deployment, "grant", "bob", "recs", "read")
        assert bob.get("/p/recs/api/runs").status_code == 200
        refused = bob.post(f"/p/recs/runs/{team['run']}/delete", data={"csrf": "x"})
        assert refused.status_code == 403 and "write" in refused.json()["hint"]
        # The server admin sees every project.
        names = {p["name"] for p in root.get("/api/projects").json()["projects"]}
        assert names == {"recs", "other"}


def test_no_route_answers_without_a_valid_token(team: dict[str, Any], deployment: Any) -> None:
    from tether.server.app import create_server_app
    from tether.server.sync import create_sync_app
    from tether.web.app import routes as ui_routes

    url, blobs = deployment
    app = create_server_app(Deployment(url, blobs)).app
    paths = [getattr(r, "path", "") for r in app.routes]
    paths += ["/p/recs" + getattr(r, "path", "") for r in ui_routes()]
    sync_app = create_sync_app(Deployment(url, blobs), {})
    paths += ["/p/recs" + getattr(r, "path", "") for r in sync_app.routes]
    assert len(sync_app.routes) >= 12
    public = {"/healthz", "/readyz", "/login", "/static"}
    with client(team, None) as anonymous:
        for raw in paths:
            path = raw.replace("{project}", "recs").replace("{ref}", team["run"])
            path = path.replace("{name}", "recs").replace("{alias}", "production")
            path = path.replace("{ref:path}", "x:y").replace("{run}", team["run"])
            path = path.replace("{digest}", "sha256:" + "0" * 64)
            if path in public:
                continue
            for method in ("GET", "POST"):
                response = anonymous.request(method, path)
                assert response.status_code == 401, (method, path, response.status_code)
                assert response.headers["www-authenticate"].startswith("Bearer")
        # Public ones answer without a token.
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json() == {"status": "ready"}
        # A browser is sent to the login page instead.
        page = anonymous.get("/p/recs/runs", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == "/login"
        # Malformed, unknown and forged tokens: the same refusal.
        ada = team["tokens"]["ada"]
        forged = ada[:-4] + ("AAAA" if not ada.endswith("AAAA") else "BBBB")
        for bad in ("nonsense", "tt1.0123456789abcdef." + "x" * 43, forged):
            response = anonymous.get("/api/projects", headers={"Authorization": f"Bearer {bad}"})
            assert response.status_code == 401
            assert response.json()["message"] == "the token is unknown, expired or revoked"


def test_revoked_and_expired_tokens_are_refused(team: dict[str, Any], deployment: Any) -> None:
    from tether.team import accounts
    from tether.team.audit import Actor

    url, blobs = deployment
    dep = Deployment(url, blobs)
    short = accounts.create_token(dep, "ada", expires_in=0.5, actor=Actor("test"))
    spare = token_of(deployment, "ada")
    headers = {"Authorization": f"Bearer {short.secret}"}
    with httpx.Client(base_url=team["base"]) as http:
        assert http.get("/api/projects", headers=headers).status_code == 200
        time.sleep(0.6)
        assert http.get("/api/projects", headers=headers).status_code == 401
        spare_headers = {"Authorization": f"Bearer {spare}"}
        assert http.get("/api/projects", headers=spare_headers).status_code == 200
        admin(deployment, "token", "revoke", spare.split(".")[1])
        assert http.get("/api/projects", headers=spare_headers).status_code == 401
    dep.close()


def test_browser_session_and_the_audit_trail(team: dict[str, Any], deployment: Any) -> None:
    with httpx.Client(base_url=team["base"]) as browser:
        page = browser.get("/login")
        assert page.status_code == 200 and "access token" in page.text
        wrong = browser.post("/login", data={"token": "tt1.nope"})
        assert wrong.status_code == 401 and "tt1.nope" not in wrong.text
        signed_in = browser.post("/login", data={"token": team["tokens"]["ada"]})
        assert signed_in.status_code == 303
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        home = browser.get("/")
        assert home.status_code == 200 and "/p/recs/runs" in home.text
        # A change through the UI (a form with its CSRF token) is audited.
        run_page = browser.get(f"/p/recs/runs/{team['run']}")
        csrf = browser.cookies.get("tether_csrf")
        assert run_page.status_code == 200 and csrf
        deleted = browser.post(f"/p/recs/runs/{team['run']}/delete", data={"csrf": csrf})
        assert deleted.status_code == 303
        assert browser.get("/p/recs/api/runs").json()["matched"] == 0
        browser.post("/logout")
        assert browser.get("/api/projects").status_code == 401
    out = admin(deployment, "audit", "--json", "-n", "100")
    entries = json.loads(out[out.index("[") :])
    actions = [(e["actor"], e["action"]) for e in entries]
    assert ("ada", "ui.post") in actions
    assert {a for _, a in actions} >= {"user.add", "token.create", "project.add", "grant.set"}
    ui = next(e for e in entries if e["action"] == "ui.post")
    assert ui["object"] == f"recs:/p/recs/runs/{team['run']}/delete"
    assert ui["remote"] == "127.0.0.1"
    flat = json.dumps(entries)
    assert not any(secret in flat for secret in team["tokens"].values())
    # The hash is stored, never the secret.
    secret = team["tokens"]["ada"].split(".")[2]
    url, blobs = deployment
    dep = Deployment(url, blobs)
    stored = [r["secret_sha256"] for r in dep.team.query("SELECT secret_sha256 FROM tokens")]
    assert secret not in stored and all(len(s) == 64 for s in stored)
    dep.close()


def test_bad_input_to_the_admin_commands(deployment: tuple[str, Path]) -> None:
    url, blobs = deployment
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["server", "--db", url, "--blobs", str(blobs), *args])

    assert run("user", "add", "ada").exit_code == 0
    for args, message in [
        (("user", "add", "ada"), "user ada exists"),
        (("user", "add", "bad name"), "is not a user name"),
        (("project", "add", "Bad-Name"), "is not a project name"),
        (("grant", "ada", "nope", "read"), "no project 'nope'"),
        (("grant", "nobody", "nope", "read"), "no user 'nobody'"),
        (("token", "create", "ada", "--expires", "soon"), "is not a duration"),
        (("token", "revoke", "feedbeef"), "no live token"),
    ]:
        result = run(*args)
        assert result.exit_code != 0 and message in result.output, (args, result.output)
        assert "hint:" in result.output
    with_password = url.replace("://", "://u:secret@", 1)
    result = runner.invoke(
        cli, ["server", "--db", with_password, "--blobs", str(blobs), "user", "list"]
    )
    assert result.exit_code != 0 and "password" in result.output and "secret" not in result.output
    sqlite = runner.invoke(
        cli, ["server", "--db", "sqlite:///x.db", "--blobs", str(blobs), "user", "list"]
    )
    assert sqlite.exit_code != 0 and "PostgreSQL" in sqlite.output


def test_sync_pushes_runs_once_and_teammates_see_them(
    team: dict[str, Any],
    deployment: Any,
    project: Any,
    tether: Any,
    request: pytest.FixtureRequest,
) -> None:
    from tests.conftest import train

    v1 = train(tether, project, "v1", "alpha")
    points = [("loss", i, 1_700_000_000.0 + i, 1 / (1 + i)) for i in range(3000)]
    metrics_repo.insert_metrics(project.db, v1, points)
    # Not connected yet: a clear refusal.
    refused = tether("sync")
    assert refused.exit_code != 0 and "tether connect" in refused.output
    # A wrong token is refused before anything is written.
    bad = tether("connect", team["base"], "--project", "recs", "--token-stdin", input="tt1.x")
    assert bad.exit_code != 0 and not (project.dot / "server.toml").exists()
    ok = tether(
        "connect", team["base"], "--project", "recs", "--token-stdin", input=team["tokens"]["ada"]
    )
    assert ok.exit_code == 0, ok.output
    secret = team["tokens"]["ada"]
    for path in project.dot.rglob("*"):
        if path.is_file() and path.suffix in (".toml", ".json", ""):
            assert secret not in path.read_text(errors="replace"), path
    creds = Path(os.environ["XDG_CONFIG_HOME"]) / "tether" / "credentials.toml"
    assert creds.stat().st_mode & 0o777 == 0o600
    first = tether("sync", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.output[first.output.index("{") :])
    assert report["sent"] == [v1] and report["project"] == "recs"
    assert report["blobs_sent"] >= 2  # at least the log and the stored output
    second = tether("sync", "--json")
    assert json.loads(second.output[second.output.index("{") :])["sent"] == []
    # More logged: only that run goes again.
    metrics_repo.insert_metrics(project.db, v1, [("loss", 3000, 1_700_003_000.0, 0.0)])
    third = tether("sync", "--json")
    assert json.loads(third.output[third.output.index("{") :])["sent"] == [v1]
    # bob, with a read grant, sees ada's run, every point, and who sent it.
    admin(deployment, "grant", "bob", "recs", "read")
    with client(team, "bob") as bob:
        shown = bob.get(f"/p/recs/api/runs/{v1}").json()
        assert shown["name"] == "v1" and shown["tags"]["tether.synced_by"] == "ada"
        # The runs table says who made each run, and which account sent it.
        table = bob.get("/p/recs/runs", params={"sort": "user"}).text
        assert f"{shown['user']} (ada)" in table
        assert shown["metrics"]["loss"]["count"] == 3001
        assert shown["environment"]["digest"] == shown["env_digest"]
        series = bob.get(f"/p/recs/api/runs/{v1}/metrics", params={"key": "loss"}).json()
        assert len(series["loss"]) == 3001
        chart = bob.get(f"/p/recs/api/runs/{v1}/metrics/loss/chart", params={"width": 100})
        assert chart.json()["kind"] == "buckets"
        # The run's blobs came too: its log, and its output stored by digest.
        local = runs_repo.load_run(project.db, v1)
        log = bob.get(f"/p/recs/api/runs/{v1}/log")
        assert log.status_code == 200 and log.content == b"".join(api_runs.log(project, v1))
        stored = {f["path"]: f["stored"] for f in shown["files"]}
        assert stored == {f.path: f.stored for f in local.files}
        # Bytes that do not hash to the digest they claim are refused, and not kept.
        claimed = "sha256:" + "ab" * 32
        with client(team, "ada") as ada:
            forged = ada.put(f"/p/recs/sync/blobs/{claimed}", content=b"not those bytes")
            assert forged.status_code == 400 and "expected" in forged.json()["message"]
            missing = ada.post("/p/recs/sync/blobs/missing", json={"digests": [claimed]})
            assert missing.json()["missing"] == [claimed]
    # bob, read-only, in a checkout of his own: sync brings ada's run, blobs included,
    # and holds back his own runs (a read grant may not send).
    bob_root = project.root.parent / "bob"
    as_bob = teammate(team, "bob", bob_root, request)
    bob_ws = Workspace.open(bob_root)
    mine = runs_repo.create_run(bob_ws.db, NewRun(
        name="bobs", command=["true"], cwd=".", host="h", user="bob", pid=1,
        started=time.time(),
    ))  # fmt: skip
    runs_repo.finish_run(bob_ws.db, mine, "finished")
    pulled = as_bob("sync", "--json")
    assert pulled.exit_code == 0, pulled.output
    got = json.loads(pulled.output[pulled.output.index("{") :])
    assert sorted(got["pulled"]) == sorted([v1, team["run"]])  # ada's, and the fixture's
    assert got["sent"] == [] and got["held_back"] == 1
    copy = runs_repo.load_run(bob_ws.db, v1)
    assert copy.tags["tether.synced_by"] == "ada" and copy.metrics["loss"].count == 3001
    assert b"".join(api_runs.log(bob_ws, v1)) == b"".join(api_runs.log(project, v1))
    assert len(metrics_repo.metric_series(bob_ws.db, v1)["loss"]) == 3001
    second = as_bob("sync", "--json").output
    assert json.loads(second[second.index("{") :])["pulled"] == []
    bob_ws.close()
    out = admin(deployment, "audit", "--json", "-n", "100")
    entries = json.loads(out[out.index("[") :])
    assert sum(1 for e in entries if e["action"] == "sync.push" and e["actor"] == "ada") >= 3


STREAMING_SCRIPT = """
import pathlib, sys, time
import tether

signals = pathlib.Path(sys.argv[1])
with tether.start_run() as run:
    for phase in range(3):
        start = time.time()
        for i in range(2000):
            run.log_metric("loss", 1 / (1 + phase * 2000 + i))
        run.flush()
        (signals / f"logged{phase}").write_text(str(time.time() - start))
        while phase < 2 and not (signals / f"go{phase}").exists():
            time.sleep(0.05)
"""


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def server_points(team: dict[str, Any], run_id: str) -> list[list[Any]]:
    with client(team, "ada") as ada:
        found = ada.get(f"/p/recs/api/runs/{run_id}/metrics", params={"key": "loss"})
        return list(found.json()["loss"]) if found.status_code == 200 else []


def test_a_running_run_streams_live_and_loses_nothing_when_the_server_dies(
    team: dict[str, Any], deployment: Any, project: Any, tether: Any, tmp_path: Path
) -> None:
    connected = tether(
        "connect", team["base"], "--project", "recs", "--token-stdin", input=team["tokens"]["ada"]
    )
    assert connected.exit_code == 0, connected.output
    signals = tmp_path / "signals"
    signals.mkdir()
    (project.root / "stream_train.py").write_text(STREAMING_SCRIPT)
    training = subprocess.Popen(
        [sys.executable, "-m", "tether", "run", "python", "stream_train.py", str(signals)],
        cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for((signals / "logged0").exists, "the first 2,000 points")
        run_id = runs_repo.resolve(project.db, "latest")
        # Live: the server shows the running run and its points before it ends.
        with client(team, "ada") as ada:
            shown = wait_for(
                lambda: (
                    (r := ada.get(f"/p/recs/api/runs/{run_id}")).status_code == 200
                    and r.json()["metrics"].get("loss", {}).get("count") == 2000
                    and r.json()
                ),
                "the streamed points on the server",
            )
            assert shown["status"] == "running" and shown["tags"]["tether.synced_by"] == "ada"
        # The server dies mid-run: the training goes on at its own pace.
        team["proc"].kill()
        team["proc"].communicate(timeout=20)
        (signals / "go0").touch()
        wait_for((signals / "logged1").exists, "the training to go on without the server")
        assert float((signals / "logged1").read_text()) < 5.0
        # It comes back: what waited drains on the next contact, once.
        port = int(team["base"].rsplit(":", 1)[1])
        team["proc"] = serve(deployment, port)
        wait_for(lambda: len(server_points(team, run_id)) == 4000, "the queue to drain")
        (signals / "go1").touch()
        out, _ = training.communicate(timeout=120)
    finally:
        if training.poll() is None:
            training.kill()
    assert training.returncode == 0, out
    assert "live metrics to the server stopped" not in out  # the server came back in time
    local = runs_repo.load_run(project.db, run_id)
    assert local.status == "finished" and local.metrics["loss"].count == 6000

    def finished_there() -> bool:
        with client(team, "ada") as ada:
            return bool(ada.get(f"/p/recs/api/runs/{run_id}").json()["status"] == "finished")

    wait_for(finished_there, "the run's end on the server")
    steps = [p["step"] for p in server_points(team, run_id)]
    assert steps == list(range(6000))  # every point, exactly once
    # A sync then sends what a stream does not carry (environment, files, log) and
    # replaces the server's copy: still every point once.
    synced = tether("sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert json.loads(synced.output[synced.output.index("{") :])["sent"] == [run_id]
    assert [p["step"] for p in server_points(team, run_id)] == list(range(6000))
    with client(team, "ada") as ada:
        shown = ada.get(f"/p/recs/api/runs/{run_id}").json()
    assert shown["environment"]["digest"] == local.env_digest
    out = admin(deployment, "audit", "--json", "-n", "100")
    actions = [e["action"] for e in json.loads(out[out.index("[") :])]
    # The stream is audited where it starts and ends, not at each batch.
    assert 1 <= actions.count("sync.stream.start") <= 2 and "sync.stream.end" in actions


def test_two_server_processes_take_sixteen_streams_at_once(
    team: dict[str, Any], deployment: Any
) -> None:
    """Scale-out: a second process over the same database and blobs; 16 clients stream
    20,000 points each, half to each process. Nothing lost, nothing doubled."""
    import threading

    from tether.runs.record import new_run_id
    from tether.team.stream import RunStream
    from tether.team.sync import StreamEnd

    second = serve(deployment, free_port())
    bases = [team["base"], "http://127.0.0.1:" + str(second.args[-1])]
    runs = [new_run_id() for _ in range(16)]
    states: dict[str, str] = {}

    def stream(i: int) -> None:
        run_id = runs[i]
        header = NewRun(name=f"client{i}", command=["python", "train.py"], cwd=".",
                        host=f"h{i}", user="ada", pid=1, started=time.time(),
                        run_id=run_id)  # fmt: skip
        s = RunStream(bases[i % 2], "recs", team["tokens"]["ada"], header, 0)
        for start in range(0, 20_000, 1000):
            s.offer([("loss", n, time.time(), n * 0.5) for n in range(start, start + 1000)])
        s.finish(StreamEnd("finished", 0, None, time.time()))
        states[run_id] = s.close(timeout=120)

    try:
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        second.terminate()
        second.communicate(timeout=20)
    assert set(states.values()) == {"done"}, states
    for run_id in runs:
        assert [p["step"] for p in server_points(team, run_id)] == list(range(20_000)), run_id
    with client(team, "ada") as ada:
        listed = {
            r["id"]: r for r in ada.get("/p/recs/api/runs", params={"limit": "all"}).json()["runs"]
        }
    assert all(listed[r]["status"] == "finished" for r in runs)


def test_stream_batches_are_checked(team: dict[str, Any]) -> None:
    """A batch past what the server holds is a gap (409), never stored out of order;
    malformed batches and bodies are refused with a message; a read grant cannot stream."""
    from tether.runs.record import new_run_id
    from tether.team.sync import StreamBatch

    run_id = new_run_id()
    header = NewRun(name="x", command=["t"], cwd=".", host="h", user="ada", pid=1,
                    started=time.time(), run_id=run_id)  # fmt: skip
    points = tuple(("loss", n, 1.0, float(n)) for n in range(10))
    with client(team, "ada") as ada:
        first = ada.post("/p/recs/sync/stream", json=StreamBatch(header, 0, points).to_json())
        assert first.json() == {"run": run_id, "held": 10}
        # Points 5..14, sent after 0..9: only 10..14 are new.
        overlap = tuple(("loss", n, 1.0, float(n)) for n in range(5, 15))
        again = ada.post("/p/recs/sync/stream", json=StreamBatch(header, 5, overlap).to_json())
        assert again.json()["held"] == 15
        gap = ada.post("/p/recs/sync/stream", json=StreamBatch(header, 40, points).to_json())
        assert gap.status_code == 409 and gap.json()["error"] == "stream-gap"
        assert "tether sync" in gap.json()["hint"]
        assert [p["step"] for p in server_points(team, run_id)] == list(range(15))
        bad = StreamBatch(header, 0, points).to_json()
        for broken in (
            {**bad, "run": {**bad["run"], "id": "../../etc"}},
            {**bad, "k": [0]},
            {**bad, "k": [-1] * 10},
            {**bad, "keys": ["\x00"]},
            {**bad, "seq": -1},
            {**bad, "end": {"status": "running", "ended": 1.0}},
        ):
            refused = ada.post("/p/recs/sync/stream", json=broken)
            assert refused.status_code == 400, (broken, refused.text)
            assert refused.json()["message"] and refused.json()["hint"]
        odd = ada.post(
            "/p/recs/sync/stream",
            content=b"\x28\xb5\x2f\xfd garbage",
            headers={"Content-Encoding": "zstd", "Content-Type": "application/json"},
        )
        assert odd.status_code == 400 and "decompress" in odd.json()["message"]
        import zstandard

        bomb = zstandard.ZstdCompressor().compress(b" " * (600 << 20))
        refused = ada.post(
            "/p/recs/sync/stream", content=bomb, headers={"Content-Encoding": "zstd"}
        )
        assert refused.status_code == 413 and "decompressed" in refused.json()["message"]
    with client(team, "bob") as bob:
        assert bob.post("/p/recs/sync/stream", json=bad).status_code == 404


def test_sync_rides_out_a_database_restart_and_a_damaged_blob(
    team: dict[str, Any], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL restarts in the middle of a sync, and a link damages one blob on its
    way: the sync retries, completes, and the server holds every run and blob intact."""
    import threading

    from tether.db.url import DEFAULT_SQLITE

    from .tcpproxy import Proxy

    cluster = request.getfixturevalue("pg_cluster")
    root = tmp_path / "laptop"
    root.mkdir()
    # Its own SQLite file: the database that restarts is the server's, not the laptop's.
    init_workspace(root, propose_kitfile=False, database_url=DEFAULT_SQLITE)
    ws = Workspace.open(root)
    made: dict[str, str] = {}
    for i in range(60):
        run_id = runs_repo.create_run(ws.db, NewRun(
            name=f"r{i}", command=["python", "t.py"], cwd=".", host="h", user="ada", pid=1,
            started=time.time(),
        ))  # fmt: skip
        points = [("loss", n, 1_700_000_000.0 + n, 1 / (1 + n)) for n in range(5000)]
        metrics_repo.insert_metrics(ws.db, run_id, points)
        log = root / f"log{i}.bin"
        log.write_bytes(os.urandom(64 << 10))
        digest, _ = ws.store.add_file(log)
        runs_repo.add_blobs(ws.db, run_id, [(str(digest), "log")])
        runs_repo.finish_run(ws.db, run_id, "finished")
        made[run_id] = str(digest)
    proxy = Proxy(int(team["base"].rsplit(":", 1)[1]), damage_one_blob=True)

    def on_laptop(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(cli, ["-C", str(root), *args], input=input)

    linked = on_laptop(
        "connect", proxy.url, "--project", "recs", "--token-stdin", input=team["tokens"]["ada"]
    )
    assert linked.exit_code == 0, linked.output
    result: dict[str, Any] = {}
    syncing = threading.Thread(target=lambda: result.update(out=on_laptop("sync", "--json")))
    syncing.start()

    def server_runs() -> int:
        with client(team, "ada") as ada:
            return len(ada.get("/p/recs/api/runs", params={"limit": "all"}).json()["runs"])

    wait_for(lambda: server_runs() >= 4, "the sync to be under way")
    cluster.restart(down_s=2.0)
    syncing.join(timeout=300)
    proxy.close()
    out = result["out"]
    assert out.exit_code == 0, out.output
    report = json.loads(out.output[out.output.index("{") :])
    assert sorted(report["sent"]) == sorted(made) and report["blobs_sent"] == 60
    assert proxy.damaged == 1  # one blob was damaged on the way, refused, and sent again
    assert proxy.unavailable >= 1  # the restart did happen under the sync
    with client(team, "ada") as ada:
        for run_id, digest in made.items():
            shown = ada.get(f"/p/recs/api/runs/{run_id}").json()
            assert shown["metrics"]["loss"]["count"] == 5000
            blob = ada.get(f"/p/recs/sync/blobs/{digest}").content
            assert "sha256:" + hashlib.sha256(blob).hexdigest() == digest
    again = on_laptop("sync", "--json")
    assert json.loads(again.output[again.output.index("{") :])["sent"] == []
    ws.close()


def test_the_model_registry_travels_with_its_history_and_conflicts_are_reported(
    team: dict[str, Any],
    deployment: Any,
    project: Any,
    tether: Any,
    request: pytest.FixtureRequest,
) -> None:
    """ada registers two versions and moves production; bob pulls them, ModelKits and
    history included, and the server's model page shows who moved what and why. Then
    both move production apart: the second to sync gets a conflict, and neither side's
    alias or history is overwritten."""
    from tests.conftest import train

    train(tether, project, "v1", "alpha")
    assert tether("pack", "-t", "demo:v1.0.0").exit_code == 0
    v2 = train(tether, project, "v2", "beta")
    for args in (
        ("model", "register", "recs", "--from", "demo:v1.0.0"),
        ("model", "register", "recs", "--from", "v2"),
        ("model", "alias", "recs", "production", "v1", "-m", "first release"),
        ("model", "alias", "recs", "production", "v2", "-m", "better rmse"),
    ):
        done = tether(*args)
        assert done.exit_code == 0, done.output
    token = team["tokens"]["ada"]
    assert tether("connect", team["base"], "--project", "recs", "--token-stdin",
                  input=token).exit_code == 0  # fmt: skip
    pushed = tether("sync", "--json")
    assert pushed.exit_code == 0, pushed.output
    report = json.loads(pushed.output[pushed.output.index("{") :])
    [sent] = report["models_sent"]
    assert sent["versions"] == [1, 2] and sent["aliases"] == ["production"]
    assert sent["events"] == 4 and report["conflicts"] == []
    again = tether("sync", "--json")
    assert json.loads(again.output[again.output.index("{") :])["models_sent"][0]["events"] == 0
    with client(team, "ada") as ada:
        page = ada.get("/p/recs/models/recs").text
        assert "better rmse" in page and "first release" in page
        # Lineage came along: the server knows which run made production's ModelKit.
        graph = ada.get("/p/recs/api/lineage", params={"subject": "recs:production"}).text
        assert v2 in graph
    # bob, in a checkout of his own, pulls the model: versions, ModelKits, history.
    admin(deployment, "grant", "bob", "recs", "write")
    as_bob = teammate(team, "bob", project.root.parent / "bob", request)
    pulled = as_bob("sync", "--json")
    assert pulled.exit_code == 0, pulled.output
    [took] = json.loads(pulled.output[pulled.output.index("{") :])["models_pulled"]
    assert took["versions"] == [1, 2] and took["events"] == 4
    history = as_bob("model", "history", "recs", "--json")
    reasons = [e["reason"] for e in json.loads(history.output[history.output.index("[") :])]
    assert "better rmse" in reasons and "first release" in reasons
    listed = as_bob("list")
    assert "recs" in listed.output and "production" in listed.output, listed.output
    assert as_bob("model", "show", "recs:production").exit_code == 0
    # Both move production apart. bob syncs first: the server takes his move.
    moved = as_bob("model", "alias", "recs", "production", "v1", "-m", "bob: v2 regressed")
    assert moved.exit_code == 0, moved.output
    assert as_bob("sync").exit_code == 0
    mine = tether("model", "unalias", "recs", "production", "-m", "ada: rolling back")
    assert mine.exit_code == 0, mine.output
    clash = tether("sync")
    assert clash.exit_code == 3, clash.output
    assert clash.output.count("conflict:") == 1 and "recs:production" in clash.output
    assert "bob: v2 regressed" in clash.output  # who moved it on the other side, and why
    with client(team, "ada") as ada:
        page = ada.get("/p/recs/models/recs").text
        assert "bob: v2 regressed" in page and "ada: rolling back" not in page
    history = tether("model", "history", "recs", "--json")
    local = json.loads(history.output[history.output.index("[") :])
    assert "ada: rolling back" in [e["reason"] for e in local]  # kept here, not overwritten


def test_server_migrate_walks_every_schema(team: dict[str, Any], deployment: Any) -> None:
    import psycopg

    out = admin(deployment, "migrate", "--json")
    applied = json.loads(out[out.index("{") :])
    # Everything is current already: each schema listed, nothing applied.
    assert applied == {"tether_team": [], "p_recs": [], "p_other": []}
    assert httpx.get(team["base"] + "/readyz").json() == {"status": "ready"}
    # As a deployment made by the previous tether: its last team migration not there.
    with psycopg.connect(deployment[0], autocommit=True) as conn:
        conn.execute("DROP TABLE tether_team.alias_rules")
        conn.execute("DELETE FROM tether_team._tether_migrations WHERE name LIKE 'team_0002%'")
    stale = httpx.get(team["base"] + "/readyz")
    assert stale.status_code == 503 and "tether server migrate" in stale.json()["message"]
    out = admin(deployment, "migrate", "--json")
    assert json.loads(out[out.index("{") :])["tether_team"] == ["team_0002_alias_rules"]
    assert httpx.get(team["base"] + "/readyz").json() == {"status": "ready"}
    assert "only admin" in admin(deployment, "protect", "recs", "production", "admin")


def test_a_protected_alias_moves_only_with_its_role(
    team: dict[str, Any], deployment: Any, project: Any, tether: Any
) -> None:
    """production needs admin: ada (write) cannot move it through sync or the pages;
    staging moves; root (admin) moves production from the page."""
    from tests.conftest import train

    assert "only admin" in admin(deployment, "protect", "recs", "production", "admin")
    train(tether, project, "v1", "alpha")
    assert tether("pack", "-t", "demo:v1.0.0").exit_code == 0
    train(tether, project, "v2", "beta")
    for args in (
        ("model", "register", "recs", "--from", "demo:v1.0.0"),
        ("model", "register", "recs", "--from", "v2"),
        ("model", "alias", "recs", "staging", "v2", "-m", "try it"),
        ("model", "alias", "recs", "production", "v2", "-m", "ship it"),
    ):
        assert tether(*args).exit_code == 0
    assert tether("connect", team["base"], "--project", "recs", "--token-stdin",
                  input=team["tokens"]["ada"]).exit_code == 0  # fmt: skip
    refused = tether("sync", "--json")
    assert refused.exit_code == 3, refused.output
    # (stdout is the JSON; the conflict's warning went to stderr, mixed in here)
    report = json.JSONDecoder().raw_decode(refused.output[refused.output.index("{") :])[0]
    [sent] = report["models_sent"]
    assert sent["versions"] == [1, 2] and sent["aliases"] == ["staging"]
    assert "needs the admin role" in report["conflicts"][0]["message"]

    def move(user: str, version: str) -> httpx.Response:
        with client(team, user) as http:
            assert http.get("/p/recs/models/recs").status_code == 200  # the form's token
            return http.post(
                "/p/recs/models/recs/aliases",
                data={"alias": "production", "version": version, "reason": f"{user} moved it",
                      "csrf": http.cookies.get("tether_csrf") or ""},
            )  # fmt: skip

    forbidden = move("ada", "v2")
    assert forbidden.status_code == 403 and "needs the admin role" in forbidden.text
    assert move("root", "v2").status_code == 303
    with client(team, "ada") as ada:
        page = ada.get("/p/recs/models/recs").text
    assert "root moved it" in page and "ada moved it" not in page
    # The rule lifted, a writer may move it again.
    admin(deployment, "protect", "recs", "production", "none")
    assert move("ada", "v1").status_code == 303


def test_fingerprints_agree_across_engines() -> None:
    """A run's end as SQLite keeps it (the double) and as the server reads it back from
    PostgreSQL (microseconds) gives one fingerprint: rounding the double to
    milliseconds used to disagree about once in 2,500 runs, which sent them again."""
    import random
    from dataclasses import replace

    from tether.runs.code import NO_CODE
    from tether.runs.record import RunCapture, RunRecord
    from tether.team.sync import fingerprint

    base = RunRecord(id="0" * 26, name=None, status="finished", command=("t",), cwd=".",
                     started=0.0, ended=None, exit_code=0, reason=None, host="h", user="u",
                     pid=1, seed=None, env_digest=None, code=NO_CODE, log_digest=None,
                     capture=RunCapture({}))  # fmt: skip
    rng = random.Random(3)
    for _ in range(20_000):
        ended = 1_764_620_000 + rng.random() * 1_000_000
        dt = datetime.fromtimestamp(ended, UTC) - datetime(2000, 1, 1, tzinfo=UTC)
        micros = dt.days * 86_400_000_000 + dt.seconds * 1_000_000 + dt.microseconds
        read_back = micros / 1_000_000 + 946_684_800  # as tether's PostgreSQL loader does
        assert fingerprint(replace(base, ended=ended)) == fingerprint(
            replace(base, ended=read_back)
        ), ended


def test_sync_watch_keeps_syncing_and_rides_out_an_outage(
    team: dict[str, Any], deployment: Any, project: Any, tether: Any
) -> None:
    """'tether sync --watch': a run made while it watches reaches the server by the next
    round; a round during a short outage waits it out and the run made meanwhile still
    arrives; Ctrl-C stops it cleanly."""
    import signal

    assert tether("connect", team["base"], "--project", "recs", "--token-stdin",
                  input=team["tokens"]["ada"]).exit_code == 0  # fmt: skip

    def made_here(name: str) -> str:
        run_id = runs_repo.create_run(project.db, NewRun(
            name=name, command=["python", "t.py"], cwd=".", host="h", user="ada", pid=1,
            started=time.time(),
        ))  # fmt: skip
        runs_repo.finish_run(project.db, run_id, "finished")
        return run_id

    def on_server(run_id: str) -> bool:
        with client(team, "ada") as ada:
            return ada.get(f"/p/recs/api/runs/{run_id}").status_code == 200

    watcher = subprocess.Popen(
        [sys.executable, "-m", "tether", "-C", str(project.root), "sync", "--watch",
         "--every", "1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        first = made_here("first")
        wait_for(lambda: on_server(first), "the first run on the server")
        team["proc"].kill()
        team["proc"].communicate(timeout=20)
        second = made_here("second")
        time.sleep(3)  # a round now retries until the server is back
        port = int(team["base"].rsplit(":", 1)[1])
        team["proc"] = serve(deployment, port)
        wait_for(lambda: on_server(second), "the second run after the outage", timeout=90)
        watcher.send_signal(signal.SIGINT)
        out, _ = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, out
    assert "stopped" in out and "Traceback" not in out
    # One JSON line per finished round (Ctrl-C may cut the last one short).
    rounds = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(first in r.get("sent", []) for r in rounds), rounds


def test_tracked_data_travels_with_sync(
    team: dict[str, Any], deployment: Any, project: Any, tether: Any,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """ada tracks a folder of many small files and one big file and syncs; bob, with a
    read grant, takes the pointers (as git would bring them), syncs, and checks out
    byte-identical data. Small blobs travel in packs; a second sync moves nothing."""
    images = project.root / "images"
    for i in range(300):
        (images / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        (images / f"c{i % 3}" / f"{i}.bin").write_bytes(os.urandom(100 + i))
    (project.root / "big.bin").write_bytes(os.urandom(3 << 20))
    assert tether("add", "images", "big.bin").exit_code == 0
    ok = tether(
        "connect", team["base"], "--project", "recs", "--token-stdin", input=team["tokens"]["ada"]
    )
    assert ok.exit_code == 0, ok.output
    first = tether("sync", "--json")
    assert first.exit_code == 0, first.output
    sent = json.loads(first.output[first.output.index("{") :])
    # 300 files, 1 big file, the tree objects of images/ and its 3 folders, and the
    # demo project's tracked data (data/ratings.csv).
    assert sent["data_sent"] >= 305 and sent["data_incomplete"] == []
    again = tether("sync", "--json").output
    assert json.loads(again[again.index("{") :])["data_sent"] == 0
    admin(deployment, "grant", "bob", "recs", "read")
    bob_root = project.root.parent / "bob"
    as_bob = teammate(team, "bob", bob_root, request)
    for ptr in project.root.rglob("?*.tether"):
        if ".tether" in ptr.relative_to(project.root).parts[:-1]:
            continue
        target = bob_root / ptr.relative_to(project.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(ptr.read_bytes())
    pulled = as_bob("sync")
    assert pulled.exit_code == 0, pulled.output
    assert "received; place them with: tether checkout" in pulled.output
    out = as_bob("sync", "--json").output
    second = json.loads(out[out.index("{") :])
    assert second["data_fetched"] == 0 and second["data_wanted"] == 0
    placed = as_bob("checkout")
    assert placed.exit_code == 0, placed.output
    for path in [*images.rglob("*.bin"), project.root / "big.bin"]:
        assert (bob_root / path.relative_to(project.root)).read_bytes() == path.read_bytes()
    # Packs are checked blob by blob: one whose bytes differ from its header is refused
    # whole, and nothing of it is kept.
    good, bad = b"kept only with its pack", b"tampered"
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    forged = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    body = f"{digest} {len(good)}\n".encode() + good + f"{forged} {len(bad)}\n".encode() + bad
    with client(team, "ada") as ada:
        refused = ada.post("/p/recs/sync/blobs/pack", content=body)
        assert refused.status_code == 400 and refused.json()["error"] == "object-corrupted"
        held = ada.post("/p/recs/sync/blobs/have", json={"digests": [digest, forged]})
        assert held.json()["sizes"] == {}
        cut = ada.post("/p/recs/sync/blobs/pack", content=body[:30])
        assert cut.status_code == 400
    with client(team, "bob") as bob_http:
        # A read grant reads packs but may not write them.
        assert bob_http.post("/p/recs/sync/blobs/pack", content=b"").status_code == 403


def test_a_big_file_travels_as_the_chunks_the_other_side_lacks(
    team: dict[str, Any], deployment: Any, project: Any, tether: Any,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """A file kept in chunks reaches the server as its chunks and list; after a 1 MiB
    edit only the new chunks travel, and a teammate fetches chunks too. A list whose
    chunks are not the file it names is refused."""
    from tether.hashing import Digest

    rng = random.Random(5)
    big = project.root / "weights.bin"
    v1 = rng.randbytes(24 << 20)
    big.write_bytes(v1)
    assert tether("add", "weights.bin").exit_code == 0
    ok = tether(
        "connect", team["base"], "--project", "recs", "--token-stdin", input=team["tokens"]["ada"]
    )
    assert ok.exit_code == 0, ok.output
    assert tether("sync").exit_code == 0
    _, blobs = deployment
    server = Path(blobs) / "projects" / "recs" / ".tether" / "store"
    first = project.store.chunks.load(Digest(hashlib.sha256(v1).hexdigest()))
    assert (server / "chunklists" / "sha256" / first.digest.hex).is_file()
    assert not (server / "blobs" / "sha256" / first.digest.hex).exists()
    held = set(os.listdir(server / "blobs" / "sha256"))

    v2 = bytearray(v1)
    v2[9 << 20 : 10 << 20] = rng.randbytes(1 << 20)
    big.write_bytes(v2)
    assert tether("add", "weights.bin").exit_code == 0
    second = project.store.chunks.load(Digest(hashlib.sha256(v2).hexdigest()))
    assert tether("sync").exit_code == 0
    new = {c.hex for c, _ in second.chunks} - {c.hex for c, _ in first.chunks}
    assert 1 <= len(new) <= 4
    assert set(os.listdir(server / "blobs" / "sha256")) - held == new  # only these went

    admin(deployment, "grant", "bob", "recs", "read")
    bob_root = project.root.parent / "bob"
    as_bob = teammate(team, "bob", bob_root, request)
    pointer = (project.root / "weights.bin.tether").read_bytes()
    (bob_root / "weights.bin.tether").write_bytes(pointer)
    assert as_bob("sync").exit_code == 0
    assert as_bob("checkout", "weights.bin").exit_code == 0
    assert (bob_root / "weights.bin").read_bytes() == v2
    assert (bob_root / ".tether" / "store" / "chunklists" / "sha256" / second.digest.hex).is_file()

    lying = second.to_json()
    chunks = lying["chunks"]
    assert isinstance(chunks, list)
    chunks[0], chunks[1] = chunks[1], chunks[0]
    with client(team, "ada") as ada:
        forged = "sha256:" + hashlib.sha256(b"not these bytes").hexdigest()
        refused = ada.post("/p/recs/sync/chunklists", json={"digest": forged, "list": lying})
        assert refused.status_code == 400 and refused.json()["error"] == "object-corrupted"
        assert not (server / "chunklists" / "sha256" / forged[7:]).exists()
        bad = ada.post("/p/recs/sync/chunklists", json={"digest": forged, "list": {"x": 1}})
        assert bad.status_code == 400 and "hint" in bad.json()


def test_big_blobs_go_straight_to_a_bucket_and_resume(
    deployment: Any,
    s3_endpoint: str,
    project: Any,
    tether: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """--blobs s3://…: a big blob goes to the bucket in parts with presigned URLs (the
    server refuses to carry it), an interrupted upload resumes with the parts the bucket
    lacks, a damaged upload is refused and removed, and a teammate downloads from the
    bucket with a presigned URL; a second server process with an empty cache serves the
    same project."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("TETHER_SERVER_PART_MB", "5")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucketed = (deployment[0], "s3://tether-data/srv")
    for args in (("user", "add", "ada"), ("user", "add", "bob"), ("project", "add", "recs"),
                 ("grant", "ada", "recs", "write"), ("grant", "bob", "recs", "read")):  # fmt: skip
        admin(bucketed, *args)
    tokens = {u: token_of(bucketed, u) for u in ("ada", "bob")}
    port = free_port()
    proc = serve(bucketed, port)
    base = f"http://127.0.0.1:{port}"
    team = {"base": base, "tokens": tokens}
    try:
        big = project.root / "weights.bin"
        big.write_bytes(os.urandom(12 << 20))
        digest = "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
        assert tether("add", "weights.bin").exit_code == 0
        run_id = conftest.train(tether, project, "v1", "alpha")
        with client(team, "ada") as ada:
            # Through the server: refused, whatever the size.
            assert ada.put(f"/p/recs/sync/blobs/{digest}", content=b"x").status_code == 400
            plan = ada.post("/p/recs/sync/blobs/uploads", json={"digest": digest,
                            "size": big.stat().st_size}).json()  # fmt: skip
            assert plan["via"] == "bucket" and [p["number"] for p in plan["parts"]] == [1, 2, 3]
            assert plan["parts"][0]["url"].startswith(s3_endpoint)
            # One part arrives, then the client dies.
            with big.open("rb") as f:
                part = f.read(5 << 20)
            assert httpx.put(plan["parts"][0]["url"], content=part).status_code == 200
            again = ada.post("/p/recs/sync/blobs/uploads", json={"digest": digest,
                             "size": big.stat().st_size}).json()  # fmt: skip
            assert again["upload_id"] == plan["upload_id"]
            assert [p["number"] for p in again["parts"]] == [2, 3]
            assert [p["number"] for p in again["done"]] == [1]
            # An upload whose bytes are not its digest's is refused, and removed.
            claimed = "sha256:" + hashlib.sha256(b"the real bytes").hexdigest()
            fake = ada.post("/p/recs/sync/blobs/uploads", json={"digest": claimed,
                            "size": 14}).json()  # fmt: skip
            assert httpx.put(fake["parts"][0]["url"], content=b"other bytes!!!").is_success
            refused = ada.post("/p/recs/sync/blobs/uploads/complete",
                               json={"digest": claimed, "size": 14, "parts": []})  # fmt: skip
            assert refused.status_code == 400 and refused.json()["error"] == "object-corrupted"
            held = ada.post("/p/recs/sync/blobs/have", json={"digests": [claimed]}).json()
            assert held["sizes"] == {}
        ok = tether("connect", base, "--project", "recs", "--token-stdin", input=tokens["ada"])
        assert ok.exit_code == 0, ok.output
        synced = tether("sync", "--json")
        assert synced.exit_code == 0, synced.output
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="tether-data", Prefix="srv/")
                .get("Contents", [])]  # fmt: skip
        assert f"srv/projects/recs/blobs/sha256/{digest[7:]}" in keys
        assert not [k for k in keys if "/incoming/" in k]
        assert not s3.list_multipart_uploads(Bucket="tether-data").get("Uploads")
        stored = s3.get_object(Bucket="tether-data",
                               Key=f"srv/projects/recs/blobs/sha256/{digest[7:]}")  # fmt: skip
        assert "sha256:" + hashlib.sha256(stored["Body"].read()).hexdigest() == digest
        # bob: the download is a redirect to the bucket, and his sync brings the data.
        with client(team, "bob") as bob:
            found = bob.get(f"/p/recs/sync/blobs/{digest}")
            assert found.status_code == 307 and found.headers["location"].startswith(s3_endpoint)
        bob_root = tmp_path / "bob"
        bob_root.mkdir()
        init_workspace(bob_root, propose_kitfile=False)
        conftest.separate_database(request, bob_root)
        (bob_root / "weights.bin.tether").write_bytes((project.root / "weights.bin.tether")
                                                      .read_bytes())  # fmt: skip
        as_bob = [sys.executable, "-m", "tether", "-C", str(bob_root)]
        subprocess.run([*as_bob, "connect", base, "--project", "recs", "--token-stdin"],
                       input=tokens["bob"], text=True, check=True, capture_output=True)  # fmt: skip
        pulled = subprocess.run([*as_bob, "sync"], text=True, capture_output=True)
        assert pulled.returncode == 0, pulled.stderr
        subprocess.run([*as_bob, "checkout"], check=True, capture_output=True)
        assert (bob_root / "weights.bin").read_bytes() == big.read_bytes()
        # Another server process, its cache empty: the run's log comes from the bucket.
        other = free_port()
        second = serve(bucketed, other, {"XDG_CACHE_HOME": str(tmp_path / "cache2")})
        try:
            log = httpx.get(f"http://127.0.0.1:{other}/p/recs/api/runs/{run_id}/log",
                            headers={"Authorization": f"Bearer {tokens['bob']}"})  # fmt: skip
            assert log.status_code == 200 and log.content == b"".join(api_runs.log(project, run_id))
        finally:
            second.terminate()
            second.communicate(timeout=20)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        print(out[-5000:])


def test_settings_come_from_a_file_and_the_environment(
    deployment: tuple[str, Path], tmp_path: Path
) -> None:
    """A settings file names the database, the blobs and the port; TETHER_SERVER_* and
    the command line win over it; a wrong key or type is refused with a hint."""
    url, blobs = deployment
    port = free_port()
    settings = tmp_path / "server.toml"
    settings.write_text(f'db = "{url}"\nblobs = "{blobs}"\nport = {port}\nworkers = 1\n')
    runner = CliRunner()
    added = runner.invoke(cli, ["server", "--config", str(settings), "user", "add", "ada"])
    assert added.exit_code == 0, added.output
    env = {**os.environ, "TETHER_SERVER_CONFIG": str(settings)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "server"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        wait_for(ready, "the server from its settings file")
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"127.0.0.1:{port}" in out
    # The environment wins over the file.
    elsewhere = runner.invoke(cli, ["server", "--config", str(settings), "user", "list"],
                              env={"TETHER_SERVER_DB": url + "_none"})  # fmt: skip
    assert elsewhere.exit_code != 0
    for text, message in (
        ('dbb = "x"\n', "unknown setting 'dbb'"),
        ('port = "80"\n', "port is a int"),
        ("workers = 0\n", "workers is between 1 and 64"),
        ("port = [\n", "is not TOML"),
    ):
        settings.write_text(text)
        bad = runner.invoke(cli, ["server", "--config", str(settings), "user", "list"])
        assert bad.exit_code != 0 and message in bad.output, bad.output


def test_traversal_and_oversized_bodies_are_refused(team: dict[str, Any]) -> None:
    """Paths that climb out of their place answer 404 or 400, never a file; bodies over
    the limits are refused before they are read whole (413; a compressed one in
    test_stream_batches_are_checked)."""
    climbs = [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/p/..%2F..%2Fetc/api/runs",
        "/p/recs/sync/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd",
        "/p/recs/sync/blobs/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/p/recs/sync/runs/..%2F..%2Fconfig.toml",
        "/p/recs/api/runs/..%2F..%2F.tether%2Fconfig.toml",
        "/p/recs/api/runs/" + team["run"] + "/metrics/..%2F..%2F..%2Fetc%2Fpasswd/chart",
        "/p/recs/kits/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/p/recs/api/kits/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    ]
    with client(team, "ada") as ada:
        for path in climbs:
            answer = ada.get(path)
            assert answer.status_code in (400, 404), (path, answer.status_code)
            assert b"root:" not in answer.content and b"database" not in answer.content
        forged = ada.put("/p/recs/sync/blobs/sha256:..%2F..%2Fx", content=b"x")
        assert forged.status_code in (400, 404)
        # A body announced over the limit is refused from its headers.
        with socket.create_connection(("127.0.0.1", int(team["base"].rsplit(":", 1)[1]))) as raw:
            raw.sendall(
                b"POST /p/recs/sync/runs HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {team['tokens']['ada']}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
            )
            raw.settimeout(10)
            head = raw.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head[:100]
        # A pack whose header claims a blob too big for a pack.
        header = b"sha256:" + b"0" * 64 + b" 999999999999\n"
        answer = ada.post("/p/recs/sync/blobs/pack", content=header)
        assert answer.status_code == 400 and "over this pack's limit" in answer.json()["message"]
        too_long = b"x" * 200
        assert ada.post("/p/recs/sync/blobs/pack", content=too_long).status_code == 400
        # The digest list is bounded too.
        listed = ada.post("/p/recs/sync/blobs/missing", json={"digests": "not a list"})
        assert listed.status_code == 400


def test_a_kit_linked_after_a_sync_sends_the_run_again(
    team: dict[str, Any], deployment: Any, project: Any, tether: Any
) -> None:
    """Packing a ModelKit from a run that was already synced adds a lineage edge; the
    next sync sees it in the run's fingerprint and sends the run again, edge included."""
    from tether.repositories import kits as kits_repo

    run_id = conftest.train(tether, project, "v1", "alpha")
    ok = tether(
        "connect", team["base"], "--project", "recs", "--token-stdin", input=team["tokens"]["ada"]
    )
    assert ok.exit_code == 0, ok.output
    first = tether("sync", "--json").output
    assert json.loads(first[first.index("{") :])["sent"] == [run_id]
    kit = "sha256:" + "ab" * 32
    kits_repo.link_run(project.db, kit, run_id, "from-run")
    second = tether("sync", "--json").output
    assert json.loads(second[second.index("{") :])["sent"] == [run_id]
    url, blobs = deployment
    dep = Deployment(url, blobs)
    try:
        assert kits_repo.made_by_run(dep.project("recs").db, run_id) == [(kit, "from-run")]
    finally:
        dep.close()
    third = tether("sync", "--json").output
    assert json.loads(third[third.index("{") :])["sent"] == []


def test_a_big_upload_cut_off_resumes_where_it_stopped(
    team: dict[str, Any], deployment: Any, project: Any, tether: Any
) -> None:
    """Through a folder server: a blob sent in part (a client that died) is kept in
    part; the next sync sends only the rest, and the blob is whole and checked. A piece
    that does not start where the server's bytes end is refused (409); bytes damaged in
    a piece are found when the blob completes, and the next attempt starts over."""
    big = project.root / "weights.bin"
    data = os.urandom(3 << 20)
    big.write_bytes(data)
    assert tether("add", "weights.bin").exit_code == 0
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, blobs = deployment
    partial = Path(blobs) / "projects" / "recs" / ".tether" / "tmp" / f"partial-{digest[7:]}"
    with client(team, "ada") as ada:
        plan = ada.post("/p/recs/sync/blobs/uploads", json={"digest": digest, "size": len(data)})
        assert plan.json() == {"via": "server", "offset": 0}
        whole = {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}
        first = ada.put(f"/p/recs/sync/blobs/{digest}", content=data[: 1 << 20], headers=whole)
        assert first.status_code == 202 and first.json()["offset"] == 1 << 20
        plan = ada.post("/p/recs/sync/blobs/uploads", json={"digest": digest, "size": len(data)})
        assert plan.json()["offset"] == 1 << 20
        stale = ada.put(f"/p/recs/sync/blobs/{digest}", content=data[:100], headers=whole)
        assert stale.status_code == 409 and stale.json()["error"] == "upload-offset"
        for bad in ("bytes 5-2/10", "bytes=0-1/2", "items 0-1/2"):
            refused = ada.put(f"/p/recs/sync/blobs/{digest}", content=b"x",
                              headers={"Content-Range": bad})  # fmt: skip
            assert refused.status_code == 400, bad
        assert partial.stat().st_size == 1 << 20  # none of the refused bytes went in
    ok = tether(
        "connect", team["base"], "--project", "recs", "--token-stdin", input=team["tokens"]["ada"]
    )
    assert ok.exit_code == 0, ok.output
    synced = tether("sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert not partial.exists()
    with client(team, "ada") as ada:
        held = ada.get(f"/p/recs/sync/blobs/{digest}")
        assert held.status_code == 200 and held.content == data
        # A damaged first piece: found when the blob completes; the partial goes.
        other = os.urandom(2 << 20)
        other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
        damaged = b"\0" + other[1 : 1 << 20]
        span = f"bytes 0-{len(other) - 1}/{len(other)}"
        assert ada.put(f"/p/recs/sync/blobs/{other_digest}", content=damaged,
                       headers={"Content-Range": span}).status_code == 202  # fmt: skip
        rest = f"bytes {1 << 20}-{len(other) - 1}/{len(other)}"
        refused = ada.put(f"/p/recs/sync/blobs/{other_digest}", content=other[1 << 20 :],
                          headers={"Content-Range": rest})  # fmt: skip
        assert refused.status_code == 400 and refused.json()["error"] == "object-corrupted"
        again = ada.post("/p/recs/sync/blobs/uploads",
                         json={"digest": other_digest, "size": len(other)})  # fmt: skip
        assert again.json()["offset"] == 0


def test_a_teammate_reproduces_a_run_from_the_servers_inputs(
    team: dict[str, Any], deployment: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """ada records v1, then changes its data and commits; her sync sends the run with
    the input it read. bob clones, syncs (his pointers bring the new data, not v1's),
    and reproduces v1: its input comes from the server by digest, and it reproduces."""
    from tests.test_reproduce import commit, last_json, record, seeded_project
    from tests.test_runs import git

    root = tmp_path / "ada"
    tether = seeded_project(root)
    record(tether, "v1", sys.executable, "train.py", seed=1)
    (root / "data" / "in.csv").write_text("5\n6\n7\n")
    assert tether("add", "data").exit_code == 0
    commit(root, "new data")
    as_ada = ["-C", str(root)]
    ok = CliRunner().invoke(cli, [*as_ada, "connect", team["base"], "--project", "recs",
                                  "--token-stdin"], input=team["tokens"]["ada"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    sent = tether("sync")
    assert sent.exit_code == 0, sent.output
    admin(deployment, "grant", "bob", "recs", "read")
    bob_root = tmp_path / "bob"
    git(tmp_path, "clone", "-q", str(root), str(bob_root))
    as_bob = teammate(team, "bob", bob_root, request, init=False)
    pulled = as_bob("sync")
    assert pulled.exit_code == 0, pulled.output
    result = as_bob("reproduce", "v1", "--json")
    assert result.exit_code == 0, result.output
    report = last_json(result)
    assert [i["source"] for i in report["plan"]["inputs"]] == ["server"]
    assert report["verdict"] == "REPRODUCED"


@pytest.fixture(scope="module")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's docker-registry on 127.0.0.1."""
    from tests.registry import start_registry

    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


def test_where_a_model_is_mirrored_travels_with_it(
    team: dict[str, Any],
    deployment: Any,
    project: Any,
    tether: Any,
    request: pytest.FixtureRequest,
    oci_registry: Any,
) -> None:
    """ada mirrors her model to an OCI registry (docker-registry) and syncs; bob's sync
    brings the model and where it is mirrored, so his 'model push' needs no
    destination, and the registry then holds both their aliases."""
    conftest.train(tether, project, "v1", "alpha")
    dest = f"{oci_registry.host}/team/recs"
    for args in (
        ("pack", "-t", "demo:v1.0.0"),
        ("model", "register", "recs", "--from", "demo:v1.0.0"),
        ("model", "alias", "recs", "production", "v1", "-m", "first release"),
        ("model", "push", "recs", dest, "--plain-http"),
        ("connect", team["base"], "--project", "recs", "--token-stdin"),
        ("sync",),
    ):
        done = tether(*args, input=team["tokens"]["ada"] if args[0] == "connect" else None)
        assert done.exit_code == 0, (args, done.output)
    admin(deployment, "grant", "bob", "recs", "write")
    as_bob = teammate(team, "bob", project.root.parent / "bob", request)
    for args in (
        ("sync",),
        ("model", "alias", "recs", "staging", "v1", "-m", "bob stages it"),
        ("model", "push", "recs", "--plain-http"),
    ):
        done = as_bob(*args)
        assert done.exit_code == 0, (args, done.output)
    tags = httpx.get(f"http://{oci_registry.host}/v2/team/recs/tags/list").json()["tags"]
    assert {"v1", "production", "staging", "tether.history"} <= set(tags)
    with client(team, "bob") as bob:
        assert dest in bob.get("/p/recs/models/recs").text
