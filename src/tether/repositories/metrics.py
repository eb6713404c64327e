"""Metric series: every point, a summary per (run, metric), and min/max buckets that let
a chart of a million points be drawn from a few thousand rows.

Tables (all keyed by run, cascade-deleted with it)::

    run_metric_chunks    run_id, key, ordinal → count, min_step, max_step, steps, ats,
                         vals: the points one write added to one series, packed
                         (db/point_chunks.py); ordinal: the series' points before them
    run_metric_summary   run_id, key → last, last_step, last_at, min, max, count
    run_metric_buckets   run_id, key, width, bucket → count, finite, min_step, max_step,
                         min_at, max_at, min, max, sum, last

A bucket holds ``width`` consecutive points of a series in the order they were logged
(bucket = ordinal // width), at two widths: ``FINE`` (64) and ``COARSE`` (4,096). They
are maintained in the same transaction as the points, so a chart reads at most ~50,000
fine or coarse rows for any range and never reads the raw series unless the range holds
few enough points to send as they are. Buckets by ordinal rather than by step stay
useful whatever the spacing of the steps (every step, or every 1,000th).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tether.db import point_chunks
from tether.db.connection import Connection, Database, Instant

FINE = 64
COARSE = FINE * FINE
# A range with up to this many points per requested pixel column is sent point by point.
RAW_PER_COLUMN = 4
MAX_BUCKET_ROWS = 50_000
MAX_WIDTH = 4_000  # columns a chart may ask for

Axis = Literal["step", "time"]

_BUCKET_COLUMNS = (
    "run_id", "key", "width", "bucket", "count", "finite", "min_step", "max_step",
    "min_at", "max_at", "min", "max", "sum", "last",
)  # fmt: skip

# Summary upsert: keep the point with the highest step (ties: the later write) as "last".
_SUMMARY_UPSERT = """
INSERT INTO run_metric_summary AS s (run_id, key, last, last_step, last_at, min, max, count)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, key) DO UPDATE SET
    last = CASE WHEN excluded.last_step >= s.last_step THEN excluded.last ELSE s.last END,
    last_at = CASE WHEN excluded.last_step >= s.last_step THEN excluded.last_at ELSE s.last_at END,
    last_step = CASE WHEN excluded.last_step > s.last_step THEN excluded.last_step
                     ELSE s.last_step END,
    min = CASE WHEN s.min IS NULL OR excluded.min < s.min THEN excluded.min ELSE s.min END,
    max = CASE WHEN s.max IS NULL OR excluded.max > s.max THEN excluded.max ELSE s.max END,
    count = s.count + excluded.count
"""

# A batch may end inside a bucket; the next one completes it.
_BUCKET_UPSERT = """
INSERT INTO run_metric_buckets AS b
    (run_id, key, width, bucket, count, finite, min_step, max_step, min_at, max_at,
     min, max, sum, last)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, key, width, bucket) DO UPDATE SET
    count = b.count + excluded.count,
    finite = b.finite + excluded.finite,
    min_step = CASE WHEN excluded.min_step < b.min_step THEN excluded.min_step
                    ELSE b.min_step END,
    max_step = CASE WHEN excluded.max_step > b.max_step THEN excluded.max_step
                    ELSE b.max_step END,
    min_at = CASE WHEN excluded.min_at < b.min_at THEN excluded.min_at ELSE b.min_at END,
    max_at = CASE WHEN excluded.max_at > b.max_at THEN excluded.max_at ELSE b.max_at END,
    min = CASE WHEN b.min IS NULL OR excluded.min < b.min THEN excluded.min ELSE b.min END,
    max = CASE WHEN b.max IS NULL OR excluded.max > b.max THEN excluded.max ELSE b.max END,
    sum = CASE WHEN b.sum IS NULL THEN excluded.sum WHEN excluded.sum IS NULL THEN b.sum
               ELSE b.sum + excluded.sum END,
    last = excluded.last
