"""``tether doctor [RUN]``: reproducibility hazards of the project, and of a run, each
with its fix.

Project: no lock file or unpinned requirements, not in git, a dirty tree, untracked
source files, tracked data that differs from its pointer, pointers git does not track.
Run: inputs nothing can restore (not versioned, absolute paths outside library caches,
URLs), no seeding call seen by the hook (whatever ``--seed`` says), nothing verifiable (no
output, no metric), a random ``PYTHONHASHSEED``, torch without deterministic
algorithms, pickle-format outputs, source files too big to snapshot, no recorded
environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tether.determinism import GENERATORS
from tether.envcapture.environment import LOCK_FILE_PATTERNS
from tether.hashing import Digest
from tether.repositories.runs import load_environment
from tether.runs.code import git_text, is_source
from tether.runs.record import RunRecord
from tether.workspace import Workspace

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".sav", ".dill")
_PINNED = re.compile(r"^[A-Za-z0-9._\[\],-]+\s*===?\s*[^\s;*]+(\s*;.*)?$")


@dataclass(frozen=True)
class Finding:
    code: str  # stable kebab-case name
    subject: str  # "project" or a run id
    message: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_project(ws: Workspace) -> list[Finding]:
    found: list[Finding] = []

    def add(code: str, message: str, fix: str) -> None:
        found.append(Finding(code, "project", message, fix))

    root = ws.root
    locks = [
        p.name
        for pattern in LOCK_FILE_PATTERNS
        if pattern != "pyproject.toml"
        for p in root.glob(pattern)
        if p.is_file()
    ]
    if not locks:
        add(
            "no-lock-file",
            "no lock file: the package versions a run gets depend on the day it is installed",
            "commit one: 'uv lock', 'uv pip compile pyproject.toml -o requirements.txt' "
            "or 'pip freeze > requirements.txt'",
        )
    for req in sorted(root.glob("requirements*.txt")):
        loose = _unpinned(req)
        if loose:
            add(
                "unpinned-requirements",
                f"{req.name}: {len(loose)} requirement(s) not pinned to one version: "
                + ", ".join(loose[:5]),
                "pin every line with == (uv pip compile writes a fully pinned file)",
            )
    top = git_text(root, "rev-parse", "--show-toplevel")
    if top is None:
        add(
            "not-in-git",
            "the project is not a git repository: code is kept only as snapshots of "
            "small source files",
            "git init && git add -A && git commit",
        )
        return found + _data_status(ws)
    status = git_text(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", ".") or ""
    modified, untracked, pointers = [], [], []
    for entry in status.split("\0"):
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if code == "??":
            if path.endswith(".tether"):
                pointers.append(path)
            elif is_source(path):
                untracked.append(path)
        elif code.strip():
            modified.append(path)
    if modified:
        add(
            "dirty-tree",
            f"{len(modified)} tracked file(s) have uncommitted changes: " + ", ".join(modified[:5]),
            "commit them before a run you will cite (tether records the diff, but a "
            "commit is what colleagues can check out)",
        )
    if untracked:
        add(
            "untracked-source",
            f"{len(untracked)} source file(s) are not in git: " + ", ".join(untracked[:5]),
            "git add them, or list them in .gitignore if they are not part of the project",
        )
    if pointers:
        add(
            "pointer-not-committed",
            f"{len(pointers)} data pointer(s) are not in git: " + ", ".join(pointers[:5]),
            "git add " + " ".join(pointers[:5]) + " && git commit",
        )
    return found + _data_status(ws)


def _unpinned(path: Path) -> list[str]:
    loose = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith(("#", "-", "--")):
            continue
        line = re.sub(r"\s--hash=\S+", "", line).strip()
        if " @ " in line or "://" in line:
            continue  # a direct reference names one artifact
        if not _PINNED.match(line):
            loose.append(re.split(r"[<>=!~;\s\[]", line, maxsplit=1)[0])
    return loose


def _data_status(ws: Workspace) -> list[Finding]:
    from tether.data.status import status

    try:
        report = status(ws)
    except Exception:  # a damaged pointer is fsck's business, not a hazard listing's
        return []
    changed = [e.pointer.path for e in report if e.state in ("modified", "missing")]
    if not changed:
        return []
    return [
        Finding(
            "data-not-added",
            "project",
            f"{len(changed)} tracked data path(s) differ from their pointers: "
            + ", ".join(changed[:5]),
            "tether add " + " ".join(changed[:5]) + " (or tether checkout to restore them)",
        )
    ]


def check_run(ws: Workspace, run: RunRecord) -> list[Finding]:
    found: list[Finding] = []

    def add(code: str, message: str, fix: str) -> None:
        found.append(Finding(code, run.id, message, fix))

    tracked = _git_tracked(ws)
    unversioned, absolute = [], []
    for f in run.files:
        if f.role != "input" or not f.digest:
            continue
        if Path(f.path).is_absolute():
            if not is_library_noise(f.path):
                absolute.append(f.path)
        elif not ws.store.has(Digest.parse(f.digest)) and f.path not in tracked:
            unversioned.append(f.path)
    if unversioned:
        add(
            "unversioned-input",
            f"{len(unversioned)} input(s) read but not versioned (neither in git nor in "
            "the store): " + ", ".join(unversioned[:5]),
            "tether add " + " ".join(unversioned[:5]) + ", or record with --store-inputs",
        )
    if absolute:
        add(
            "absolute-input",
            f"{len(absolute)} input(s) read from absolute paths outside the project: "
            + ", ".join(absolute[:5]),
            "copy the data into the project, 'tether add' it and read it by relative path",
        )
    urls = run.capture.urls
    if urls:
        add(
            "url-input",
            f"the run fetched {len(urls)} URL(s): " + ", ".join(urls[:3]),
            "download once, 'tether add' the file and read it from disk",
        )
    seeded = run.capture.seeded
    watched = run.capture.audit_active
    random_users = sorted(set(run.capture.imports or ()) & set(GENERATORS))
    if not seeded and (watched or run.seed is None):
        # Judged from what the script did: --seed sets only PYTHONHASHSEED and
        # TETHER_SEED, which no numpy, scikit-learn or torch generator reads.
        given = f" (--seed {run.seed} was given, but no generator reads it)" if run.seed else ""
        users = f"; it used {', '.join(random_users)}" if random_users else ""
        add(
            "no-seed",
            f"the script called no seeding function{given}{users}",
            "call tether.seed_everything(N) (or numpy/torch/random seeding, or pass "
            "random_state=N) in the script",
        )
    if not any(f.role in ("output", "artifact") for f in run.files) and not run.metrics:
        add(
            "nothing-verifiable",
            "the run recorded no output and no metric: a reproduction of it can only be UNVERIFIED",
            "declare outputs with 'tether run -o PATH', or log metrics with "
            "tether.start_run().log_metric(...)",
        )
    env = load_environment(ws.db, run.env_digest)
    if env is None:
        add(
            "no-environment",
            "no environment was recorded",
            "run through 'tether run' with a Python command",
        )
    else:
        if "PYTHONHASHSEED" not in env.env_vars:
            add(
                "random-hashseed",
                "PYTHONHASHSEED was random: the order of sets of strings changes per process",
                "tether run --seed N sets it (or export PYTHONHASHSEED=0)",
            )
        report = run.capture.seed_everything or {}
        imports = run.capture.imports
        uses_torch = "torch" in imports if imports is not None else "torch" in env.packages
        if uses_torch and not report.get("deterministic"):
            add(
                "torch-nondeterministic",
                "the run used torch without deterministic algorithms",
                "tether.seed_everything(N, deterministic=True) "
                "(or torch.use_deterministic_algorithms(True))",
            )
    pickles = [f.path for f in run.files if f.role == "output" and _is_pickle(ws, f.path, f.digest)]
    if pickles:
        add(
            "pickle-output",
            f"{len(pickles)} output(s) are pickle-based: loading one runs code: "
            + ", ".join(pickles[:5]),
            "save weights with safetensors (torch), skops (scikit-learn) or ONNX",
        )
    if run.code.not_stored:
        missing = list(run.code.not_stored)
        add(
            "source-not-snapshotted",
            f"{len(missing)} source file(s) were too big or too many to snapshot: "
            + ", ".join(missing[:5]),
            "commit them to git",
        )
    return found


def is_library_noise(path: str) -> bool:
    """Files libraries read for themselves (caches, configuration, system data): not
    data the run depends on. Temp folders are not in the list: data read from there is
    real input that nothing restores."""
    home = os.path.expanduser("~")
    prefixes = [
        os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"),
        os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
        os.path.join(home, ".local", "share"),
        "/etc",
        "/usr/share",
        "/usr/lib",
    ]
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _git_tracked(ws: Workspace) -> set[str]:
    listed = git_text(ws.root, "ls-files", "-z", "--full-name", ".")
    prefix = (git_text(ws.root, "rev-parse", "--show-prefix") or "").strip()
    if listed is None:
        return set()
    return {p[len(prefix) :] for p in listed.split("\0") if p and p.startswith(prefix)}


def _is_pickle(ws: Workspace, path: str, digest: str | None) -> bool:
    if path.lower().endswith(PICKLE_SUFFIXES):
        return True
    if not digest:
        return False
    d = Digest.parse(digest)
    if not ws.store.has(d):
        return False
    try:
        with ws.store.open(d) as f:
            head = f.read(2)
    except OSError:
        return False
    # Pickle protocols 2-5 start with PROTO (0x80) and the protocol number.
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
