"""Side-by-side comparison of runs: one row per fact, one column per run, keeping by
default only the rows whose values differ (params, metrics, code, data, environment)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tether.db.connection import Database
from tether.repositories.runs import load_environment
from tether.runs.record import RunRecord

SECTIONS = ("run", "params", "metrics", "code", "inputs", "outputs", "environment", "packages")


@dataclass(frozen=True)
class Row:
    section: str
    key: str
    values: tuple[str | None, ...]  # one per run; None: absent

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


@dataclass(frozen=True)
class Comparison:
    run_ids: tuple[str, ...]
    rows: tuple[Row, ...]

    def differing(self) -> list[Row]:
        return [r for r in self.rows if r.differs]

    def to_json(self, *, everything: bool = False) -> dict[str, Any]:
        """Only the rows that differ, unless ``everything``."""
        rows = self.rows if everything else self.differing()
        return {
            "runs": list(self.run_ids),
            "rows": [{"section": r.section, "key": r.key, "values": list(r.values)} for r in rows],
        }


def _metric(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def compare_runs(db: Database, runs: Sequence[RunRecord]) -> Comparison:
    facts: dict[tuple[str, str], list[str | None]] = {}

    def put(section: str, key: str, i: int, value: str | None) -> None:
        facts.setdefault((section, key), [None] * len(runs))[i] = value

    for i, run in enumerate(runs):
        put("run", "name", i, run.name)
        put("run", "status", i, run.status)
        put("run", "command", i, " ".join(run.command))
        put("run", "seed", i, None if run.seed is None else str(run.seed))
        seeded = run.capture.seeded
        put("run", "seeded by script", i, "yes" if seeded else "no")
        for key, value in run.params.items():
            put("params", key, i, value)
        for key, summary in run.metrics.items():
            put("metrics", key, i, _metric(summary.last))
        for key in ("kind", "commit", "branch", "dirty", "diff_digest", "snapshot_digest"):
            code_value = run.code.to_json().get(key)
            put("code", key, i, None if code_value is None else str(code_value))
        for f in run.files:
            if f.role in ("input", "output"):
                put(f"{f.role}s", f.path, i, f.digest)
        put("environment", "digest", i, run.env_digest)
        env = load_environment(db, run.env_digest)
        if env is not None:
            put("environment", "python", i, env.python.label)
            put("environment", "os", i, env.os.release)
            put("environment", "cpu", i, env.cpu.model)
            gpu = env.gpu
            put("environment", "gpu", i, ", ".join(d.name for d in gpu.devices) if gpu else None)
            for var, value in env.env_vars.items():
                put("environment", f"${var}", i, value)
            for name, version in env.packages.items():
                put("packages", name, i, version)
    order = {s: n for n, s in enumerate(SECTIONS)}
    rows = [
        Row(section, key, tuple(values))
        for (section, key), values in sorted(
            facts.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])
        )
    ]
    return Comparison(tuple(r.id for r in runs), tuple(rows))
