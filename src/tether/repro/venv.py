"""Recreating a recorded environment with ``uv``: a virtualenv for the recorded
interpreter version holding exactly the recorded package versions.

Environments are cached under ``<user cache>/envs/``, keyed by what determines their
contents (interpreter version and the exact requirement list), so a second
reproduction of the same environment starts at once::

    envs/
      <key>/                 the virtualenv (uv venv)
      <key>/.tether-env.json written last: the spec it was built from; no marker, no cache
      <key>.requirements.txt the pinned list given to 'uv pip sync'
      <key>.lock             serializes builders of the same key

``uv pip sync`` installs exactly the list and resolves nothing, which is right here:
the recorded list is already the complete closure the run had.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tether.envcapture.environment import Environment
from tether.errors import ReproError, TetherError
from tether.hashing import Digest
from tether.reporting import SILENT, Reporter
from tether.store.atomic import write_atomic
from tether.store.locks import file_lock
from tether.store.objects import ContentStore

UV_TIMEOUT = 1800
MARKER = ".tether-env.json"
# tether itself comes from the running install, not from an index: the recorded
# version may be a development build that no index has.
SELF = "tether-ml"


@dataclass(frozen=True)
class EnvSpec:
    """What a recreated environment holds."""

    implementation: str
    python_version: str
    requirements: tuple[str, ...]  # name==version, sorted
    with_tether: bool  # install the running tether too (the run imported it)
    skipped: tuple[str, ...]  # packages that cannot be installed from an index, with why
    lock: str | None = None  # the recorded lock file used instead of the bare list
    lock_text: str | None = None  # its requirements (hashes kept), what uv pip sync gets
    # --packages imported: only these (and what they need, pinned by ``requirements``)
    install: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        body = json.dumps(
            {
                "implementation": self.implementation,
                "python": self.python_version,
                "requirements": self.requirements,
                "lock": self.lock_text,
                "tether": _self_version() if self.with_tether else None,
                **({"install": self.install} if self.install else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:20]

    def to_json(self) -> dict[str, Any]:
        return {
            "implementation": self.implementation,
            "python": self.python_version,
            "packages": len(self.requirements),
            "installs": "imported" if self.install else "all recorded",
            "imported": list(self.install),
            "with_tether": self.with_tether,
            "skipped": list(self.skipped),
            "lock": self.lock,
            "key": self.key,
        }


def spec_for(environment: Environment, only: Collection[str] | None = None) -> EnvSpec:
    """The installable part of a recorded environment; with ``only`` (the distributions
    a run imported), just those, their dependencies resolved by uv within the recorded
    versions."""
    from tether.envcapture.export import pins_of

    # tether itself comes from this installation (``with_tether``), not from an index.
    pins = pins_of(environment)
    with_tether = SELF in environment.packages
    requirements = [p for p in pins.pinned if p.split("==", 1)[0] != SELF]
    skipped = [u for u in pins.unpinnable if u.split(" ", 1)[0] != SELF]
    install: tuple[str, ...] = ()
    if only is not None:
        wanted = set(only)
        install = tuple(r for r in requirements if r.split("==", 1)[0] in wanted)
        with_tether = with_tether and SELF in wanted
    return EnvSpec(
        implementation=environment.python.implementation or "cpython",
        python_version=environment.python.version,
        requirements=tuple(requirements),
        with_tether=with_tether,
        skipped=tuple(skipped),
        install=install,
    )


def with_lock(
    spec: EnvSpec, environment: Environment, store: ContentStore, uv: str
) -> tuple[EnvSpec, list[str]]:
    """Install from the run's recorded lock file (``uv.lock``, or a fully pinned
    ``requirements*.txt``) when it pins exactly what the run had installed: uv then
    checks the recorded hashes too. Otherwise the recorded versions, with a note why."""
    notes: list[str] = []
    if spec.install:
        return spec, notes  # a lock file pins everything; here only what was imported
    want = dict(r.split("==", 1) for r in spec.requirements)
    order = sorted(environment.lock_files.items(), key=lambda kv: not kv[0].endswith("uv.lock"))
    for path, digest in order:
        name = path.rsplit("/", 1)[-1]
        if name == "uv.lock":
            text = _export_uv_lock(store, environment.lock_files, path, uv)
        elif name.startswith("requirements") and name.endswith(".txt"):
            text = _blob_text(store, digest)
        else:
            continue
        if text is None:
            continue
        pins = _pins(text)
        if pins is None:
            notes.append(f"{path} is not fully pinned; the recorded versions are installed")
        elif pins == want:
            return replace(spec, lock=path, lock_text=text), notes
        else:
            differ = sorted(set(pins.items()) ^ set(want.items()))
            notes.append(
                f"{path} disagrees with what the run had installed ({len(differ)} "
                f"difference(s), e.g. {differ[0][0]}); the recorded versions are installed"
            )
    return spec, notes


def _blob_text(store: ContentStore, digest: str) -> str | None:
    try:
        return store.read_bytes(Digest.parse(digest), max_size=16 << 20).decode()
    except (OSError, ValueError, TetherError):
        return None


def _export_uv_lock(
    store: ContentStore, files: Mapping[str, str], lock_path: str, uv: str
) -> str | None:
    """``uv export`` of a recorded uv.lock with its pyproject.toml, offline."""
    import tempfile

    folder = lock_path.rsplit("/", 1)[0] + "/" if "/" in lock_path else ""
    pyproject = files.get(folder + "pyproject.toml")
    lock = _blob_text(store, files[lock_path])
    project = _blob_text(store, pyproject) if pyproject else None
    if lock is None or project is None:
        return None
    with tempfile.TemporaryDirectory(prefix="tether-lock-") as tmp:
        Path(tmp, "uv.lock").write_text(lock)
        Path(tmp, "pyproject.toml").write_text(project)
        proc = subprocess.run(
            [uv, "export", "--frozen", "--no-emit-project", "--no-header", "--quiet",
             "--format", "requirements-txt"],
            cwd=tmp, capture_output=True, text=True, timeout=120, env=_uv_env(), check=False,
        )  # fmt: skip
    return proc.stdout if proc.returncode == 0 else None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(text: str) -> dict[str, str] | None:
    """name → version of a requirements file whose every line is ``name==version``
    (hashes and markers allowed; markers evaluated here); None if any line is not."""
    pins: dict[str, str] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        line = re.sub(r"\s--hash=\S+", "", line).strip()
        if not line:
            continue
        requirement, _, marker = line.partition(";")
        m = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*===?\s*([^\s]+)", requirement.strip())
        if m is None:
            return None
        if marker.strip():
            try:
                from packaging.markers import Marker

                if not Marker(marker.strip()).evaluate():
                    continue
            except Exception:
                return None
        pins[_canonical(m.group(1))] = m.group(3)
    return pins


def uv_binary() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    with contextlib.suppress(Exception):
        import uv  # type: ignore[import-not-found, import-untyped, unused-ignore]

        return str(uv.find_uv_bin())
    return None


def _uv_env() -> dict[str, str]:
    # Never download an interpreter behind the user's back: a missing version is
    # reported by the plan with what to install.
    return {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}


def find_python(spec: EnvSpec, uv: str) -> str | None:
    """An interpreter of exactly the recorded version, or None."""
    if (
        platform.python_implementation().lower() == spec.implementation
        and platform.python_version() == spec.python_version
    ):
        return sys.executable
    if spec.implementation not in ("cpython", "pypy") or not spec.python_version:
        return None
    request = ("pypy@" if spec.implementation == "pypy" else "") + spec.python_version
    try:
        proc = subprocess.run(
            [uv, "python", "find", request],
            capture_output=True,
            text=True,
            timeout=120,
            env=_uv_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = proc.stdout.strip()
    return path if proc.returncode == 0 and path else None


def cache_root(env: Mapping[str, str]) -> Path:
    from tether.config import user_cache_dir

    return user_cache_dir(env) / "envs"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(
    spec: EnvSpec,
    *,
    interpreter: str,
    uv: str,
    root: Path,
    report: Reporter = SILENT,
    show_progress: bool = False,
) -> tuple[Path, bool]:
    """The virtualenv for ``spec`` (built now, or found in the cache): (path, cached).
    ``show_progress`` lets uv draw its own progress on the caller's terminal while it
    downloads and installs (a minute or two for a hundred packages)."""
    say = report.note
    root.mkdir(parents=True, exist_ok=True)
    venv = root / spec.key
    with file_lock(root / f"{spec.key}.lock", timeout=UV_TIMEOUT):
        if (venv / MARKER).is_file() and venv_python(venv).exists():
            return venv, True
        shutil.rmtree(venv, ignore_errors=True)  # an interrupted build
        say(f"creating a virtualenv for Python {spec.python_version} with uv")
        _uv(uv, "venv", "--quiet", "--python", interpreter, str(venv))
        if spec.install:
            reqs = root / f"{spec.key}.requirements.txt"
            pins = root / f"{spec.key}.constraints.txt"
            write_atomic(reqs, ("\n".join(spec.install) + "\n").encode(), tmp_dir=root)
            write_atomic(pins, ("\n".join(spec.requirements) + "\n").encode(), tmp_dir=root)
            say(
                f"installing the {len(spec.install)} imported package(s) and what they need, "
                "pinned to the recorded versions, with uv pip install"
            )
            _uv(uv, "pip", "install", "--compile-bytecode", "--python", str(venv_python(venv)),
                "-r", str(reqs), "-c", str(pins), show=show_progress)  # fmt: skip
        elif spec.requirements:
            reqs = root / f"{spec.key}.requirements.txt"
            text = spec.lock_text or "\n".join(spec.requirements) + "\n"
            write_atomic(reqs, text.encode(), tmp_dir=root)
            source = f" from {spec.lock}" if spec.lock else ""
            say(f"installing {len(spec.requirements)} pinned package(s){source} with uv pip sync")
            # Bytecode now: the environment is reused, and an interpreter that cannot
            # write __pycache__ (PYTHONDONTWRITEBYTECODE, read-only) would recompile
            # every module at every start.
            _uv(uv, "pip", "sync", "--compile-bytecode", "--python", str(venv_python(venv)),
                str(reqs), show=show_progress)  # fmt: skip
        if spec.with_tether:
            _install_self(uv, venv)
        marker = json.dumps({"format": 1, **spec.to_json()}, sort_keys=True).encode()
        write_atomic(venv / MARKER, marker, tmp_dir=venv)
    return venv, False


def installed(uv: str, venv: Path) -> dict[str, str]:
    """What the virtualenv holds: canonical name → version."""
    out = _uv(uv, "pip", "freeze", "--python", str(venv_python(venv)))
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            found[name.strip().lower().replace("_", "-").replace(".", "-")] = version.strip()
    return found


def _uv(uv: str, *args: str, show: bool = False) -> str:
    try:
        proc = subprocess.run(
            [uv, *args],
            stdout=subprocess.PIPE,
            stderr=None if show else subprocess.PIPE,  # shown: uv's progress, on our stderr
            text=True,
            timeout=UV_TIMEOUT,
            env=_uv_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ReproError(
            f"uv {args[0]} {args[1] if len(args) > 1 else ''} did not finish in "
            f"{UV_TIMEOUT // 60} minutes",
            hint="check the network to the package index, or use --env current",
        ) from None
    except OSError as exc:
        raise ReproError(f"cannot run uv: {exc}", hint="pip install uv") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
        detail = " ".join(ln.strip() for ln in lines[-3:])[:400] or (
            "see uv's output above" if show else f"exit {proc.returncode}"
        )
        raise ReproError(
            f"uv {' '.join(args[:2])} failed: {detail}",
            hint="a recorded version may not be on your package index (set UV_INDEX_URL "
            "or UV_FIND_LINKS for a private one), or use --env current",
        )
    return proc.stdout


def _self_version() -> str:
    try:
        return metadata.version(SELF)
    except metadata.PackageNotFoundError:
        from tether import __version__

        return __version__


def _self_source() -> tuple[Path, bool] | None:
    """The folder the running tether was installed from, and whether editably."""
    with contextlib.suppress(Exception):
        text = metadata.distribution(SELF).read_text("direct_url.json")
        if text:
            info = json.loads(text)
            url = urlsplit(info.get("url", ""))
            if url.scheme == "file":
                path = Path(unquote(url.path))
                if (path / "pyproject.toml").is_file():
                    return path, bool(info.get("dir_info", {}).get("editable"))
    return None


def _install_self(uv: str, venv: Path) -> None:
    """Make the running tether importable in the venv, without its dependencies (the
    recorded list already pins them)."""
    found = _self_source()
    if found is not None:
        source, editable = found
        where = ["-e", str(source)] if editable else [str(source)]
        _uv(uv, "pip", "install", "--quiet", "--no-deps", "--python", str(venv_python(venv)),
            *where)  # fmt: skip
        return
    # Installed from a wheel: copy the pure-Python package into the venv.
    import tether

    site = next((venv / "lib").glob("*/site-packages"), None)
    if site is None:
        raise ReproError(
            f"cannot find site-packages in {venv}", hint="remove the folder and try again"
        )
    shutil.copytree(Path(tether.__file__).parent, site / "tether", dirs_exist_ok=True)
