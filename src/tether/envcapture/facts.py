"""Typed views of the sections of an environment record.

The record itself stays the canonical JSON its digest is taken of (old records, and
fields added later, must keep their digest); these values are what code reads. Each is
built from its section once, tolerating missing keys, because a record written by an
older release lacks the newer ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _str(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key)
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Interpreter:
    implementation: str  # "cpython", "pypy"
    version: str
    virtualenv: bool

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> Interpreter:
        return cls(
            _str(section, "implementation"),
            _str(section, "version"),
            bool(section.get("virtualenv")),
        )

    @property
    def label(self) -> str:
        return f"{self.implementation} {self.version}".strip()


@dataclass(frozen=True)
class OsFacts:
    system: str
    release: str
    machine: str
    distro: str
    libc: str

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> OsFacts:
        return cls(*(_str(section, k) for k in ("system", "release", "machine", "distro", "libc")))

    @property
    def label(self) -> str:
        return " ".join(p for p in (self.distro or self.system, self.release, self.machine) if p)


@dataclass(frozen=True)
class CpuFacts:
    model: str
    count: int
    flags: tuple[str, ...]

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> CpuFacts:
        return cls(
            _str(section, "model"),
            int(section.get("count") or 0),
            tuple(str(f) for f in section.get("flags", ())),
        )


@dataclass(frozen=True)
class GpuDevice:
    name: str
    driver: str
    memory_mib: str


@dataclass(frozen=True)
class GpuFacts:
    devices: tuple[GpuDevice, ...]
    cuda_driver_api: str | None

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> GpuFacts | None:
        devices = tuple(
            GpuDevice(_str(d, "name"), _str(d, "driver"), _str(d, "memory_mib"))
            for d in section.get("devices", ())
        )
        if not devices:
            return None
        api = section.get("cuda_driver_api")
        return cls(devices, None if api is None else str(api))


@dataclass(frozen=True)
class PackageSource:
    """Where a distribution was installed from, when not from an index."""

    editable: bool
    vcs: str | None
    commit: str | None

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> PackageSource:
        vcs, commit = section.get("vcs"), section.get("commit")
        return cls(
            bool(section.get("editable")),
            None if vcs is None else str(vcs),
            None if commit is None else str(commit),
        )


@dataclass(frozen=True)
class CondaPackage:
    version: str
    build: str
    channel: str

    @property
    def label(self) -> str:
        where = f" ({self.channel})" if self.channel else ""
        return f"{self.version}={self.build}{where}" if self.build else self.version + where


@dataclass(frozen=True)
class CondaFacts:
    """A conda environment's packages (Python or not: MKL, OpenBLAS, CUDA toolkits)."""

    channels: tuple[str, ...]
    packages: Mapping[str, CondaPackage]
    explicit: tuple[str, ...]  # package URLs (#md5): 'conda create --file' rebuilds them

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> CondaFacts | None:
        if not section:
            return None
        packages = {
            str(name): CondaPackage(_str(p, "version"), _str(p, "build"), _str(p, "channel"))
            for name, p in (section.get("packages") or {}).items()
            if isinstance(p, Mapping)
        }
        return cls(
            tuple(str(c) for c in section.get("channels") or ()),
            packages,
            tuple(str(u) for u in section.get("explicit") or ()),
        )