"""


@dataclass
class _Bucket:
    index: int
    count: int
    finite: int
    min_step: int
    max_step: int
    min_at: float
    max_at: float
    low: float | None
    high: float | None
    total: float | None
    last: float | None

    def merge(self, other: _Bucket) -> None:
        """Fold ``other`` (logged after this one) in."""
        self.count += other.count
        self.finite += other.finite
        self.min_step = min(self.min_step, other.min_step)
        self.max_step = max(self.max_step, other.max_step)
        self.min_at = min(self.min_at, other.min_at)
        self.max_at = max(self.max_at, other.max_at)
        if other.low is not None:
            self.low = other.low if self.low is None else min(self.low, other.low)
        if other.high is not None:
            self.high = other.high if self.high is None else max(self.high, other.high)
        if other.total is not None:
            self.total = other.total if self.total is None else self.total + other.total
        self.last = other.last

    def row(self, run_id: str, key: str, width: int) -> tuple[object, ...]:
        return (
            run_id,
            key,
            width,
            self.index,
            self.count,
            self.finite,
            self.min_step,
            self.max_step,
            Instant(self.min_at),
            Instant(self.max_at),
            self.low,
            self.high,
            self.total,
            self.last,
        )


def _fine_buckets(
    steps: Sequence[int], ats: Sequence[float], values: Sequence[float], start: int
) -> list[_Bucket]:
    """Cut a series' new points (logged after ``start`` others) into FINE buckets."""
    out: list[_Bucket] = []
    i, n = 0, len(steps)
    ordinal = start
    while i < n:
        end = min(n, i + FINE - ordinal % FINE)
        part_steps = steps[i:end]
        part_ats = ats[i:end]
        finite = [v for v in values[i:end] if v == v]  # NaN is not a value
        last = values[end - 1]
        out.append(
            _Bucket(
                ordinal // FINE,
                end - i,
                len(finite),
                min(part_steps),
                max(part_steps),
                min(part_ats),
                max(part_ats),
                min(finite) if finite else None,
                max(finite) if finite else None,
                math.fsum(finite) if finite else None,
                last if last == last else None,
            )
        )
        ordinal += end - i
        i = end
    return out


def _coarse_buckets(fine: Sequence[_Bucket]) -> list[_Bucket]:
    out: list[_Bucket] = []
    for b in fine:
        index = b.index * FINE // COARSE
        if out and out[-1].index == index:
            out[-1].merge(b)
        else:
            out.append(_Bucket(**{**b.__dict__, "index": index}))
    return out


def insert_metrics(
    db: Database, run_id: str, points: Sequence[tuple[str, int, float, float]]
) -> None:
    """Write a batch of (key, step, at, value) points, their summaries and buckets in
    one transaction. NaN is kept as NaN and left out of min/max."""
    series: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for key, step, at, value in points:
        found = series.get(key)
        if found is None:
            found = series[key] = ([], [], [])
        found[0].append(step)
        found[1].append(at)
        found[2].append(value)
    insert_series(db, run_id, series)


def insert_series(
    db: Database,
    run_id: str,
    series: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
) -> None:
    """``insert_metrics`` for points already apart by key: key → (steps, ats, values)."""
    series = {k: v for k, v in series.items() if v[0]}
    if not series:
        return
    summary = [(run_id, k, *_summary(*v)) for k, v in series.items()]
    with db.atomic(run=run_id) as conn:
        # Inside the run's write transaction: the ordinals of this batch cannot race
        # another writer of the same run.
        logged = _counts(conn, run_id)
        # Only a batch's first bucket (per width) can continue a row an earlier batch
        # wrote; every later one is new, so it goes in with the bulk path (COPY on
        # PostgreSQL) and only the first needs an upsert.
        fresh: list[tuple[object, ...]] = []
        continued: list[tuple[object, ...]] = []
        chunks: list[tuple[object, ...]] = []
        for key, (steps, ats, values) in series.items():
            start = logged.get(key, 0)
            chunks.append(point_chunks.row(run_id, key, start, steps, ats, values))
            fine = _fine_buckets(steps, ats, values, start)
            for width, found in ((FINE, fine), (COARSE, _coarse_buckets(fine))):
                rows_of = [b.row(run_id, key, width) for b in found]
                if start % width:
                    continued.append(rows_of[0])
                    rows_of = rows_of[1:]
                fresh += rows_of
        conn.insert_many("run_metric_chunks", point_chunks.CHUNK_COLUMNS, chunks)
        conn.executemany(_SUMMARY_UPSERT, summary)
        conn.insert_many("run_metric_buckets", _BUCKET_COLUMNS, fresh)
        conn.executemany(_BUCKET_UPSERT, continued)


