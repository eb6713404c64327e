"""``tether explain RUN_A RUN_B``: why two runs' results differ, causes ranked by how
likely each is to change numbers.

Every recorded fact of the two runs is compared: input data (which files, how much:
sizes and rows), code (commits, uncommitted changes, snapshots), parameters, seeds,
packages (numerical libraries first), interpreter, result-changing variables (thread
counts first), hardware. When every recorded fact is equal but results differ, the
cause is not recorded: it is nondeterminism, and the hazards the runs show (no seed,
random ``PYTHONHASHSEED``, GPU kernels, unpinned threads) are named instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.determinism import GENERATORS
from tether.envcapture.diff import ML_CRITICAL, diff_environments
from tether.envcapture.environment import Environment
from tether.errors import TetherError
from tether.hashing import Digest
from tether.repositories.runs import load_environment
from tether.repro.verify import MetricCheck, OutputCheck, compare_metrics, compare_outputs
from tether.runs.code import git_text
from tether.runs.record import RunRecord
from tether.store.objects import ContentStore
from tether.workspace import Workspace

# How likely a kind of difference is to change results (higher first).
WEIGHTS = {
    "output-format": 98,
    "unseeded": 95,
    "data": 100,
    "code": 90,
    "command": 88,
    "params": 85,
    "seed": 80,
    "packages-ml": 70,
    "gpu-libraries": 68,
    "interpreter": 60,
    "threads": 55,
    "randomness": 50,
    "variables": 40,
    "packages": 30,
    "lock-files": 25,
    "hardware": 20,
    "setup": 15,
    "code-meta": 12,
    "os": 10,
}
THREAD_VARS = re.compile(r"^(OMP|MKL|OPENBLAS|NUMEXPR|BLIS)_NUM_THREADS$|^VECLIB_MAXIMUM_THREADS$")
_ROW_COUNT_LIMIT = 256 << 20  # count CSV rows of inputs up to this size


@dataclass(frozen=True)
class Cause:
    category: str
    title: str
    details: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # output-format: the outputs it accounts for

    @property
    def weight(self) -> int:
        return WEIGHTS.get(self.category, 0)


@dataclass(frozen=True)
class Explanation:
    a: RunRecord
    b: RunRecord
    outputs: tuple[OutputCheck, ...]  # only those that differ
    metrics: tuple[MetricCheck, ...]  # only those that differ
    causes: tuple[Cause, ...]  # most likely first
    nondeterminism: bool  # results differ though everything recorded is equal

    @property
    def results_differ(self) -> bool:
        return bool(self.outputs or self.metrics)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a.id,
            "b": self.b.id,
            "results_differ": self.results_differ,
            "nondeterminism": self.nondeterminism,
            "outputs": [o.__dict__ for o in self.outputs],
            "metrics": [
                {"key": m.key, "a": m.expected, "b": m.actual, "status": m.status}
                for m in self.metrics
            ],
            "causes": [
                {
                    "category": c.category,
                    "weight": c.weight,
                    "title": c.title,
                    "details": list(c.details),
                }
                for c in self.causes
            ],
        }


def explain(ws: Workspace, a: RunRecord, b: RunRecord) -> Explanation:
    outputs = tuple(o for o in compare_outputs(a, b, ws.store) if o.status != "identical")
    metrics = tuple(m for m in compare_metrics(a, b, ()) if m.status != "equal")
    causes: list[Cause] = []
    causes += _output_format(ws.store, outputs)
    causes += _data(ws, a, b)
    causes += _code(ws, a, b)
    causes += _command(a, b)
    causes += _params(a, b)
    causes += _seed(a, b)
    env_a = load_environment(ws.db, a.env_digest)
    env_b = load_environment(ws.db, b.env_digest)
    if env_a is not None and env_b is not None:
        causes += _environment(env_a, env_b, _imported(a, b))
    upstream = [c for c in causes if c.category != "output-format"]
    format_only = {p for c in causes if c.category == "output-format" for p in c.paths}
    unexplained = bool(metrics) or any(o.path not in format_only for o in outputs)
    nondeterminism = unexplained and not upstream
    if unexplained:
        # Randomness is a cause only when results really differ (not for identical
        # outputs, nor for outputs that differ only in embedded timestamps).
        causes += _unseeded_generators(a, b, only_named=not nondeterminism)
        hazards = _randomness(a, b, env_a, env_b)
        if nondeterminism:
            causes += hazards or [_unrecorded()]
    causes.sort(key=lambda c: -c.weight)
    return Explanation(a, b, outputs, metrics, tuple(causes), nondeterminism)


# -- data ---------------------------------------------------------------------------------


def _data(ws: Workspace, a: RunRecord, b: RunRecord) -> list[Cause]:
    ins_a = {f.path: f for f in a.files if f.role == "input"}
    ins_b = {f.path: f for f in b.files if f.role == "input"}
    details: list[str] = []
    changed: list[str] = []
    for path in sorted(set(ins_a) | set(ins_b)):
        fa, fb = ins_a.get(path), ins_b.get(path)
        if fa is None:
            assert fb is not None
            details.append(f"{path}: read only by B ({_size(fb.size)})")
            changed.append(path)
        elif fb is None:
            details.append(f"{path}: read only by A ({_size(fa.size)})")
            changed.append(path)
        elif fa.digest != fb.digest:
            how = [f"{_size(fa.size)} -> {_size(fb.size)}"]
            rows_a = _rows(ws, path, fa.digest)
            rows_b = _rows(ws, path, fb.digest)
            if rows_a is not None and rows_b is not None:
                how.append(f"{rows_a} -> {rows_b} rows ({rows_b - rows_a:+d})")
                changed_rows = _rows_changed(ws, fa.digest, fb.digest)
                if changed_rows is not None:
                    how.append(f"{changed_rows} row(s) of A not in B")
            details.append(
                f"{path}: {str(fa.digest)[7:19]} -> {str(fb.digest)[7:19]} ({', '.join(how)})"
            )
            changed.append(path)
    if not changed:
        return []
    title = f"input data changed: {', '.join(changed[:3])}" + (
        f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    )
    return [Cause("data", title, tuple(details))]


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _rows(ws: Workspace, path: str, digest: str | None) -> int | None:
    """Rows of a CSV/TSV (lines after the header) or Parquet input, read from the store
    or from the project when the file there still has that digest."""
    if not digest:
        return None
    d = Digest.parse(digest)
    if ws.store.has(d):
        try:
            with ws.store.file_of(d) as source:
                return _count_rows(source, path.lower())
        except TetherError:  # a damaged blob: no row count, not an error here
            return None
    candidate = ws.root / path
    try:
        from tether.hashing import hash_file

        if candidate.is_file() and hash_file(candidate)[0] == d:
            return _count_rows(candidate, path.lower())
    except OSError:
        return None
    return None


def _count_rows(source: Path, lower: str) -> int | None:
    try:
        if lower.endswith((".csv", ".tsv", ".txt")):
            if source.stat().st_size > _ROW_COUNT_LIMIT:
                return None
            with open(source, "rb") as f:
                data = f.read()
            lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
            return max(0, lines - 1) if lower.endswith((".csv", ".tsv")) else lines
        if lower.endswith(".parquet"):
            import importlib

            pq: Any = importlib.import_module("pyarrow.parquet")
            return int(pq.ParquetFile(source).metadata.num_rows)
    except Exception:  # an unreadable file or no pyarrow: no row count, not an error
        return None
    return None
    return None


def _rows_changed(ws: Workspace, a: str | None, b: str | None) -> int | None:
    """Lines of A's file that B lacks (as a multiset), for text inputs in the store."""
    from collections import Counter

    if not a or not b:
        return None
    da, db = Digest.parse(a), Digest.parse(b)
    if not (ws.store.has(da) and ws.store.has(db)):
        return None
    if ws.store.size(da) > _ROW_COUNT_LIMIT // 4 or ws.store.size(db) > _ROW_COUNT_LIMIT // 4:
        return None
    lines_a = Counter(ws.store.read_bytes(da, max_size=_ROW_COUNT_LIMIT).splitlines())
    lines_b = Counter(ws.store.read_bytes(db, max_size=_ROW_COUNT_LIMIT).splitlines())
    return sum((lines_a - lines_b).values())


