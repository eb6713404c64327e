"""Turn what a run touched into recorded files: the audit log written by the child's
``sitecustomize``, paths declared with ``-o``, and the Kitfile's datasets.

Rules: a file the run wrote (or renamed into place) is an output; a file it only read is
an input. Outputs inside the project are stored as blobs; everything gets a digest.
Paths inside the project are recorded relative to its root, others absolute. Files
that vanished before the run ended (temp files) are left out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tether.hashing import hash_file
from tether.runs.record import RunFile
from tether.store.objects import ContentStore

HOOK_DIR = Path(__file__).parent / "hook"


@dataclass(frozen=True)
class Process:
    pid: int
    executable: str
    cwd: str


@dataclass
class AuditLog:
    processes: list[Process] = field(default_factory=list)
    reads: dict[str, None] = field(default_factory=dict)  # ordered sets
    writes: dict[str, None] = field(default_factory=dict)
    seeds: list[tuple[str, str]] = field(default_factory=list)
    urls: dict[str, None] = field(default_factory=dict)
    imports: dict[str, None] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.processes)


def parse_audit_log(path: Path) -> AuditLog:
    """Read the records of every process of the run (see ``hook/sitecustomize.py``)."""
    log = AuditLog()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return log
    for record in data.split(b"\0\n"):
        fields = [os.fsdecode(f) for f in record.split(b"\0")]
        kind = fields[0]
        if kind == "P" and len(fields) == 4 and fields[1].isdigit():
            log.processes.append(Process(int(fields[1]), fields[2], fields[3]))
        elif kind == "R" and len(fields) == 2:
            log.reads[fields[1]] = None
        elif kind == "W" and len(fields) == 2:
            log.writes[fields[1]] = None
        elif kind == "M" and len(fields) == 3:
            # write-to-temp-then-rename: the final name is the output
            log.writes.pop(fields[1], None)
            log.reads.pop(fields[1], None)
            log.writes[fields[2]] = None
        elif kind == "S" and len(fields) == 3:
            log.seeds.append((fields[1], fields[2]))
        elif kind == "U" and len(fields) == 2:
            log.urls[fields[1]] = None
        elif kind == "I" and len(fields) == 2:
            log.imports[fields[1]] = None
    return log


def relative_to_project(path: str | Path, project_root: Path) -> str:
    p = Path(os.path.abspath(path))
    try:
        return p.relative_to(project_root).as_posix()
    except ValueError:
        return str(p)


def expand(path: Path) -> list[Path]:
    """A file, or the regular files under a directory (sorted; links are not followed)."""
    if path.is_symlink():
        return []
    if path.is_file():
        return [path]
    if path.is_dir():
        found = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath, name)
                if p.is_file() and not p.is_symlink():
                    found.append(p)
        return found
    return []


def hash_many(paths: Sequence[Path]) -> dict[Path, tuple[str, int]]:
    """Digests of many files on every core (hashlib releases the GIL); files that
    vanished are left out."""

    def one(p: Path) -> tuple[Path, tuple[str, int] | None]:
        try:
            digest, size = hash_file(p)
        except OSError:
            return p, None
        return p, (str(digest), size)

    if len(paths) < 4:
        results = [one(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
            results = list(pool.map(one, paths))
    return {p: r for p, r in results if r is not None}


@dataclass(frozen=True)
class FileSets:
    """Candidate files, each (absolute path, source)."""

    inputs: list[tuple[Path, str]]
    outputs: list[tuple[Path, str]]


def classify(
    audit: AuditLog,
    *,
    declared_outputs: Iterable[Path] = (),
    declared_inputs: Iterable[tuple[Path, str]] = (),
    exclude: Iterable[Path] = (),
) -> FileSets:
    excluded = tuple(str(p) + os.sep for p in exclude)

    def keep(p: Path) -> bool:
        s = str(p)
        return not s.startswith(excluded) and p.is_file() and not p.is_symlink()

    outputs: dict[Path, str] = {}
    for raw in declared_outputs:
        for p in expand(Path(os.path.abspath(raw))):
            outputs.setdefault(p, "declared")
    for written in audit.writes:
        p = Path(written)
        if keep(p):
            outputs.setdefault(p, "audit")
    inputs: dict[Path, str] = {}
    for read in audit.reads:
        p = Path(read)
        if p not in outputs and keep(p):
            inputs.setdefault(p, "audit")
    for raw, source in declared_inputs:
        for p in expand(Path(os.path.abspath(raw))):
            if p not in outputs and keep(p):
                inputs.setdefault(p, source)
    return FileSets(
        inputs=sorted(inputs.items()),
        outputs=sorted(outputs.items()),
    )


def record_files(
    store: ContentStore,
    project_root: Path,
    sets: FileSets,
    *,
    store_inputs: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> list[RunFile]:
    """Hash every candidate; store outputs inside the project (and inputs when asked)."""
    records: list[RunFile] = []
    digests = hash_many([p for p, _ in sets.inputs])
    for p, source in sets.inputs:
        if p not in digests:
            continue
        digest, size = digests[p]
        stored = False
        if store_inputs:
            digest, stored = str(store.add_file(p)[0]), True
        records.append(
            RunFile("input", relative_to_project(p, project_root), digest, size, source, stored)
        )
    for p, source in sets.outputs:
        inside = not Path(relative_to_project(p, project_root)).is_absolute()
        try:
            if inside or source == "declared":
                if on_progress:
                    on_progress(f"storing {relative_to_project(p, project_root)}")
                d, size = store.add_file(p)
                records.append(
                    RunFile(
                        "output", relative_to_project(p, project_root), str(d), size, source, True
                    )
                )
            else:
                found, size = hash_file(p)
                records.append(RunFile("output", str(p), str(found), size, source, False))
        except OSError:
            continue  # vanished while we looked
    return records