def _summary(
    steps: Sequence[int], ats: Sequence[float], values: Sequence[float]
) -> tuple[float | None, int, Instant, float | None, float | None, int]:
    """(last, last_step, last_at, min, max, count) of a series' new points: "last" is
    the last logged of those with the highest step."""
    top = max(steps)
    i = len(steps) - 1 - steps[::-1].index(top)
    finite = [v for v in values if v == v]
    last = values[i]
    return (
        last if last == last else None,
        top,
        Instant(ats[i]),
        min(finite) if finite else None,
        max(finite) if finite else None,
        len(steps),
    )


def point_count(db: Database, run_id: str) -> int:
    """How many points the run holds, every series together."""
    rows = db.query(
        "SELECT coalesce(sum(count), 0) AS n FROM run_metric_summary WHERE run_id = ?",
        (run_id,),
    )
    return int(rows[0]["n"])


def _counts(conn: Connection, run_id: str) -> dict[str, int]:
    cursor = conn.execute("SELECT key, count FROM run_metric_summary WHERE run_id = ?", (run_id,))
    return {row["key"]: int(row["count"]) for row in cursor.fetchall()}


def metric_series(
    db: Database, run_id: str, key: str | None = None
) -> dict[str, list[tuple[int, float, float]]]:
    """Every point of a run's metrics (or of one): key → [(step, at, value)] by step
    (points of one step in the order they were logged)."""
    sql = "SELECT key, steps, ats, vals FROM run_metric_chunks WHERE run_id = ?"
    params: tuple[object, ...] = (run_id,)
    if key is not None:
        sql += " AND key = ?"
        params += (key,)
    series: dict[str, list[tuple[int, float, float]]] = {}
    for name, steps, ats, vals in db.tuples(sql + " ORDER BY key, ordinal", params):
        series.setdefault(name, []).extend(point_chunks.points(steps, ats, vals))
    for points in series.values():
        points.sort(key=_step)  # stable: as logged within a step
    return series


def _step(point: tuple[int, float, float]) -> int:
    return point[0]


# -- charts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartQuery:
    key: str
    axis: Axis = "step"
    low: float | None = None  # the visible range on the axis; None: from the start
    high: float | None = None
    width: int = 1000  # columns: at most this many points (or buckets) come back


