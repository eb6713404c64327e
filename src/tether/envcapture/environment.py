"""The environment a run ran in: interpreter, packages, lock files, OS, hardware and the
environment variables that change results; identified by the digest of its canonical
JSON, so runs in the same environment share one record.

Two halves: what only the run's interpreter knows (``probe.py``, executed *in* that
interpreter) and what the host knows (read here from ``/proc``, ``platform`` and, when
present, ``nvidia-smi``). GPU probing is lazy and never required.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from tether.envcapture.facts import (
    CondaFacts,
    CpuFacts,
    GpuFacts,
    Interpreter,
    OsFacts,
    PackageSource,
)
from tether.errors import TetherError
from tether.hashing import Digest, hash_file
from tether.redaction import Withholder, split_env

FORMAT = 1

# Variables that change numerical results or their determinism. Exact names, then
# prefixes; names that look like secrets are withheld even when a prefix matches.
ENV_VAR_NAMES = frozenset(
    {
        "PYTHONHASHSEED",
        "TETHER_SEED",
        "CUBLAS_WORKSPACE_CONFIG",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_LAUNCH_BLOCKING",
        "NVIDIA_TF32_OVERRIDE",
        "TF_DETERMINISTIC_OPS",
        "TF_CUDNN_DETERMINISTIC",
        "TF_ENABLE_ONEDNN_OPTS",
        "XLA_FLAGS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "OPENBLAS_CORETYPE",
        "BLIS_NUM_THREADS",
        "TZ",
        "LC_ALL",
    }
)
ENV_VAR_PREFIXES = ("OMP_", "KMP_", "MKL_", "CUDNN_", "NCCL_ALGO", "JAX_", "PYTORCH_", "TORCH_")

LOCK_FILE_PATTERNS = (
    "uv.lock",
    "poetry.lock",
    "pdm.lock",
    "Pipfile.lock",
    "requirements*.txt",
    "constraints*.txt",
    "environment.yml",
    "environment.yaml",
    "conda-lock.yml",
    "pyproject.toml",
)

PROBE_TIMEOUT = 120.0


class EnvironmentCaptureError(TetherError):
    code = "env-capture"


@dataclass(frozen=True)
class LockFile:
    path: str  # relative to the project root
    digest: str
    size: int


@dataclass(frozen=True)
class Environment:
    """Captured facts; ``body`` is the canonical JSON the digest is taken of.
    ``modules`` (top-level module -> distributions) comes with a fresh capture only: it
    turns a run's imports into the distributions it used, and is not part of the record."""

    body: Mapping[str, Any]
    modules: Mapping[str, Sequence[str]] = field(default_factory=dict, compare=False)

    def distributions_of(self, imports: Iterable[str]) -> list[str]:
        """The installed distributions that provide ``imports`` (top-level names)."""
        return sorted({d for m in imports for d in self.modules.get(m, ()) if d in self.packages})

    @cached_property
    def canonical(self) -> str:
        # Cached: the body of a whole interpreter's packages takes a while to serialize,
        # and a sweep asks for it on every run.
        return json.dumps(self.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @cached_property
    def digest(self) -> str:
        return str(Digest.of_bytes(self.canonical.encode()))

    @classmethod
    def from_json(cls, text: str) -> Environment:
        return cls(json.loads(text))

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, **self.body}

    def section(self, name: str) -> Mapping[str, Any]:
        """One section of the record as recorded (what a generic diff compares)."""
        value = self.body.get(name)
        return value if isinstance(value, Mapping) else {}

    @cached_property
    def python(self) -> Interpreter:
        return Interpreter.from_section(self.section("python"))

    @cached_property
    def os(self) -> OsFacts:
        return OsFacts.from_section(self.section("os"))

    @cached_property
    def cpu(self) -> CpuFacts:
        return CpuFacts.from_section(self.section("cpu"))

    @cached_property
    def gpu(self) -> GpuFacts | None:
        return GpuFacts.from_section(self.section("gpu"))

    @property
    def memory_bytes(self) -> int:
        return int(self.body.get("memory_bytes") or 0)

    @property
    def packages(self) -> Mapping[str, str]:
        return self.section("packages")

    @cached_property
    def package_sources(self) -> Mapping[str, PackageSource]:
        return {
            name: PackageSource.from_section(source)
            for name, source in self.section("package_sources").items()
        }

    @property
    def cuda_libraries(self) -> Mapping[str, str]:
        return self.section("cuda_libraries")

    @property
    def env_vars(self) -> Mapping[str, str]:
        return self.section("env_vars")

    @property
    def env_vars_withheld(self) -> Mapping[str, str]:
        """Variables whose values were withheld as secrets: name -> keyed digest."""
        return self.section("env_vars_withheld")

    @property
    def lock_files(self) -> Mapping[str, str]:
        return self.section("lock_files")

    @cached_property
    def conda(self) -> CondaFacts | None:
        return CondaFacts.from_section(self.section("conda"))


def _selected(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in ENV_VAR_NAMES or k.startswith(ENV_VAR_PREFIXES)}


