"""The runs filter language, on a real database: semantics, sorting and hostile input."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import Result

from tether.errors import FilterError
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.repositories.run_filter import compile_filter, list_runs
from tether.runs.record import NewRun
from tether.workspace import Workspace


@pytest.fixture
def runs(project: Workspace) -> Workspace:
    """Six finished runs with params, metrics and tags."""
    db = project.db
    for i, (model, rmse, team) in enumerate(
        [("svd", 0.85, "recs"), ("svd", 0.95, "recs"), ("knn", 0.80, "search"),
         ("knn", 1.20, "recs"), ("it's", 0.70, "x"), ("svd", None, "recs")]
    ):  # fmt: skip
        run_id = runs_repo.create_run(db, NewRun(
            name=f"run{i}", command=["python", "t.py"], cwd=".", host="h", user="u",
            pid=1, seed=i, started=1_700_000_000 + i * 3600,
        ))  # fmt: skip
        runs_repo.log_params(db, run_id, {"model": model, "k": 10 * (i + 1)})
        runs_repo.set_tags(db, run_id, {"team": team})
        if rmse is not None:
            metrics_repo.insert_metrics(
                db, run_id, [("rmse", 0, 0.0, rmse + 1), ("rmse", 1, 0.0, rmse)]
            )
        status = "failed" if i == 3 else "finished"
        runs_repo.finish_run(db, run_id, status, ended=1_700_000_000 + i * 3600 + 60 * i)
    return project


def names(ws: Workspace, where: str, sort: str | None = None) -> list[str]:
    return [r.name or "" for r in list_runs(ws.db, where=where, sort=sort or "name").runs]


def test_comparisons(runs: Workspace) -> None:
    assert names(runs, "metrics.rmse < 0.9") == ["run0", "run2", "run4"]
    assert names(runs, "metrics.rmse < 0.9 and params.model = 'svd'") == ["run0"]
    assert names(runs, "params.model = 'svd' or tags.team = 'search'") == [
        "run0", "run1", "run2", "run5",
    ]  # fmt: skip
    assert names(runs, "not (params.model = 'svd') and status = 'finished'") == [
        "run2", "run4",
    ]  # fmt: skip
    assert names(runs, "params.k >= 50") == ["run4", "run5"]  # numeric, not text order
    assert names(runs, "params.k = 10") == ["run0"]
    assert names(runs, "params.k = '10'") == ["run0"]
    assert names(runs, "params.model in ('knn', 'svd') and metrics.rmse > 1") == ["run3"]
    assert names(runs, "params.model not in ('knn', 'svd')") == ["run4"]
    assert names(runs, "name like 'run_'") == [f"run{i}" for i in range(6)]
    assert names(runs, "metrics.rmse is null") == ["run5"]
    assert names(runs, "metrics.nothing is not null") == []
    assert names(runs, "params.model = 'it''s'") == ["run4"]
    assert names(runs, "seed != 0 and exit_code is null") == [f"run{i}" for i in range(1, 6)]
    assert names(runs, "duration > 200") == ["run4", "run5"]
    later = ["run1", "run2", "run3", "run4", "run5"]
    assert names(runs, "started >= '2023-11-14T23:00:00+00:00'") == later
    assert names(runs, "started > '-1d'") == []
    assert names(runs, "NOT status = 'failed' AND metrics.`rmse` <= 0.85") == [
        "run0", "run2", "run4",
    ]  # fmt: skip


def test_sorting(runs: Workspace) -> None:
    assert names(runs, "", sort="metrics.rmse") == ["run4", "run2", "run0", "run1", "run3", "run5"]
    assert names(runs, "", sort="-metrics.rmse")[:2] == ["run3", "run1"]
    assert names(runs, "", sort="params.k desc")[0] == "run5"
    assert names(runs, "", sort="-started")[0] == "run5"


@pytest.mark.parametrize(
    "hostile",
    [
        "name = x' OR '1'='1",
        "name = 'x' OR '1'='1'",
        "name = 'a'; DROP TABLE runs; --'",
        "metrics.rmse < 1e999",
        "metrics.rmse < " + "9" * 400,
        "params.`x` = 1)",
        "(" * 100 + "status = 'finished'" + ")" * 100,
        " or ".join(["status = 'finished'"] * 300),
        "bogus = 1",
        "metrics.rmse < 'abc'",
        "status = 'exploded'",
        "started > 'yesterday'",
        "params.model in ('a', 1)",
        "name = 'unterminated",
        "metrics. = 1",
        "x" * 20_000,
        "name ~ 'a'",
        "status = 'finished' and",
    ],
)
def test_hostile_filters_are_refused_or_harmless(runs: Workspace, hostile: str) -> None:
    try:
        result = list_runs(runs.db, where=hostile)
    except FilterError as exc:
        assert exc.hint
        assert exc.exit_code == 2
    else:
        # Parsed as a plain comparison with a string value: it matched nothing.
        assert result.runs == []
    assert runs.db.query("SELECT count(*) AS n FROM runs")[0]["n"] == 6


def test_values_are_bound_never_spliced() -> None:
    sql, params = compile_filter("name = 'x'' OR ''1''=''1' and params.`a'b` = 2")
    assert "OR '1'" not in sql and "a'b" not in sql
    assert params == ["x' OR '1'='1", "a'b", 2.0]


def test_unknown_field_message() -> None:
    with pytest.raises(FilterError, match="unknown field 'rmse'") as info:
        compile_filter("rmse < 1")
    assert "metrics.KEY" in (info.value.hint or "")


def test_cli_list_filter_and_errors(runs: Workspace, tether: Callable[..., Result]) -> None:
    out = tether("runs", "list", "-f", "metrics.rmse < 0.9", "--sort", "metrics.rmse")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "METRICS.RMSE" in lines[0]
    assert [line.split()[1] for line in lines[1:]] == ["run4", "run2", "run0"]
    data = json.loads(tether("runs", "list", "--json", "-n", "2").output)
    assert data["matched"] == 6 and len(data["runs"]) == 2
    bad = tether("runs", "list", "-f", "rmse < 1")
    assert bad.exit_code == 2
    assert "error: unknown field 'rmse'" in bad.output and "hint:" in bad.output


def test_many_runs_load_as_few_runs_do(runs: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading many runs takes other paths (per-run JSON objects, whole-table reads
    that skip other runs' rows): the records must be the same as one by one."""
    db = runs.db
    ids = [r.id for r in list_runs(db, limit=None, sort="name").runs]
    one_by_one = [runs_repo.load_runs(db, [i])[0].to_json() for i in ids]
    monkeypatch.setattr(runs_repo, "AGGREGATE_FROM", 2)
    # All, most and half (whole tables); a third (lists, aggregated); one (lists).
    for chosen in (ids, ids[1:5], ids[:3][::-1], ids[::3], ids[2:3]):
        loaded = [r.to_json() for r in runs_repo.load_runs(db, chosen)]
        assert loaded == [one_by_one[ids.index(i)] for i in chosen]
        listed = runs_repo.load_runs(db, chosen, full=False)
        assert [r.to_json(summary=True) for r in listed] == [
            {k: v for k, v in x.items() if k not in ("pid", "code", "capture", "files")}
            for x in loaded
        ]
    assert runs_repo.load_runs(db, ["no-such-run", ids[0]]) == runs_repo.load_runs(db, ids[:1])
