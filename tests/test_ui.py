"""tether ui against a real project, served by the real command (uvicorn on loopback)
and driven by a real headless Chromium (Debian's, through Playwright). Screenshots of
every page go to test-artifacts/ui/."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import Result

from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.runs.record import NewRun
from tether.workspace import Workspace

from .conftest import train

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "ui"
XSS = "<img src=x onerror=alert(1)>"
Tether = Callable[..., Result]


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def story(project: Workspace, tether: Tether) -> Workspace:
    """Two trained runs with params and metrics (one series of 100,000 points), a run
    with a hostile name, two ModelKits and a model whose alias moved."""
    v1 = train(tether, project, "v1", "alpha")
    ok(tether("pack", "-t", "demo:v1.0.0"))
    v2 = train(tether, project, "v2", "beta")
    db = project.db
    for run_id, lr, rmse in ((v1, "0.1", 0.91), (v2, "0.01", 0.87)):
        runs_repo.log_params(db, run_id, {"lr": lr, "k": "20"})
        runs_repo.set_tags(db, run_id, {"team": "recs"})
        metrics_repo.insert_metrics(db, run_id, [("rmse", 0, time.time(), rmse)])
    loss = [("loss", i, 1_700_000_000 + i * 0.01, 1 / (1 + i)) for i in range(100_000)]
    for i in range(0, len(loss), 10_000):
        metrics_repo.insert_metrics(db, v2, loss[i : i + 10_000])
    hostile = runs_repo.create_run(db, NewRun(
        name=XSS, command=["python", "<script>alert(2)</script>"], cwd=".", host="h",
        user="<b>u</b>", pid=1, seed=None, started=time.time(),
    ))  # fmt: skip
    runs_repo.log_params(db, hostile, {"note": "<script>alert(3)</script>"})
    runs_repo.finish_run(db, hostile, "failed", ended=time.time())
    ok(tether("model", "register", "recs", "--from", "demo:v1.0.0"))
    ok(tether("model", "register", "recs", "--from", "v2"))
    ok(tether("model", "alias", "recs", "production", "v1", "-m", "first release"))
    ok(tether("model", "alias", "recs", "production", "v2", "-m", "better rmse"))
    return project


@pytest.fixture
def served(story: Workspace) -> Iterator[str]:
    """'tether ui --writable' in its own process; yields its URL."""
    yield from _serve(story, "--writable")


def _serve(ws: Workspace, *args: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "-C", str(ws.root), "ui", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        yield match.group(1).rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()


def test_json_api_speaks_the_clis_json_and_refuses_bad_input(served: str, tether: Tether) -> None:
    with httpx.Client(base_url=served, timeout=30) as http:
        api = http.get("/api/runs", params={"q": "params.lr > 0.05", "sort": "name"}).json()
        listed = tether("runs", "list", "-f", "params.lr > 0.05", "--sort", "name", "--json")
        cli = json.loads(ok(listed).output)
        assert api == cli and [r["name"] for r in api["runs"]] == ["v1"]
        detail = http.get("/api/runs/v2").json()
        assert detail == json.loads(ok(tether("runs", "show", "v2", "--json")).output)
        chart = http.get("/api/runs/v2/metrics/loss/chart", params={"width": 800})
        assert chart.status_code == 200 and len(chart.content) < 1 << 20
        body = chart.json()
        assert body["kind"] == "buckets" and body["total"] == 100_000 and len(body["x"]) <= 800
        zoom = http.get(
            "/api/runs/v2/metrics/loss/chart", params={"width": 800, "lo": 500, "hi": 900}
        ).json()
        assert zoom["kind"] == "raw" and {500.0, 900.0} <= set(zoom["x"])
        assert http.get("/api/models").json()["models"][0]["aliases"] == {"production": 2}
        # Errors: a status, the library's message and hint; never a traceback.
        bad = http.get("/api/runs", params={"q": "metrics.rmse <"})
        assert bad.status_code == 400 and bad.json()["hint"]
        missing = http.get("/api/runs/nope")
        assert missing.status_code == 404 and missing.json()["error"] == "run-not-found"
        assert http.get("/api/runs/v2/metrics/nope/chart").status_code == 404
        assert http.get("/api/runs/v2/metrics/loss/chart", params={"x": "evil"}).status_code == 400
        assert http.get("/api/no/such/route").status_code == 404
        # No path leaves the static folder or the store.
        for path in ("/static/../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd",
                     "/kits/..%2F..%2Fetc%2Fpasswd", "/api/kits/../../etc/passwd"):  # fmt: skip
            response = http.get(path)
            assert response.status_code in (400, 404), path
            assert "root:" not in response.text
        # A page never makes the server reach out to a registry it names.
        with socket.create_server(("127.0.0.1", 0)) as trap:
            port = trap.getsockname()[1]
            for path in (f"/kits/127.0.0.1:{port}/x:y", f"/api/kits/127.0.0.1:{port}/x:y"):
                assert http.get(path).status_code == 404, path
            trap.settimeout(0.5)
            with pytest.raises(TimeoutError):
                trap.accept()
        # State changes: POST only, with the page's token.
        refused = http.post("/models/recs/aliases", data={"alias": "staging", "version": "v1"})
        assert refused.status_code == 403 and "token" in refused.text
        assert http.get("/api/models").json()["models"][0]["aliases"] == {"production": 2}


def test_a_read_only_ui_refuses_changes(story: Workspace) -> None:
    for url in _serve(story):
        with httpx.Client(base_url=url) as http:
            page = http.get("/models/recs")
            assert "Move an alias" not in page.text
            token = http.cookies.get("tether_csrf")
            response = http.post(
                "/models/recs/aliases", data={"alias": "staging", "version": "v1", "csrf": token}
            )
            assert response.status_code == 403 and "--writable" in response.text


@pytest.mark.browser
@pytest.mark.slow
def test_the_pages_in_a_real_browser(served: str, story: Workspace) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI; .ci/run must install it")
        pytest.skip("needs Debian's chromium (.ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))

        def shot(name: str) -> None:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

        # Runs: every run, the hostile name as text.
        page.goto(served + "/runs")
        rows = page.locator("#runs tbody tr")
        assert rows.count() == 3  # v1, v2 and the hostile one
        assert XSS in page.locator("#runs").inner_text()
        assert page.locator("#runs img").count() == 0
        shot("runs")
        # Filter, with the CLI's error and hint inline.
        page.fill("input[name=q]", "metrics.rmse <")
        page.press("input[name=q]", "Enter")
        assert "hint:" in page.locator("#filter-error").inner_text()
        page.fill("input[name=q]", "params.lr > 0.05")
        page.press("input[name=q]", "Enter")
        assert page.locator("#runs tbody tr").count() == 1
        assert "q=params.lr" in page.url  # the state is in the URL
        # Sort by a metric: the header link, twice for the other direction.
        page.goto(served + "/runs?q=metrics.rmse+%3E+0")
        page.click("a.sort[data-key='metrics.rmse']")
        names = page.locator("#runs tbody tr td:nth-child(2)").all_inner_texts()
        assert names == ["v1", "v2"]  # descending
        page.click("a.sort[data-key='metrics.rmse']")
        assert page.locator("#runs tbody tr td:nth-child(2)").all_inner_texts() == ["v2", "v1"]
        # Compare the two selected runs.
        page.check("#runs tbody tr:nth-child(1) input[type=checkbox]")
        page.check("#runs tbody tr:nth-child(2) input[type=checkbox]")
        page.click("text=Compare selected")
        page.wait_for_selector("#comparison")
        assert "params" in page.locator("#comparison").inner_text()
        page.wait_for_selector(".chart canvas")
        shot("compare")
        # A run: charts drawn from at most a column's worth of points.
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/chart?" in r.url else None)
        page.goto(served + "/runs/v2")
        page.wait_for_selector(".chart[data-points]")
        canvases = page.locator(".chart canvas")
        assert canvases.count() >= 2
        points = [int(n) for n in page.locator(".chart").evaluate_all(
            "els => els.map(e => e.dataset.points || '0')")]  # fmt: skip
        assert all(0 < n <= 2000 for n in points), points
        assert "tether reproduce" in page.inner_text("body")
        shot("run")
        # Zoom: only a drag asks for the finer points of a range (drawing does not).
        page.wait_for_timeout(300)
        assert asked and not [u for u in asked if "lo=" in u], asked
        # The page named its charts' data in its head: each fetched once, while it loaded.
        assert page.locator("link[rel=preload][as=fetch]").count() == 2  # loss, rmse
        assert len(asked) == len(set(asked)) == 2 and all("width=1000" in u for u in asked)
        loss = page.locator(".chart", has=page.locator("h3", has_text="loss"))
        box = loss.locator(".u-over").bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        before = loss.locator(".muted").inner_text()
        with page.expect_response(lambda r: "lo=" in r.url and r.ok):
            page.mouse.move(box["x"] + box["width"] * 0.40, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.42, y, steps=5)
            page.mouse.up()
        page.wait_for_function(
            "([el, text]) => el.textContent !== text",
            arg=[loss.locator(".muted").element_handle(), before],
        )
        shown = loss.locator(".muted").inner_text()
        assert "of 100,000 points" in shown, shown
        page.goto(served + "/runs/" + runs_repo.resolve(story.db, "latest"))
        assert XSS in page.inner_text("h1") and page.locator("main img").count() == 0
        # Models: versions and the alias history; then move an alias (CSRF form).
        page.goto(served + "/models")
        assert "demo" in page.locator("#kits").inner_text()
        shot("models")
        page.click("#kits a:text('v1.0.0')")
        assert "Kitfile" in page.inner_text("main") and page.locator("#layers tbody tr").count() > 0
        shot("kit")
        page.goto(served + "/models")
        page.click("#models a:text('recs')")
        history = page.locator("#history").inner_text()
        assert "better rmse" in history and "first release" in history
        page.fill("input[name=alias]", "staging")
        page.select_option("select[name=version]", "v1")
        page.fill("form[action$='/aliases'] input[name=reason]", "canary")
        page.click("form[action$='/aliases'] button")
        page.wait_for_selector("#history")
        assert "canary" in page.locator("#history").inner_text()
        shot("model")
        # Lineage: a graph drawn in the page, nodes linking to their pages.
        page.goto(served + "/lineage?subject=recs:production")
        page.wait_for_selector("#graph[data-rendered]")
        assert page.locator("#graph g.node").count() >= 4
        shot("lineage")
        page.click("#graph g.node.run a")
        page.wait_for_url(re.compile(r"/runs/"))
        browser.close()
    assert dialogs == [] and errors == []
    os.sync()


def test_only_loopback_counts_as_private() -> None:
    from tether.web.serve import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.com"]))