def relevant_env_vars(env: Mapping[str, str]) -> dict[str, str]:
    """The result-changing variables as recorded: secret-named ones left out, credentials
    inside values masked (see ``redaction.py``)."""
    return split_env(_selected(env), None).kept


_PROBE_FORMAT = "3"  # what probe.py reports; a cached answer of another format is not used
# Variables that change what an interpreter finds on its path, and so its packages.
_PATH_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONUSERBASE")


def probe_interpreter(
    executable: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``probe.py`` in ``executable`` and return what it printed.

    With ``cache_dir``, an earlier answer is reused while nothing it depends on changed:
    the same interpreter file (path and mtime), working folder and path variables, and
    every folder on its ``sys.path`` (and a conda prefix's ``conda-meta``) with the mtime
    it had (installing or removing a package changes its folder's). That saves starting
    the interpreter (0.1-0.3 s) on every run of an unchanged environment."""
    if cache_dir is None:
        return _probe(executable, env, cwd)
    key = _probe_key(executable, env, cwd)
    cached = cache_dir / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        doc = json.loads(cached.read_bytes())
        if all(_mtime(p) == m for p, m in doc["paths"].items()):
            result: dict[str, Any] = doc["probe"]
            return result
    result = _probe(executable, env, cwd)
    with contextlib.suppress(OSError):  # a disposable cache never fails a run
        cache_dir.mkdir(parents=True, exist_ok=True)
        watched = list(result.get("path", []))
        if result.get("conda"):  # conda installs of non-Python packages touch only this
            watched.append(os.path.join(str(result.get("prefix", "")), "conda-meta"))
        paths = {p: _mtime(p) for p in watched}
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"paths": paths, "probe": result}))
        os.replace(tmp, cached)
    return result


def _probe_key(executable: str, env: Mapping[str, str] | None, cwd: str | Path | None) -> str:
    env = os.environ if env is None else env
    try:
        real = os.path.realpath(executable)
        stamp = os.stat(real).st_mtime_ns
    except OSError:
        real, stamp = executable, 0
    # The venv's own path matters too: two venvs share one real interpreter binary.
    parts = [_PROBE_FORMAT, executable, shutil.which(executable) or "", real, str(stamp)]
    parts += [str(Path(cwd or os.getcwd()).resolve())] + [env.get(v, "") for v in _PATH_VARS]
    return Digest.of_bytes("\0".join(parts).encode()).hex[:32]


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _probe(
    executable: str, env: Mapping[str, str] | None, cwd: str | Path | None
) -> dict[str, Any]:
    source = (Path(__file__).parent / "probe.py").read_text(encoding="utf-8")
    try:
        proc = subprocess.run(
            [executable, "-c", source],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentCaptureError(
            f"cannot run {executable} to list its packages: {exc}",
            hint="check that the interpreter exists and starts",
        ) from None
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise EnvironmentCaptureError(
            f"{executable} failed to report its packages: {tail[0][:200]}",
            hint="check that the interpreter is Python 3.8 or newer",
        )
    try:
        result: dict[str, Any] = json.loads(proc.stdout.decode())
    except ValueError:
        raise EnvironmentCaptureError(
            f"{executable} printed something other than the package report",
            hint="a sitecustomize or .pth file may print at start-up; check PYTHONSTARTUP",
        ) from None
    return result


def _lock_paths(root: Path) -> Iterator[Path]:
    for pattern in LOCK_FILE_PATTERNS:
        yield from sorted(root.glob(pattern))


def lock_files(roots: Sequence[Path], project_root: Path) -> list[LockFile]:
    found: dict[Path, LockFile] = {}
    for root in roots:
        for path in _lock_paths(root):
            if not path.is_file() or path in found:
                continue
            digest, size = hash_file(path)
            try:
                rel = path.resolve().relative_to(project_root.resolve()).as_posix()
            except ValueError:
                rel = str(path.resolve())
            found[path] = LockFile(rel, str(digest), size)
    return sorted(found.values(), key=lambda lf: lf.path)


@cache
def host_facts() -> dict[str, Any]:
    """OS, CPU, memory and GPU of this machine (cached per process)."""
    facts: dict[str, Any] = {
        "os": _os_facts(),
        "cpu": _cpu_facts(),
        "memory_bytes": _memory_bytes(),
    }
    gpu = gpu_facts()
    if gpu:
        facts["gpu"] = gpu
    return facts


def _os_facts() -> dict[str, str]:
    uname = platform.uname()
    facts = {
        "system": uname.system,
        "release": uname.release,
        "version": uname.version,
        "machine": uname.machine,
    }
    libc, libc_version = platform.libc_ver()
    if libc:
        facts["libc"] = f"{libc} {libc_version}"
    try:
        release = platform.freedesktop_os_release()
        facts["distro"] = release.get("PRETTY_NAME", release.get("NAME", ""))
    except OSError:
        pass
    return facts


def _cpu_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"count": os.cpu_count() or 0, "model": platform.processor()}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return facts
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not facts.get("model_name"):
            facts["model"] = value.strip()
            facts["model_name"] = True
        elif key in ("flags", "Features") and "flags" not in facts:
            facts["flags"] = sorted(set(value.split()))
    facts.pop("model_name", None)
    return facts


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def gpu_facts(nvidia_smi: str | None = None) -> dict[str, Any] | None:
    """NVIDIA GPUs through ``nvidia-smi`` when it is on PATH; None otherwise or when it
    fails (no driver loaded, no permission)."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        query = subprocess.run(
            [
                exe,
                "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            timeout=15,
            check=True,
        )
        header = subprocess.run([exe], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    devices = []
    for line in query.stdout.decode(errors="replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            devices.append({"name": parts[0], "driver": parts[1], "memory_mib": parts[2]})
    if not devices:
        return None
    facts: dict[str, Any] = {"devices": devices}
    match = re.search(r"CUDA Version:\s*([0-9.]+)", header.stdout.decode(errors="replace"))
    if match:
        facts["cuda_driver_api"] = match.group(1)
    return facts


def _cuda_libraries(packages: Mapping[str, str]) -> dict[str, str]:
    # pip-installed CUDA: the wheels torch/jax depend on carry the versions that matter.
    found = {}
    for name, version in packages.items():
        if name.startswith("nvidia-cudnn-"):
            found["cudnn"] = version
        elif name.startswith("nvidia-cuda-runtime-"):
            found["cuda_runtime"] = version
        elif name.startswith("nvidia-cublas-"):
            found["cublas"] = version
    return found


def build(
    probe: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    locks: Sequence[LockFile] = (),
    host: Mapping[str, Any] | None = None,
    withholder: Withholder | None = None,
) -> Environment:
    """Assemble an Environment from an interpreter probe, the command's environment
    variables and lock files. Machine-local paths (the executable) stay out of the body,
    so identical environments on two machines share a digest."""
    packages = dict(probe.get("packages", {}))
    body: dict[str, Any] = {
        "format": FORMAT,
        "python": {
            "implementation": probe.get("implementation", ""),
            "version": probe.get("version", ""),
            "virtualenv": probe.get("prefix") != probe.get("base_prefix"),
        },
        "packages": packages,
        "lock_files": {lf.path: lf.digest for lf in locks},
        **(host if host is not None else host_facts()),
    }
    variables = split_env(_selected(env), withholder)
    body["env_vars"] = variables.kept
    if variables.withheld:
        # Only the fact and a keyed digest: 'explain' can say the value changed.
        body["env_vars_withheld"] = variables.withheld
    if probe.get("package_sources"):
        body["package_sources"] = dict(probe["package_sources"])
    cuda = _cuda_libraries(packages)
    if cuda:
        body["cuda_libraries"] = cuda
    if probe.get("conda"):
        body["conda"] = dict(probe["conda"])  # only in conda environments: digests elsewhere stay
    return Environment(body, dict(probe.get("modules", {})))


# The running interpreter's probe, with the sys.path folders' mtimes it was valid for:
# a sweep that starts thousands of runs in one process lists its packages once.
_CURRENT: tuple[tuple[tuple[str, int | None], ...], dict[str, Any]] | None = None


def _collect_current() -> dict[str, Any]:
    from tether.envcapture.probe import collect

    global _CURRENT
    key = tuple((p, _mtime(p)) for p in sys.path if p)
    if _CURRENT is None or _CURRENT[0] != key:
        _CURRENT = (key, collect())
    return _CURRENT[1]


# The last environment built in-process, and what it was built from.
_LAST_BUILT: tuple[tuple[object, ...], Environment] | None = None


def capture_current(project_root: Path, env: Mapping[str, str] | None = None) -> Environment:
    """The environment of the interpreter running tether, probed in-process (once while
    its ``sys.path`` folders stay unchanged). A run started right after another in the
    same process, with the same variables and lock files, shares its record."""
    global _LAST_BUILT
    env = dict(os.environ if env is None else env)
    probe = _collect_current()
    stamps = []
    for path in _lock_paths(project_root):
        with contextlib.suppress(OSError):
            st = path.stat()
            stamps.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    key = (str(project_root), id(probe), tuple(sorted(_selected(env).items())), tuple(stamps))
    if _LAST_BUILT is not None and _LAST_BUILT[0] == key:
        return _LAST_BUILT[1]
    built = build(
        probe,
        env=env,
        locks=lock_files([project_root], project_root),
        withholder=Withholder.for_project(project_root / ".tether"),
    )
    _LAST_BUILT = (key, built)
    return built


def capture(
    executable: str,
    project_root: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Environment:
    env = dict(os.environ if env is None else env)
    probe = probe_interpreter(
        executable, env=env, cwd=cwd, cache_dir=project_root / ".tether" / "cache" / "probes"
    )
    roots = [project_root] + ([cwd] if cwd and cwd.resolve() != project_root.resolve() else [])
    return build(
        probe,
        env=env,
        locks=lock_files(roots, project_root),
        withholder=Withholder.for_project(project_root / ".tether"),
    )
