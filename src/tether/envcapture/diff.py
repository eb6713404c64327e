"""What differs between two environments, section by section.

Packages that change numerical results are listed first, so the change most likely to
explain a difference in outputs is read first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from tether.envcapture.environment import Environment

# Distributions whose version most often changes a model's numbers.
ML_CRITICAL = (
    "numpy",
    "scipy",
    "scikit-learn",
    "torch",
    "tensorflow",
    "jax",
    "jaxlib",
    "pandas",
    "xgboost",
    "lightgbm",
    "catboost",
    "transformers",
    "onnxruntime",
    "mkl",
    "openblas",
)


@dataclass(frozen=True)
class Change:
    section: str  # python | packages | conda | lock_files | env_vars | os | cpu | memory | gpu | …
    name: str
    old: str | None  # None: absent in A
    new: str | None  # None: absent in B

    @property
    def kind(self) -> str:
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        return "changed"


@dataclass(frozen=True)
class EnvDiff:
    a: str  # digests
    b: str
    changes: tuple[Change, ...]

    @property
    def same(self) -> bool:
        return not self.changes

    def section(self, name: str) -> list[Change]:
        return [c for c in self.changes if c.section == name]

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "same": self.same,
            "changes": [
                {"section": c.section, "name": c.name, "kind": c.kind, "a": c.old, "b": c.new}
                for c in self.changes
            ],
        }


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        if all(not isinstance(v, Mapping | list) for v in value):
            return {prefix: " ".join(map(str, value))}
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: str(value)}


def _compare(section: str, a: Mapping[str, str], b: Mapping[str, str]) -> list[Change]:
    return [
        Change(section, k, a.get(k), b.get(k))
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def _package_order(change: Change) -> tuple[int, str]:
    try:
        return ML_CRITICAL.index(change.name), change.name
    except ValueError:
        return len(ML_CRITICAL), change.name


def _conda(env: Environment) -> dict[str, str]:
    conda = env.conda
    return {} if conda is None else {n: p.label for n, p in conda.packages.items()}


def diff_environments(a: Environment, b: Environment) -> EnvDiff:
    changes: list[Change] = []
    changes += _compare("python", _flatten(a.section("python")), _flatten(b.section("python")))
    changes += sorted(_compare("packages", a.packages, b.packages), key=_package_order)
    changes += sorted(_compare("conda", _conda(a), _conda(b)), key=_package_order)
    changes += _compare("lock_files", a.lock_files, b.lock_files)
    changes += _compare("env_vars", a.env_vars, b.env_vars)
    for c in _compare("env_vars", a.env_vars_withheld, b.env_vars_withheld):
        # Keyed digests only, the values were never stored: say that it changed.
        new = "(another secret value)" if c.old and c.new else c.new and "(secret value)"
        changes.append(replace(c, old=c.old and "(secret value)", new=new))
    for section in ("os", "cpu", "gpu", "cuda_libraries", "package_sources"):
        changes += _compare(section, _flatten(a.section(section)), _flatten(b.section(section)))
    if a.memory_bytes != b.memory_bytes:
        changes.append(Change("memory", "bytes", str(a.memory_bytes), str(b.memory_bytes)))
    return EnvDiff(a.digest, b.digest, tuple(changes))