@dataclass(frozen=True)
class ChartSeries:
    """What a chart draws: ``x`` and ``value`` (a bucket's mean), with ``low``/``high``
    (a bucket's min and max) when the points were bucketed."""

    key: str
    axis: Axis
    kind: Literal["raw", "buckets"]
    total: int  # points in the whole series
    x: tuple[float, ...]
    value: tuple[float | None, ...]
    low: tuple[float | None, ...] | None = None
    high: tuple[float | None, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        def clean(values: Sequence[float | None]) -> list[float | None]:
            return [None if v is None or v != v else v for v in values]

        out: dict[str, Any] = {
            "key": self.key,
            "axis": self.axis,
            "kind": self.kind,
            "total": self.total,
            "x": list(self.x),
            "value": clean(self.value),
        }
        if self.low is not None and self.high is not None:
            out["min"], out["max"] = clean(self.low), clean(self.high)
        return out


def chart(db: Database, run_id: str, query: ChartQuery) -> ChartSeries | None:
    """The points of one series to draw ``query.width`` columns wide; None when the run
    has no such metric."""
    width = max(1, min(query.width, MAX_WIDTH))
    with db.snapshot() as conn:
        row = conn.execute(
            "SELECT count FROM run_metric_summary WHERE run_id = ? AND key = ?",
            (run_id, query.key),
        ).fetchone()
        if row is None:
            return None
        total = int(row["count"])
        ranged = query.low is not None or query.high is not None
        low = -math.inf if query.low is None else query.low
        high = math.inf if query.high is None else query.high
        span = None
        if ranged:
            span = _bucket_span(conn, run_id, query, low, high, COARSE)
            if span[2] // FINE <= MAX_BUCKET_ROWS:
                # Narrow it down: a zoom into 100 points must not count a whole
                # coarse bucket's 4,096.
                span = _bucket_span(conn, run_id, query, low, high, FINE)
        within = total if span is None else span[2]
        if within <= width * RAW_PER_COLUMN:
            return _raw(conn, run_id, query, total, span)
        bucket_width = FINE if within // FINE <= MAX_BUCKET_ROWS else COARSE
        return _bucketed(conn, run_id, query, total, bucket_width, width, (low, high))


def _bucket_span(
    conn: Connection, run_id: str, query: ChartQuery, low: float, high: float, width: int
) -> tuple[int, int, int]:
    """The step range and point count (an upper bound) of the buckets of ``width`` that
    overlap [low, high] on the query's axis."""
    lo_col, hi_col = ("min_step", "max_step") if query.axis == "step" else ("min_at", "max_at")
    bounds = _bounds(query.axis, low, high)
    row = conn.execute(
        f"SELECT min(min_step) AS a, max(max_step) AS b, sum(count) AS n"
        f" FROM run_metric_buckets WHERE run_id = ? AND key = ? AND width = ?"
        f" AND {hi_col} >= ? AND {lo_col} <= ?",
        (run_id, query.key, width, *bounds),
    ).fetchone()
    if row is None or row["n"] is None:
        return (0, -1, 0)
    return (int(row["a"]), int(row["b"]), int(row["n"]))


def _bounds(axis: Axis, low: float, high: float) -> tuple[object, object]:
    if axis == "step":
        # Steps are integers; an infinite bound becomes the widest integer range.
        lo = -(2**62) if math.isinf(low) else math.floor(low)
        hi = 2**62 if math.isinf(high) else math.ceil(high)
        return lo, hi
    return Instant(max(low, 0.0)), Instant(min(high, 4e9))


def _raw(
    conn: Connection,
    run_id: str,
    query: ChartQuery,
    total: int,
    span: tuple[int, int, int] | None,
) -> ChartSeries:
    sql = "SELECT steps, ats, vals FROM run_metric_chunks WHERE run_id = ? AND key = ?"
    params: tuple[object, ...] = (run_id, query.key)
    if span is not None:
        # The chunks that overlap the buckets' step range, even for the time axis.
        sql += " AND max_step >= ? AND min_step <= ?"
        params += (span[0], span[1])
    points: list[tuple[int, float, float]] = []
    for row in conn.execute(sql + " ORDER BY ordinal", params).fetchall():
        points.extend(point_chunks.points(row["steps"], row["ats"], row["vals"]))
    if span is not None:
        points = [p for p in points if span[0] <= p[0] <= span[1]]
    # Order by step (then as logged), the order a line is drawn in.
    points.sort(key=_step)
    if query.axis == "time":
        points.sort(key=lambda p: p[1])
    x = 0 if query.axis == "step" else 1
    xs = tuple(float(p[x]) for p in points)
    values = tuple(p[2] for p in points)
    return ChartSeries(query.key, query.axis, "raw", total, xs, values)


def _bucketed(
    conn: Connection,
    run_id: str,
    query: ChartQuery,
    total: int,
    bucket_width: int,
    columns: int,
    bounds: tuple[float, float],
) -> ChartSeries:
    lo_col, hi_col = ("min_step", "max_step") if query.axis == "step" else ("min_at", "max_at")
    rows = conn.execute(
        f"SELECT count, finite, min_step, min_at, min, max, sum FROM run_metric_buckets"
        f" WHERE run_id = ? AND key = ? AND width = ? AND {hi_col} >= ? AND {lo_col} <= ?"
        f" ORDER BY bucket",
        (run_id, query.key, bucket_width, *_bounds(query.axis, *bounds)),
    ).fetchall()
    x_col = "min_step" if query.axis == "step" else "min_at"
    rows.sort(key=lambda r: r[x_col])
    # Merge consecutive buckets down to at most ``columns`` output buckets.
    per = max(1, math.ceil(len(rows) / columns))
    xs: list[float] = []
    means: list[float | None] = []
    lows: list[float | None] = []
    highs: list[float | None] = []
    for i in range(0, len(rows), per):
        group = rows[i : i + per]
        finite = sum(int(r["finite"]) for r in group)
        total_sum = sum(float(r["sum"]) for r in group if r["sum"] is not None)
        group_lows = [r["min"] for r in group if r["min"] is not None]
        group_highs = [r["max"] for r in group if r["max"] is not None]
        xs.append(float(group[0][x_col]))
        means.append(total_sum / finite if finite else None)
        lows.append(min(group_lows) if group_lows else None)
        highs.append(max(group_highs) if group_highs else None)
    return ChartSeries(
        query.key, query.axis, "buckets", total, tuple(xs), tuple(means), tuple(lows), tuple(highs)
    )
