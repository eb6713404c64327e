"""Judging a reproduction: outputs compared by digest, metrics by value within
per-metric tolerances, and one verdict.

Verdicts, best first:

- ``REPRODUCED``: every output bit-identical and every metric exactly equal;
- ``WITHIN TOLERANCE``: every output present and every metric within its tolerance,
  but something is not bit-identical (never with ``exact``);
- ``DIVERGED``: an output is missing, or a metric is missing or out of tolerance, or
  outputs differ with no metric to judge them by;
- ``UNVERIFIED``: the run recorded nothing to compare (no output, no metric), so there is
  no evidence either way; never counted as reproduced;
- ``FAILED``: the reproduction did not finish as the original did.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tether.db.connection import Database
from tether.errors import UsageError
from tether.repositories.metrics import metric_series
from tether.runs.record import RunRecord
from tether.store.objects import ContentStore

REPRODUCED = "REPRODUCED"
WITHIN_TOLERANCE = "WITHIN TOLERANCE"
DIVERGED = "DIVERGED"
UNVERIFIED = "UNVERIFIED"
FAILED = "FAILED"
VERDICTS = (REPRODUCED, WITHIN_TOLERANCE, DIVERGED, UNVERIFIED, FAILED)
NOTHING_TO_COMPARE = (
    "nothing to compare: the run recorded no output and no metric, so the reproduction "
    "proves nothing; declare outputs with 'tether run -o PATH' or log metrics with "
    "tether.start_run().log_metric(...), then run and reproduce again"
)
_COMPARED_ROLES = ("output", "artifact")


@dataclass(frozen=True)
class Tolerance:
    """``KEY=ABS`` (absolute difference) or ``KEY=REL%`` (relative to the recorded
    value); KEY may be a glob (``loss/*``, ``*``)."""

    pattern: str
    absolute: float | None = None
    relative: float | None = None  # a fraction: 1% is 0.01

    def allows(self, expected: float, actual: float) -> bool:
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        diff = abs(actual - expected)
        if self.absolute is not None:
            return diff <= self.absolute
        assert self.relative is not None
        return diff <= self.relative * abs(expected)

    def __str__(self) -> str:
        if self.absolute is not None:
            return f"±{self.absolute:g}"
        assert self.relative is not None
        return f"±{self.relative * 100:g}%"


def parse_tolerance(text: str) -> Tolerance:
    key, sep, value = text.rpartition("=")
    hint = "write KEY=ABS or KEY=REL%, e.g. rmse=0.001 or 'recall=1%' or '*=0.5%'"
    if not sep or not key.strip():
        raise UsageError(f"tolerance {text!r} is not KEY=ABS or KEY=REL%", hint=hint)
    relative = value.strip().endswith("%")
    try:
        number = float(value.strip().removesuffix("%"))
    except ValueError:
        raise UsageError(f"tolerance {text!r}: {value!r} is not a number", hint=hint) from None
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"tolerance {text!r} must be a finite number ≥ 0", hint=hint)
    if relative:
        return Tolerance(key.strip(), relative=number / 100)
    return Tolerance(key.strip(), absolute=number)


def tolerance_for(key: str, tolerances: Sequence[Tolerance]) -> Tolerance | None:
    """The tolerance for a metric: an exact name wins over a glob; later globs win."""
    for t in tolerances:
        if t.pattern == key:
            return t
    for t in reversed(tolerances):
        if fnmatch.fnmatchcase(key, t.pattern):
            return t
    return None


@dataclass(frozen=True)
class OutputCheck:
    path: str
    expected: str | None
    actual: str | None
    status: str  # identical | same-content | differs | missing | new
    note: str = ""  # same-content: which format's embedded metadata differed


@dataclass(frozen=True)
class MetricCheck:
    key: str
    expected: float | None
    actual: float | None
    tolerance: str | None
    status: str  # equal | within | outside | missing | new
    detail: str = ""  # with series: where the worst step is

    @property
    def delta(self) -> float | None:
        if self.expected is None or self.actual is None:
            return None
        return self.actual - self.expected


@dataclass(frozen=True)
class Verification:
    verdict: str
    reason: str
    outputs: tuple[OutputCheck, ...]
    metrics: tuple[MetricCheck, ...]

    @property
    def reproduced(self) -> bool:
        return self.verdict in (REPRODUCED, WITHIN_TOLERANCE)

    def to_json(self) -> dict[str, Any]:
        def num(x: float | None) -> float | str | None:
            return None if x is None else ("nan" if math.isnan(x) else x)

        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "outputs": [o.__dict__ for o in self.outputs],
            "metrics": [
                {
                    "key": m.key,
                    "expected": num(m.expected),
                    "actual": num(m.actual),
                    "delta": num(m.delta),
                    "tolerance": m.tolerance,
                    "status": m.status,
                    "detail": m.detail,
                }
                for m in self.metrics
            ],
        }


def verify(
    db: Database,
    original: RunRecord,
    reproduction: RunRecord,
    *,
    tolerances: Sequence[Tolerance] = (),
    exact: bool = False,
    series: bool = False,
    store: ContentStore | None = None,
    outside: bool = False,
) -> Verification:
    outputs = compare_outputs(original, reproduction, store, outside=outside)
    metrics = (
        _series(db, original, reproduction, tolerances)
        if series
        else compare_metrics(original, reproduction, tolerances)
    )
    if reproduction.status != original.status or (
        original.status != "finished" and reproduction.exit_code != original.exit_code
    ):
        why = reproduction.reason or reproduction.status
        return Verification(
            FAILED,
            f"the original {original.status}, the reproduction {reproduction.status} ({why})",
            outputs,
            metrics,
        )
    missing = [o.path for o in outputs if o.status == "missing"]
    bad = [m.key for m in metrics if m.status in ("outside", "missing")]
    differs = [o.path for o in outputs if o.status == "differs"]
    stamped = [o.path for o in outputs if o.status == "same-content"]
    if exact:
        differs += stamped  # --exact means bit for bit
        stamped = []
    within = [m.key for m in metrics if m.status == "within"]
    if missing:
        return Verification(
            DIVERGED, f"output not produced: {', '.join(missing)}", outputs, metrics
        )
    if bad:
        return Verification(
            DIVERGED, f"metric(s) out of tolerance or missing: {', '.join(bad)}", outputs, metrics
        )
    evidence = any(o.status != "new" for o in outputs) or any(m.status != "new" for m in metrics)
    if not evidence:
        return Verification(UNVERIFIED, NOTHING_TO_COMPARE, outputs, metrics)
    if not differs and not within:
        what = []
        identical = len(outputs) - len(stamped)
        if identical:
            what.append(f"{identical} output(s) bit-identical")
        if stamped:
            what.append(
                f"{len(stamped)} identical apart from embedded timestamps ({', '.join(stamped)})"
            )
        if metrics:
            what.append(f"{len(metrics)} metric(s) equal")
        return Verification(REPRODUCED, " and ".join(what), outputs, metrics)
    if exact:
        return Verification(
            DIVERGED,
            "--exact: not bit-identical ("
            + ", ".join(differs + [f"metric {k}" for k in within])
            + ")",
            outputs,
            metrics,
        )
    if differs and not metrics:
        return Verification(
            DIVERGED,
            f"output(s) differ and no metric can judge them: {', '.join(differs)}",
            outputs,
            metrics,
        )
    parts = []
    if differs:
        parts.append(f"output(s) differ: {', '.join(differs)}")
    if within:
        parts.append(f"metric(s) within tolerance: {', '.join(within)}")
    return Verification(
        WITHIN_TOLERANCE, "; ".join(parts) + "; every metric is within tolerance", outputs, metrics
    )


def compare_outputs(
    original: RunRecord,
    reproduction: RunRecord,
    store: ContentStore | None = None,
    *,
    outside: bool = False,
) -> tuple[OutputCheck, ...]:
    """Outputs by digest; with the store, outputs that differ are compared again with
    their formats' embedded timestamps left out (``normalize.py``). ``outside`` adds the
    side effects (writes outside the project), which are not verified by default."""
    roles = (*_COMPARED_ROLES, "side-effect") if outside else _COMPARED_ROLES
    want = {f.path: f.digest for f in original.files if f.role in roles}
    got = {f.path: f.digest for f in reproduction.files if f.role in roles}
    checks = []
    for path in sorted(set(want) | set(got)):
        note = ""
        if path not in got:
            status = "missing"
        elif path not in want:
            status = "new"
        elif want[path] == got[path]:
            status = "identical"
        else:
            status = "differs"
            same = _same_content(store, want[path], got[path])
            if same is not None:
                status, note = "same-content", f"{same} metadata (timestamps) differ"
        checks.append(OutputCheck(path, want.get(path), got.get(path), status, note))
    return tuple(checks)


def _same_content(store: ContentStore | None, a: str | None, b: str | None) -> str | None:
    """The format name when two stored outputs differ only in embedded metadata."""
    from tether.hashing import Digest
    from tether.repro.normalize import content_digest

    if store is None or not a or not b:
        return None
    da, db = Digest.parse(a), Digest.parse(b)
    if not (store.has(da) and store.has(db)):
        return None
    with store.file_of(da) as pa, store.file_of(db) as pb:
        ca, cb = content_digest(pa), content_digest(pb)
    return ca[0] if ca is not None and ca == cb else None


def _judge(key: str, expected: float, actual: float, tol: Tolerance | None) -> str:
    if expected == actual or (math.isnan(expected) and math.isnan(actual)):
        return "equal"
    if tol is not None and tol.allows(expected, actual):
        return "within"
    return "outside"


def compare_metrics(
    original: RunRecord, reproduction: RunRecord, tolerances: Sequence[Tolerance]
) -> tuple[MetricCheck, ...]:
    checks = []
    for key in sorted(set(original.metrics) | set(reproduction.metrics)):
        tol = tolerance_for(key, tolerances)
        label = str(tol) if tol else None
        a = original.metrics.get(key)
        b = reproduction.metrics.get(key)
        if b is None:
            assert a is not None
            checks.append(MetricCheck(key, a.last, None, label, "missing"))
        elif a is None:
            checks.append(MetricCheck(key, None, b.last, label, "new"))
        else:
            checks.append(MetricCheck(key, a.last, b.last, label, _judge(key, a.last, b.last, tol)))
    return tuple(checks)


def _series(
    db: Database, original: RunRecord, reproduction: RunRecord, tolerances: Sequence[Tolerance]
) -> tuple[MetricCheck, ...]:
    want = metric_series(db, original.id)
    got = metric_series(db, reproduction.id)
    checks = []
    for key in sorted(set(want) | set(got)):
        tol = tolerance_for(key, tolerances)
        label = str(tol) if tol else None
        if key not in got:
            checks.append(MetricCheck(key, want[key][-1][2], None, label, "missing"))
            continue
        if key not in want:
            checks.append(MetricCheck(key, None, got[key][-1][2], label, "new"))
            continue
        a = {step: value for step, _, value in want[key]}
        b = {step: value for step, _, value in got[key]}
        last_a, last_b = want[key][-1][2], got[key][-1][2]
        if set(a) != set(b):
            only = sorted(set(a) ^ set(b))
            detail = f"steps differ ({len(a)} vs {len(b)}; e.g. step {only[0]})"
            checks.append(MetricCheck(key, last_a, last_b, label, "outside", detail))
            continue
        worst_status, worst_step, worst_diff = "equal", None, -1.0
        rank = {"equal": 0, "within": 1, "outside": 2}
        for step in sorted(a):
            status = _judge(key, a[step], b[step], tol)
            diff = abs(b[step] - a[step]) if not math.isnan(a[step] - b[step]) else math.inf
            if status != "equal" and (
                rank[status] > rank[worst_status]
                or (rank[status] == rank[worst_status] and diff > worst_diff)
            ):
                worst_status, worst_step, worst_diff = status, step, diff
        detail = (
            f"{len(a)} step(s) compared"
            if worst_step is None
            else f"{len(a)} step(s) compared; largest difference at step {worst_step}: "
            f"{a[worst_step]:.6g} -> {b[worst_step]:.6g}"
        )
        checks.append(MetricCheck(key, last_a, last_b, label, worst_status, detail))
    return tuple(checks)
