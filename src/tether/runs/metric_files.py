"""Metrics a script wrote to its own files (``tether run --metrics PATH``), read after the
run so that scripts that never import tether still get metrics, and ``reproduce`` can
compare them.

Formats, by what PATH is:

- ``*.json``: an object of numbers (nested objects flatten with ``.``; a list of numbers
  is a series at steps 0, 1, …), or a list of objects read as JSON Lines;
- ``*.jsonl`` / ``*.ndjson``: one object per line; its ``step`` (else ``epoch``, else
  ``iteration``, else the line's index) is the step, every other number a metric;
- ``*.csv`` / ``*.tsv``: a header row; ``step`` (or ``epoch``) is the step and every
  other column of numbers a metric, or two columns ``key``/``name``/``metric`` and
  ``value``: one summary value each;
- a folder in dvclive's layout: ``plots/metrics/**/KEY.tsv`` (columns ``step``, KEY) as
  series named by their path, and ``metrics.json`` for the rest.

Values that are not finite numbers, and booleans, are not metrics and are skipped.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tether.errors import RunError

Point = tuple[str, int, float, float]  # key, step, at, value
STEP_KEYS = ("step", "epoch", "iteration")
MAX_BYTES = 256 << 20


def read_metrics(path: Path, at: float) -> list[Point]:
    """Every point in ``path``; ``at`` is the time given to points (the run's end)."""
    if path.is_dir():
        return list(_dvclive(path, at))
    try:
        size = path.stat().st_size
    except OSError as e:
        raise RunError(
            f"metrics file {path} cannot be read: {e.strerror}",
            hint="check the --metrics path; it is read after the run",
        ) from None
    if size > MAX_BYTES:
        raise RunError(
            f"metrics file {path} is over {MAX_BYTES >> 20} MiB",
            hint="log big series with tether.start_run() instead",
        )
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if suffix == ".json":
            return list(_json(json.loads(text), at))
        if suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            return list(_rows(rows, at))
        if suffix in (".csv", ".tsv"):
            return list(_table(text, "\t" if suffix == ".tsv" else ",", at))
    except (json.JSONDecodeError, csv.Error) as e:
        raise RunError(
            f"metrics file {path} does not parse: {e}",
            hint="it must be JSON, JSON Lines, CSV or TSV",
        ) from None
    raise RunError(
        f"{path.name}: unknown metrics format",
        hint="use .json, .jsonl, .csv, .tsv, or a dvclive folder",
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _flat(doc: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _json(doc: Any, at: float) -> Iterator[Point]:
    if isinstance(doc, list):
        yield from _rows([r for r in doc if isinstance(r, dict)], at)
        return
    if not isinstance(doc, dict):
        return
    for key, value in _flat(doc):
        if isinstance(value, list):
            for step, item in enumerate(value):
                if (number := _number(item)) is not None:
                    yield key, step, at, number
        elif (number := _number(value)) is not None:
            yield key, 0, at, number


def _step(row: dict[str, Any], index: int) -> tuple[int, str | None]:
    for key in STEP_KEYS:
        if key in row and (number := _number(row[key])) is not None:
            return int(number), key
    return index, None


def _rows(rows: list[Any], at: float) -> Iterator[Point]:
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        step, step_key = _step(row, index)
        for key, value in _flat(row):
            if (
                key != step_key
                and key not in ("timestamp", "time")
                and (number := _number(value)) is not None
            ):
                yield key, step, at, number


def _table(text: str, delimiter: str, at: float) -> Iterator[Point]:
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows:
        return
    columns = [c.strip().lower() for c in rows[0]]
    names = {"key", "name", "metric"} & set(columns)
    if len(columns) == 2 and names and "value" in columns:
        original = {c.strip().lower(): c for c in rows[0]}
        name_col, value_col = original[names.pop()], original["value"]
        for row in rows:
            if (number := _number(row.get(value_col))) is not None and row.get(name_col):
                yield str(row[name_col]), 0, at, number
        return
    yield from _rows(rows, at)


def _dvclive(folder: Path, at: float) -> Iterator[Point]:
    plots = folder / "plots" / "metrics"
    series: set[str] = set()
    if plots.is_dir():
        for tsv in sorted(plots.rglob("*.tsv")):
            key = tsv.relative_to(plots).with_suffix("").as_posix()
            series.add(key)
            rows = list(
                csv.DictReader(tsv.read_text(encoding="utf-8").splitlines(), delimiter="\t")
            )
            column = key.rsplit("/", 1)[-1]
            for index, row in enumerate(rows):
                step, _ = _step(row, index)
                if (number := _number(row.get(column))) is not None:
                    yield key, step, at, number
    summary = folder / "metrics.json"
    if summary.is_file():
        doc = json.loads(summary.read_text(encoding="utf-8"))
        for key, step, when, value in _json(doc, at):
            # dvclive's summary repeats each series' last value; keep the rest.
            if key.replace(".", "/") not in series and key != "step":
                yield key, step, when, value