# -- code ---------------------------------------------------------------------------------


def _code(ws: Workspace, a: RunRecord, b: RunRecord) -> list[Cause]:
    ca, cb = a.code, b.code
    details: list[str] = []
    if ca.commit != cb.commit:
        stat = None
        if ca.commit and cb.commit:
            # Pointer files are data, reported (by content) with the inputs.
            stat = git_text(ws.root, "diff", "--stat=100", ca.commit, cb.commit,
                            "--", ".", ":(exclude)*.tether")  # fmt: skip
        if stat is None or stat.strip():
            details.append(f"commit {str(ca.commit)[:12]} -> {str(cb.commit)[:12]}")
            details += [ln.strip() for ln in (stat or "").strip().splitlines()]
    if ca.diff_digest != cb.diff_digest:
        patches_a = _patches(ws.store, ca.diff_digest)
        patches_b = _patches(ws.store, cb.diff_digest)
        for path in sorted(set(patches_a) | set(patches_b)):
            if patches_a.get(path) != patches_b.get(path):
                plus, minus = _count(patches_b.get(path, "")), _count(patches_a.get(path, ""))
                details.append(
                    f"{path}: uncommitted changes differ (A: +{minus[0]} -{minus[1]}, "
                    f"B: +{plus[0]} -{plus[1]} lines against the commit)"
                )
    if ca.snapshot_digest != cb.snapshot_digest:
        files_a = _snapshot(ws.store, ca.snapshot_digest)
        files_b = _snapshot(ws.store, cb.snapshot_digest)
        for path in sorted(set(files_a) | set(files_b)):
            if files_a.get(path) != files_b.get(path):
                what = (
                    "added"
                    if path not in files_a
                    else ("removed" if path not in files_b else "modified")
                )
                details.append(f"{path}: {what}")
    if not details:
        return []
    files = {f.path for r in (a, b) for f in r.files}
    changed: list[str] = []
    for line in details:
        name = _line_path(line)
        if name is not None and name not in changed:
            changed.append(name)
    # A file a run read or wrote is data or a result (a committed CSV, an earlier run's
    # metrics.json), reported with the inputs; it is not code.
    code_files = [n for n in changed if not _is_run_file(n, files)]
    if changed and not code_files:
        return []
    details = [d for d in details if (n := _line_path(d)) is None or not _is_run_file(n, files)]
    changed = code_files
    title = "code changed" + (f": {', '.join(changed[:4])}" if changed else "")
    if len(changed) > 4:
        title += f" and {len(changed) - 4} more"
    if changed and all(_is_metadata(name) for name in changed):
        # Packaging and documentation do not run; they rarely change a number.
        return [Cause("code-meta", "only packaging or documentation files changed: "
                      + ", ".join(changed[:4]), tuple(details))]  # fmt: skip
    return [Cause("code", title, tuple(details))]


