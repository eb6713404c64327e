"""Turn what a run touched into recorded files: the audit log written by the child's
``sitecustomize``, paths declared with ``-o``, and the Kitfile's datasets.

Rules: a file the run wrote (or renamed into place) is an output; a file it only read is
an input. Outputs inside the project are stored as blobs; everything gets a digest.
Paths inside the project are recorded relative to its root, others absolute. Files
that vanished before the run ended (temp files) are left out.

Writes the audit hook cannot see (C++ writers such as ``torch.save`` to a file object,
HDF5, native libraries) are found by one walk of the project after the run: a file whose
change time is after the run started is an output (source ``scan``). Writes outside the
project that nobody declared (library and font caches, temp files) are *side effects*:
recorded and shown, not results to verify. Interpreter caches (``__pycache__``, ``.pyc``)
are never either. Model savers the hook wraps (``torch.save``, ``torch.jit.save``,
``h5py.File`` for writing, ``tf.saved_model.save``) name their target: an output
wherever it is (source ``hook``).
"""

from __future__ import annotations

import os
import stat as statmod
import time
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
    saves: dict[str, None] = field(default_factory=dict)  # model savers' targets
    params: dict[str, tuple[str, str]] = field(default_factory=dict)  # key → (value, source)

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
        elif kind == "O" and len(fields) == 2:
            log.saves[fields[1]] = None
        elif kind == "A" and len(fields) == 4:
            log.params[fields[2]] = (fields[3], fields[1])  # a later parse wins
    return log


# Folders a scan never enters: version control, tether's own, environments, caches.
SCAN_PRUNE = frozenset(
    {
        ".git", ".hg", ".svn", ".tether", "__pycache__", "node_modules", ".venv", "venv",
        ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
    }
)  # fmt: skip
_INTERPRETER_CACHE = (".pyc", ".pyo")


def is_interpreter_cache(path: str) -> bool:
    """Bytecode the import system writes on first import: never a result."""
    return path.endswith(_INTERPRETER_CACHE) or f"{os.sep}__pycache__{os.sep}" in path


def scan_start() -> int:
    """The time to compare change times with: the kernel stamps files from its coarse
    clock, so the coarse clock read before the run starts is never later than a stamp
    the run causes."""
    clock = getattr(time, "CLOCK_REALTIME_COARSE", time.CLOCK_REALTIME)
    return time.clock_gettime_ns(clock)


def changed_since(root: Path, since_ns: int) -> list[Path]:
    """Regular files under ``root`` created or changed at or after ``since_ns``; one walk,
    stat only (no hashing)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d
            for d in dirnames
            if d not in SCAN_PRUNE and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
        ]
        for name in filenames:
            if name.endswith(_INTERPRETER_CACHE):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if statmod.S_ISREG(st.st_mode) and max(st.st_mtime_ns, st.st_ctime_ns) >= since_ns:
                found.append(Path(path))
    return found


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
    side_effects: list[tuple[Path, str]] = field(default_factory=list)


def classify(
    audit: AuditLog,
    *,
    declared_outputs: Iterable[Path] = (),
    declared_inputs: Iterable[tuple[Path, str]] = (),
    exclude: Iterable[Path] = (),
    project_root: Path | None = None,
    scanned: Iterable[Path] = (),
) -> FileSets:
    excluded = tuple(str(p) + os.sep for p in exclude)
    inside = str(project_root) + os.sep if project_root is not None else None

    def keep(p: Path) -> bool:
        s = str(p)
        return (
            not s.startswith(excluded)
            and not is_interpreter_cache(s)
            and p.is_file()
            and not p.is_symlink()
        )

    outputs: dict[Path, str] = {}
    side_effects: dict[Path, str] = {}
    for raw in declared_outputs:
        for p in expand(Path(os.path.abspath(raw))):
            outputs.setdefault(p, "declared")
    for saved in audit.saves:
        for p in expand(Path(saved)):
            if keep(p):
                outputs.setdefault(p, "hook")
    for written in audit.writes:
        p = Path(written)
        if keep(p) and p not in outputs:
            if inside is None or str(p).startswith(inside):
                outputs[p] = "audit"
            else:
                side_effects.setdefault(p, "audit")
    for p in scanned:
        if keep(p):
            outputs.setdefault(p, "scan")
    inputs: dict[Path, str] = {}
    for read in audit.reads:
        p = Path(read)
        if p not in outputs and p not in side_effects and keep(p):
            inputs.setdefault(p, "audit")
    for raw, source in declared_inputs:
        for p in expand(Path(os.path.abspath(raw))):
            if p not in outputs and keep(p):
                inputs.setdefault(p, source)
    return FileSets(
        inputs=sorted(inputs.items()),
        outputs=sorted(outputs.items()),
        side_effects=sorted(side_effects.items()),
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
    effects = hash_many([p for p, _ in sets.side_effects])
    for p, source in sets.side_effects:
        if p in effects:
            digest, size = effects[p]
            records.append(RunFile("side-effect", str(p), digest, size, source, False))
    return records
