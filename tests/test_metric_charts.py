"""Metric charts at scale: the min/max buckets kept with the points answer for any range
exactly what the raw points say, whatever the batches were; a zoom gets the raw points;
old series get their buckets on migrate. On both engines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tether.db.connection import Instant, open_database
from tether.db.url import DatabaseURL
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.repositories.metrics import FINE, ChartQuery
from tether.runs.record import NewRun
from tether.workspace import Workspace

Point = tuple[str, int, float, float]


def new_run(db: object, name: str) -> str:
    return runs_repo.create_run(db, NewRun(  # type: ignore[arg-type]
        name=name, command=["python", "t.py"], cwd=".", host="h", user="u",
        pid=1, seed=0, started=1_700_000_000,
    ))  # fmt: skip


def series(n: int, key: str = "loss") -> list[Point]:
    """A noisy decreasing curve, with NaN now and then."""
    out = []
    for i in range(n):
        value = math.nan if i % 997 == 500 else 1 / (1 + i) + ((i * 7919) % 101) / 1000
        out.append((key, i, 1_700_000_000 + i * 0.5, value))
    return out


def insert_in_batches(db: object, run_id: str, points: Sequence[Point]) -> None:
    sizes = [1, 63, 64, 1000, 37, 4095, 2, 300]
    i = 0
    for size in sizes * 100:
        if i >= len(points):
            break
        metrics_repo.insert_metrics(db, run_id, points[i : i + size])  # type: ignore[arg-type]
        i += size


def expected_columns(points: Sequence[Point], per_column: int) -> list[tuple[float, ...]]:
    """(x, mean, min, max) of consecutive groups of ``per_column`` points, from the raw
    points: what the chart must say."""
    out = []
    for i in range(0, len(points), per_column):
        group = points[i : i + per_column]
        finite = [p[3] for p in group if p[3] == p[3]]
        out.append((group[0][1], math.fsum(finite) / len(finite), min(finite), max(finite)))
    return out


def test_buckets_say_what_the_points_say_whatever_the_batches(project: Workspace) -> None:
    db = project.db
    run_id = new_run(db, "big")
    points = series(10_000)
    insert_in_batches(db, run_id, points)
    chart = metrics_repo.chart(db, run_id, ChartQuery("loss", width=100))
    assert chart is not None and chart.kind == "buckets" and chart.total == 10_000
    assert len(chart.x) <= 100
    # 157 fine buckets merged two by two: 128 points per column.
    want = expected_columns(points, 2 * FINE)
    assert len(chart.x) == len(want)
    columns = zip(chart.x, chart.value, chart.low or (), chart.high or (), strict=True)
    for (x, mean, low, high), got in zip(want, columns, strict=True):
        assert got[0] == x and got[2] == low and got[3] == high
        assert got[1] is not None and math.isclose(got[1], mean, rel_tol=1e-12)
    as_json = chart.to_json()
    assert set(as_json) >= {"x", "value", "min", "max", "total", "kind"}
    assert metrics_repo.chart(db, run_id, ChartQuery("nope")) is None


def test_a_zoom_gets_the_raw_points_of_the_range(project: Workspace) -> None:
    db = project.db
    run_id = new_run(db, "zoom")
    points = series(20_000)
    insert_in_batches(db, run_id, points)
    chart = metrics_repo.chart(db, run_id, ChartQuery("loss", low=5000, high=5100, width=100))
    assert chart is not None and chart.kind == "raw"
    steps = [int(x) for x in chart.x]
    assert set(range(5000, 5101)) <= set(steps)
    assert len(steps) <= 100 + 2 * FINE  # the range and at most a bucket either side
    for step, value in zip(steps, chart.value, strict=True):
        want = points[step][3]
        assert (value is None and want != want) or value == want
    # Wider than raw allows: buckets again, none outside the range's buckets.
    wide = metrics_repo.chart(db, run_id, ChartQuery("loss", low=1000, high=9000, width=50))
    assert wide is not None and wide.kind == "buckets"
    assert min(wide.x) >= 1000 - FINE and max(wide.x) <= 9000 and len(wide.x) <= 50
    # The same range on the wall-time axis.
    at_lo, at_hi = points[5000][2], points[5100][2]
    timed = metrics_repo.chart(
        db, run_id, ChartQuery("loss", axis="time", low=at_lo, high=at_hi, width=100)
    )
    assert timed is not None and timed.kind == "raw"
    assert {p[2] for p in points[5000:5101]} <= set(timed.x)
    assert list(timed.x) == sorted(timed.x)


def test_series_logged_before_buckets_get_them_on_migrate(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from tests import conftest

    url = DatabaseURL.parse("sqlite:///old.db", root=tmp_path)
    if conftest.BACKEND == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        name = f"old{next(conftest._names)}"
        cluster.admin(f"CREATE DATABASE {name}")
        conftest._test_databases.append(name)
        url = DatabaseURL.parse(cluster.url(name), root=Path("/"))
    _backfill_matches_the_write_path(url)


def _backfill_matches_the_write_path(url: DatabaseURL) -> None:
    from tether.db.migrations import migrate, migrations_for

    db = open_database(url)
    names = [m.name for m in migrations_for(db)]
    before = names[names.index("0008_metric_buckets") - 1]
    migrate(db, through=before)
    old = new_run(db, "old")
    points = series(9_000)
    # What tether 0.1 wrote: the points and their summary, no buckets.
    with db.atomic() as conn:
        conn.insert_many(
            "run_metrics",
            ("run_id", "key", "step", "at", "value"),
            [(old, k, s, Instant(a), None if v != v else v) for k, s, a, v in points],
        )
        finite = [p[3] for p in points if p[3] == p[3]]
        conn.execute(
            "INSERT INTO run_metric_summary VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (old, "loss", points[-1][3], points[-1][1], Instant(points[-1][2]),
             min(finite), max(finite), len(points)),
        )  # fmt: skip
    migrate(db)
    new = new_run(db, "new")
    insert_in_batches(db, new, points)
    # The points moved into chunks, as logged.
    _same_series(metrics_repo.metric_series(db, old), metrics_repo.metric_series(db, new))
    for query in (
        ChartQuery("loss", width=40),
        ChartQuery("loss", width=3000),
        ChartQuery("loss", low=100, high=6000, width=20),
        ChartQuery("loss", axis="time", width=60),
    ):
        a, b = metrics_repo.chart(db, old, query), metrics_repo.chart(db, new, query)
        assert a is not None and b is not None
        same_chart(a.to_json(), b.to_json())
    # Logging goes on where the old series stopped.
    more = [("loss", 9_000 + i, 1_800_000_000.0 + i, 0.5) for i in range(100)]
    metrics_repo.insert_metrics(db, old, more)
    metrics_repo.insert_metrics(db, new, more)
    a, b = (metrics_repo.chart(db, r, ChartQuery("loss", width=50)) for r in (old, new))
    assert a is not None and b is not None and a.total == 9_100
    same_chart(a.to_json(), b.to_json())
    db.close()


def _same_series(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Equal, NaN equal to NaN."""
    assert a.keys() == b.keys()
    for key in a:
        assert len(a[key]) == len(b[key])
        for (s1, t1, v1), (s2, t2, v2) in zip(a[key], b[key], strict=True):
            assert s1 == s2 and math.isclose(t1, t2, abs_tol=1e-6)
            assert (v1 != v1 and v2 != v2) or v1 == v2


def same_chart(a: dict[str, object], b: dict[str, object]) -> None:
    """Equal, but for the last bits of means (SQL's sum and math.fsum round apart)."""
    means_a, means_b = a.pop("value"), b.pop("value")
    assert a == b
    assert isinstance(means_a, list) and isinstance(means_b, list)
    assert len(means_a) == len(means_b)
    for x, y in zip(means_a, means_b, strict=True):
        assert (x is None and y is None) or math.isclose(x, y, rel_tol=1e-9)
