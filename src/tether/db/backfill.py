"""Data written by migrations, in SQL both engines run: filling a new derived table
from the rows that already exist."""

from __future__ import annotations

from tether.db.connection import Connection

# Must match repositories/metrics.py: FINE points per fine bucket, FINE fine buckets
# per coarse one; a bucket's ``last`` is the value of its last point as logged.
FINE = 64


def metric_buckets(conn: Connection, insertion_order: str) -> None:
    """Buckets of every series logged before ``run_metric_buckets`` existed."""
    conn.execute(
        f"""
        INSERT INTO run_metric_buckets
            (run_id, key, width, bucket, count, finite, min_step, max_step, min_at, max_at,
             min, max, sum, last)
        SELECT p.run_id, p.key, {FINE}, p.bucket, count(*), count(p.value), min(p.step),
               max(p.step), min(p.at), max(p.at), min(p.value), max(p.value), sum(p.value),
               max(CASE WHEN p.from_end = 1 THEN p.value END)
        FROM (
            SELECT run_id, key, step, at, value, bucket,
                   row_number() OVER (PARTITION BY run_id, key, bucket
                                      ORDER BY ordinal DESC) AS from_end
            FROM (
                SELECT run_id, key, step, at, value,
                       row_number() OVER (PARTITION BY run_id, key
                                          ORDER BY {insertion_order}) - 1 AS ordinal,
                       (row_number() OVER (PARTITION BY run_id, key
                                           ORDER BY {insertion_order}) - 1) / {FINE} AS bucket
                FROM run_metrics
            ) numbered
        ) p
        GROUP BY p.run_id, p.key, p.bucket
        """
    )
    conn.execute(
        f"""
        INSERT INTO run_metric_buckets
            (run_id, key, width, bucket, count, finite, min_step, max_step, min_at, max_at,
             min, max, sum, last)
        SELECT g.run_id, g.key, {FINE * FINE}, g.coarse, g.count, g.finite, g.min_step,
               g.max_step, g.min_at, g.max_at, g.min, g.max, g.sum, f.last
        FROM (
            SELECT run_id, key, bucket / {FINE} AS coarse, sum(count) AS count,
                   sum(finite) AS finite, min(min_step) AS min_step, max(max_step) AS max_step,
                   min(min_at) AS min_at, max(max_at) AS max_at, min(min) AS min,
                   max(max) AS max, sum(sum) AS sum, max(bucket) AS last_bucket
            FROM run_metric_buckets WHERE width = {FINE}
            GROUP BY run_id, key, bucket / {FINE}
        ) g
        JOIN run_metric_buckets f
          ON f.run_id = g.run_id AND f.key = g.key AND f.width = {FINE}
         AND f.bucket = g.last_bucket
        """
    )


def metric_chunks(conn: Connection, insertion_order: str) -> None:
    """Every point of ``run_metrics`` into ``run_metric_chunks`` (db/point_chunks.py),
    series by series in the order they were logged; then the old table goes."""
    import math

    from tether.db import point_chunks

    series = conn.execute("SELECT DISTINCT run_id, key FROM run_metrics").fetchall()
    for found in series:
        run_id, key = found["run_id"], found["key"]
        rows = conn.execute(
            f"SELECT step, at, value FROM run_metrics WHERE run_id = ? AND key = ?"
            f" ORDER BY {insertion_order}",
            (run_id, key),
        ).fetchall()
        for start in range(0, len(rows), point_chunks.MAX_CHUNK):
            part = rows[start : start + point_chunks.MAX_CHUNK]
            steps = [int(r["step"]) for r in part]
            ats = [float(r["at"]) for r in part]
            values = [math.nan if r["value"] is None else float(r["value"]) for r in part]
            conn.insert_many(
                "run_metric_chunks",
                point_chunks.CHUNK_COLUMNS,
                [point_chunks.row(run_id, key, start, steps, ats, values)],
            )
    conn.execute("DROP TABLE run_metrics")