def _line_path(line: str) -> str | None:
    """The file a detail line is about ('path | 3 ++-' or 'path: modified'), if any."""
    if " | " in line:
        return line.split(" | ")[0].strip()
    return line.split(": ")[0] if ": " in line else None


def _is_run_file(name: str, files: set[str]) -> bool:
    """``name`` (relative to the repository or the project) is one of the runs' files."""
    return any(name == p or name.endswith("/" + p) or p.endswith("/" + name) for p in files)


_METADATA_NAMES = {"Kitfile", ".gitignore", ".kitignore", "LICENSE", "CHANGELOG"}


def _is_metadata(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name in _METADATA_NAMES or name.lower().endswith((".md", ".rst"))


def _patches(store: ContentStore, digest: str | None) -> dict[str, str]:
    if not digest:
        return {}
    try:
        text = store.read_bytes(Digest.parse(digest), max_size=64 << 20).decode(errors="replace")
    except Exception:
        return {}
    out: dict[str, str] = {}
    for chunk in re.split(r"(?m)^(?=diff --git )", text):
        m = re.match(r"diff --git a/(\S+) b/(\S+)", chunk)
        if m:
            out[m.group(2)] = chunk
    return out


def _count(patch: str) -> tuple[int, int]:
    plus = sum(1 for ln in patch.splitlines() if ln.startswith("+") and not ln.startswith("+++"))
    minus = sum(1 for ln in patch.splitlines() if ln.startswith("-") and not ln.startswith("---"))
    return plus, minus


def _snapshot(store: ContentStore, digest: str | None) -> dict[str, str]:
    if not digest:
        return {}
    from tether.repro.materialize import snapshot_files

    try:
        return snapshot_files(store, digest)
    except Exception:
        return {}


# -- params, seed, environment ------------------------------------------------------------


def _command(a: RunRecord, b: RunRecord) -> list[Cause]:
    import shlex

    details = []
    # The interpreter's path differs between venvs and machines; its packages are
    # compared with the environment.
    from tether.repro.plan import PYTHON_NAMES

    def args(run: RunRecord) -> list[str]:
        first = run.command[0].rsplit("/", 1)[-1] if run.command else ""
        return list(run.command[1:] if first.startswith(PYTHON_NAMES) else run.command)

    args_a, args_b = args(a), args(b)
    if args_a != args_b:
        details.append(f"A: {shlex.join(args_a)}")
        details.append(f"B: {shlex.join(args_b)}")
    if a.cwd != b.cwd:
        details.append(f"working folder: {a.cwd} -> {b.cwd}")
    if not details:
        return []
    return [Cause("command", "the command's arguments differ", tuple(details))]


def _params(a: RunRecord, b: RunRecord) -> list[Cause]:
    keys = sorted(k for k in set(a.params) | set(b.params) if a.params.get(k) != b.params.get(k))
    if not keys:
        return []
    details = tuple(f"{k}: {a.params.get(k, '-')} -> {b.params.get(k, '-')}" for k in keys)
    return [Cause("params", f"parameters differ: {', '.join(keys[:4])}", details)]


def _seeding(run: RunRecord) -> list[str]:
    calls = [f"{s.call}({s.seed})" for s in run.capture.seeding]
    everything = run.capture.seed_everything
    if everything:
        calls.append(f"seed_everything({everything.get('seed')})")
    return calls


def _seed(a: RunRecord, b: RunRecord) -> list[Cause]:
    causes = []
    if a.seed != b.seed:
        causes.append(Cause("seed", f"seed differs: {a.seed} -> {b.seed}"))
    sa, sb = _seeding(a), _seeding(b)
    if sa != sb:
        causes.append(
            Cause(
                "seed",
                "the scripts seeded differently",
                (
                    f"A: {', '.join(sa) or 'no seeding call'}",
                    f"B: {', '.join(sb) or 'no seeding call'}",
                ),
            )
        )
    return causes


_MODULE_OF = {"scikit-learn": "sklearn", "jaxlib": "jax", "mkl": "numpy", "openblas": "numpy"}


def _imported(a: RunRecord, b: RunRecord) -> set[str] | None:
    """Frameworks either run imported, when both runs recorded their imports."""
    lists = [r.capture.imports for r in (a, b)]
    if any(x is None for x in lists):
        return None
    return {m for x in lists for m in x or ()}


def _numerical(package: str, imported: set[str] | None) -> bool:
    if package.startswith("nvidia-"):
        return imported is None or "torch" in imported or "jax" in imported
    if package not in ML_CRITICAL:
        return False
    return imported is None or _MODULE_OF.get(package, package) in imported


# Conda packages below Python that change numbers: BLAS/LAPACK builds, OpenMP, CUDA.
_CONDA_NUMERICAL = re.compile(
    r"^(mkl|mkl-.*|intel-openmp|llvm-openmp|libgomp|_openmp_mutex|(lib)?openblas|libblas|"
    r"libcblas|liblapack|blas|cudatoolkit|cuda-.*|cudnn|nccl|libcublas|libcurand)$"
)


def _numerical_conda(name: str) -> bool:
    return name in ML_CRITICAL or _CONDA_NUMERICAL.match(name) is not None


def _environment(
    env_a: Environment, env_b: Environment, imported: set[str] | None = None
) -> list[Cause]:
    d = diff_environments(env_a, env_b)
    if d.same:
        return []
    causes: list[Cause] = []
    groups: dict[str, list[str]] = {}
    for c in d.changes:
        line = f"{c.name}: {c.old or '(none)'} -> {c.new or '(none)'}"
        if c.section == "packages":
            key = (
                "packages-ml"
                if c.name in ML_CRITICAL or c.name.startswith("nvidia-")
                else ("packages")
            )
        elif c.section == "conda":
            line = "conda " + line
            key = "packages-ml" if _numerical_conda(c.name) else "packages"
        elif c.section == "python":
            key = "setup" if c.name == "virtualenv" else "interpreter"
        elif c.section == "env_vars":
            key = "threads" if THREAD_VARS.match(c.name) else "variables"
            if c.name in ("PYTHONHASHSEED", "TETHER_SEED"):
                continue  # reported with the seed
        elif c.section in ("cuda_libraries", "gpu"):
            key = "gpu-libraries"
        elif c.section == "lock_files":
            key = "lock-files"
        elif c.section in ("cpu", "memory"):
            if c.name == "flags":
                line = f"CPU flags differ ({len((c.old or '').split())} -> "
                line += f"{len((c.new or '').split())})"
            key = "hardware"
        elif c.section == "os":
            key = "os"
        else:
            key = "packages"
        groups.setdefault(key, []).append(line)
    titles = {
        "packages-ml": "numerical packages differ",
        "packages": "other packages differ",
        "interpreter": "the Python interpreter differs",
        "threads": "thread settings differ",
        "variables": "result-changing variables differ",
        "gpu-libraries": "GPU, CUDA or cuDNN differ",
        "lock-files": "lock files differ",
        "hardware": "hardware differs",
        "os": "the operating system differs",
        "setup": "the interpreter's setup differs",
    }
    for key, lines in groups.items():
        names = ", ".join(ln.split(":")[0] for ln in lines[:4])
        causes.append(Cause(key, f"{titles[key]}: {names}", tuple(lines)))
    return causes


# -- nondeterminism -----------------------------------------------------------------------


def _unseeded(run: RunRecord) -> bool:
    """The script seeded nothing the hook could see. ``--seed`` alone does not count:
    it sets PYTHONHASHSEED and TETHER_SEED, which no numpy, scikit-learn or torch
    generator reads."""
    if _seeding(run):
        return False
    return run.capture.audit_active or run.seed is None


def _unseeded_generators(a: RunRecord, b: RunRecord, *, only_named: bool) -> list[Cause]:
    """Generators the runs used without seeding them. Beside another cause, only when a
    framework with a generator was imported (a script that imports none may not draw
    random numbers at all)."""
    unseeded = [r for r in (a, b) if _unseeded(r)]
    if not unseeded:
        return []
    imported = {name for r in unseeded for name in r.capture.imports or ()}
    used = sorted(imported & set(GENERATORS))
    if only_named and not used:
        return []
    which = [GENERATORS[name] for name in used] or ["Python's random module or another library"]
    given = [r for r in unseeded if r.seed is not None]
    details = [f"unseeded: {w}" for w in which]
    if given:
        details.append(
            f"--seed {given[0].seed} was given, but it only sets PYTHONHASHSEED and "
            "TETHER_SEED; no generator reads them unless the script does"
        )
    details.append("fix: tether.seed_everything(N) at the top of the script")
    title = "random generators used without a seed the run could see" + (
        f": {', '.join(used)}" if used else ""
    )
    return [Cause("unseeded", title, tuple(details))]


def _unrecorded() -> Cause:
    return Cause(
        "randomness",
        "nondeterminism that tether did not record",
        (
            "every recorded fact is equal, yet results differ: look for time, network, "
            "file-listing order, or parallel work the script does itself",
        ),
    )


def _randomness(
    a: RunRecord, b: RunRecord, env_a: Environment | None, env_b: Environment | None
) -> list[Cause]:
    hints: list[str] = []
    envs = [e for e in (env_a, env_b) if e is not None]
    if envs and any("PYTHONHASHSEED" not in e.env_vars for e in envs):
        hints.append(
            "PYTHONHASHSEED was random: iteration over sets of strings changes between "
            "processes (fix: tether run --seed N sets it)"
        )
    if any(e.gpu for e in envs) and not any(
        (r.capture.seed_everything or {}).get("deterministic") for r in (a, b)
    ):
        hints.append(
            "GPU kernels may be nondeterministic (atomics in reductions, cuDNN autotuning) "
            "(fix: tether.seed_everything(N, deterministic=True))"
        )
    if any(_threads_unpinned(e) for e in envs):
        hints.append(
            "thread counts were not pinned: parallel sums may add in a different order "
            "(fix: set OMP_NUM_THREADS / MKL_NUM_THREADS)"
        )
    if not hints:
        return []
    return [Cause("randomness", "nondeterminism the runs were exposed to", tuple(hints))]


def _threads_unpinned(env: Environment) -> bool:
    pinned = any(THREAD_VARS.match(k) for k in env.env_vars)
    return not pinned and env.cpu.count > 1


def _output_format(store: ContentStore, outputs: tuple[OutputCheck, ...]) -> list[Cause]:
    """Outputs that differ only in metadata their format embeds (PDF dates, PNG time
    chunks, zip member times as in ``.npz`` and ``.pt``): their contents are the same,
    so they explain nothing upstream."""
    same = [o for o in outputs if o.status == "same-content"]
    if not same:
        return []
    return [
        Cause(
            "output-format",
            f"{', '.join(o.path for o in same)}: only embedded timestamps differ; "
            "the content is identical",
            (
                *(f"{o.path}: {o.note}" for o in same),
                "writers stamp the time of writing; tether run sets SOURCE_DATE_EPOCH, "
                "which matplotlib and archivers honour, so a run and its reproduction "
                "embed the same date",
            ),
            tuple(o.path for o in same),
        )
    ]
