"""A recorded environment written out as files other tools build: ``requirements.txt``,
a uv project (``pyproject.toml`` + ``uv.lock``), a conda ``environment.yml``, or a
``Dockerfile``. Each carries exactly what was recorded: the interpreter version, every
distribution at its version, the variables that change results and the seed's
``PYTHONHASHSEED``; the Dockerfile starts from a CUDA image of the recorded CUDA version
when the run had a GPU.

Distributions installed editable or from a VCS checkout cannot be pinned from an index:
they are listed as comments and named in the notes.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from tether.envcapture.environment import Environment
from tether.errors import TetherError, UsageError

if TYPE_CHECKING:
    from tether.runs.record import RunRecord
    from tether.workspace import Workspace

ExportFormat = Literal["requirements", "uv-lock", "conda", "dockerfile"]
FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
UV_LOCK_TIMEOUT = 600

# nvidia/cuda tags by CUDA major.minor: the last patch release of each (others: X.Y.0).
_CUDA_TAGS = {"11.8": "11.8.0", "12.1": "12.1.1", "12.4": "12.4.1", "12.6": "12.6.3",
              "12.8": "12.8.1"}  # fmt: skip


class ExportError(TetherError):
    code = "env-export"


@dataclass(frozen=True)
class Subject:
    """What is exported: a run's recorded environment and seed."""

    run_id: str
    label: str
    seed: int | None
    environment: Environment
    # The run's recorded (pyproject.toml, uv.lock) when that lock pins exactly what was
    # installed (``repro.venv.with_lock`` decides), else None.
    uv_project: tuple[str, str] | None = None


@dataclass(frozen=True)
class ExportedFile:
    name: str
    text: str


@dataclass(frozen=True)
class Export:
    format: ExportFormat
    files: tuple[ExportedFile, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Pins:
    pinned: tuple[str, ...]  # name==version, sorted
    unpinnable: tuple[str, ...]  # "name version (why)"


def pins_of(environment: Environment) -> Pins:
    sources = environment.package_sources
    pinned, unpinnable = [], []
    for name, version in sorted(environment.packages.items()):
        source = sources.get(name)
        if source is not None and source.editable:
            unpinnable.append(f"{name} {version} (installed editable from a local folder)")
        elif source is not None and source.vcs:
            unpinnable.append(f"{name} {version} (installed from {source.vcs} {source.commit})")
        else:
            pinned.append(f"{name}=={version}")
    return Pins(tuple(pinned), tuple(unpinnable))


def variables(subject: Subject) -> dict[str, str]:
    """The result-changing variables to set, with the seed's PYTHONHASHSEED."""
    out = dict(sorted(subject.environment.env_vars.items()))
    if subject.seed is not None:
        out["PYTHONHASHSEED"] = out["TETHER_SEED"] = str(subject.seed)
    return out


def subject_of(ws: Workspace, run: RunRecord) -> Subject:
    """The run's recorded environment, with the uv project files it recorded."""
    from tether.hashing import Digest
    from tether.repositories.runs import load_environment

    environment = load_environment(ws.db, run.env_digest)
    label = run.name or run.id[:12]
    if environment is None:
        raise ExportError(
            f"run {label} has no recorded environment",
            hint="see the warnings in 'tether runs show'",
        )
    uv_project = None
    uv = _uv()
    if uv is not None:
        from tether.repro.venv import spec_for, with_lock

        spec, _ = with_lock(spec_for(environment), environment, ws.store, uv)
        if spec.lock is not None and spec.lock.rsplit("/", 1)[-1] == "uv.lock":
            files = environment.lock_files
            pyproject = files.get(spec.lock[: -len("uv.lock")] + "pyproject.toml")
            if pyproject is not None:
                texts = (
                    ws.store.read_bytes(Digest.parse(d)).decode()
                    for d in (pyproject, files[spec.lock])
                )
                uv_project = (next(texts), next(texts))
    return Subject(run.id, label, run.seed, environment, uv_project)


def export(subject: Subject, fmt: str, *, uv: str | None = None) -> Export:
    """``uv``: the uv binary (default: the one tether finds), for ``uv-lock``."""
    uv = uv or _uv()
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint="one of " + ", ".join(FORMATS))
    env = subject.environment
    if not env.python.version:
        raise ExportError(
            f"run {subject.label} recorded no interpreter version",
            hint="export a run recorded by 'tether run'",
        )
    pins = pins_of(env)
    notes = [f"not pinned: {u}" for u in pins.unpinnable]
    if subject.seed is None and "PYTHONHASHSEED" not in env.env_vars:
        notes.append("the run had no seed: PYTHONHASHSEED was random and is left unset")
    if fmt == "requirements":
        files: tuple[ExportedFile, ...] = (_requirements(subject, pins),)
    elif fmt == "uv-lock":
        files = _uv_project(subject, pins, uv, notes)
    elif fmt == "conda":
        files = (_conda(subject, pins),)
    else:
        files = (_dockerfile(subject, pins, notes),)
    return Export(fmt, files, tuple(notes))


def _header(subject: Subject, comment: str = "#") -> list[str]:
    env = subject.environment
    return [
        f"{comment} The environment of run {subject.label} ({subject.run_id}) as tether "
        "recorded it:",
        f"{comment} {env.digest}, {env.python.label}, {len(env.packages)} distribution(s).",
    ]


def _requirements(subject: Subject, pins: Pins) -> ExportedFile:
    lines = _header(subject)
    lines.append(f"# Python {subject.environment.python.version}: create the venv with it.")
    values = variables(subject)
    if values:
        lines.append("# Set before running: " + " ".join(f"{k}={v}" for k, v in values.items()))
    lines += [f"# not on an index: {u}" for u in pins.unpinnable]
    lines += list(pins.pinned)
    return ExportedFile("requirements.txt", "\n".join(lines) + "\n")


def _slug(label: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    return slug or "run"


def _uv_project(
    subject: Subject, pins: Pins, uv: str | None, notes: list[str]
) -> tuple[ExportedFile, ...]:
    """The recorded uv.lock when it pins exactly what was installed; otherwise a uv
    project whose dependencies are the recorded pins, locked by ``uv lock``."""
    if subject.uv_project is not None:
        notes.append("the run's own uv.lock and pyproject.toml, as recorded")
        pyproject_text, lock_text = subject.uv_project
        return ExportedFile("pyproject.toml", pyproject_text), ExportedFile("uv.lock", lock_text)
    if uv is None:
        raise ExportError("uv is not installed", hint="pip install uv")
    version = subject.environment.python.version
    deps = "".join(f'    "{p}",\n' for p in pins.pinned)
    header = "\n".join(_header(subject)) + "\n"
    values = variables(subject)
    if values:
        header += "# Set before running: " + " ".join(f"{k}={v}" for k, v in values.items()) + "\n"
    pyproject = (
        f"{header}[project]\n"
        f'name = "{_slug(subject.label)}-environment"\n'
        'version = "0"\n'
        f'requires-python = "=={version}"\n'
        f"dependencies = [\n{deps}]\n\n"
        "[tool.uv]\n"
        "package = false  # an environment, not a package to build\n"
    )
    with tempfile.TemporaryDirectory(prefix="tether-uv-lock-") as tmp:
        Path(tmp, "pyproject.toml").write_text(pyproject)
        try:
            proc = subprocess.run(
                [uv, "lock", "--quiet", "--directory", tmp, "--no-progress"],
                capture_output=True,
                timeout=UV_LOCK_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ExportError(f"uv lock failed: {e}", hint="check that uv works") from None
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ExportError(
                f"uv lock failed: {lines[-1] if lines else proc.returncode}",
                hint="uv resolves against the package index: check that it is reachable "
                "and has every recorded version",
            )
        lock = Path(tmp, "uv.lock").read_text()
    return ExportedFile("pyproject.toml", pyproject), ExportedFile("uv.lock", lock)


def _uv() -> str | None:
    from tether.repro.venv import uv_binary

    return uv_binary()


def _conda(subject: Subject, pins: Pins) -> ExportedFile:
    """environment.yml: the recorded conda packages (channel::name=version=build) when
    the interpreter lived in a conda environment, the rest through pip."""
    env = subject.environment
    conda = env.conda
    lines = _header(subject)
    lines.append(f"name: {_slug(subject.label)}-environment")
    channels = list(conda.channels) if conda else ["conda-forge"]
    lines.append("channels:")
    lines += [f"  - {json.dumps(c)}" for c in channels]
    lines.append("dependencies:")
    in_conda: set[str] = set()
    if conda:
        for name, pkg in sorted(conda.packages.items()):
            in_conda.add(name)
            spec = (
                f"{pkg.channel}::{name}={pkg.version}={pkg.build}"
                if pkg.channel
                else (f"{name}={pkg.version}={pkg.build}")
            )
            lines.append(f"  - {json.dumps(spec)}")
    else:
        lines.append(f'  - "python={env.python.version}"')
        lines.append('  - "pip"')
    rest = [p for p in pins.pinned if p.split("==", 1)[0] not in in_conda]
    if rest:
        lines.append("  - pip:")
        lines += [f"    - {json.dumps(p)}" for p in rest]
    values = variables(subject)
    if values:
        lines.append("variables:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in values.items()]
    return ExportedFile("environment.yml", "\n".join(lines) + "\n")


def cuda_image(environment: Environment) -> str | None:
    """The nvidia/cuda base image of the recorded CUDA version (None: no GPU)."""
    gpu = environment.gpu
    if gpu is None:
        return None
    version = environment.cuda_libraries.get("cuda_runtime") or gpu.cuda_driver_api or ""
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None:
        return None
    short = f"{m.group(1)}.{m.group(2)}"
    flavour = "cudnn-runtime" if "cudnn" in environment.cuda_libraries else "runtime"
    return f"nvidia/cuda:{_CUDA_TAGS.get(short, short + '.0')}-{flavour}-ubuntu22.04"


def _docker_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _dockerfile(subject: Subject, pins: Pins, notes: list[str]) -> ExportedFile:
    env = subject.environment
    version = env.python.version
    if env.python.implementation not in ("", "cpython"):
        raise ExportError(
            f"run {subject.label} ran on {env.python.label}",
            hint="a Dockerfile is written for CPython; export requirements instead",
        )
    slug = _slug(subject.label)
    lines = ["# syntax=docker/dockerfile:1", *_header(subject)]
    lines += [
        f"# Build: docker build -t {slug}-env .",
        f'# Use:   docker run --rm -v "$PWD":/work {slug}-env python ...',
    ]
    lines += [f"# not on an index, add it yourself: {u}" for u in pins.unpinnable]
    image = cuda_image(env)
    values = {"PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    values.update(variables(subject))
    if image is None:
        lines.append(f"FROM python:{version}-slim-bookworm")
        install = "pip install --no-cache-dir --no-deps"
    else:
        notes.append(f"base image {image}: the run had a GPU")
        uv_version = _uv_version()
        lines.append(f"FROM {image}")
        lines.append(f"COPY --from=ghcr.io/astral-sh/uv:{uv_version} /uv /usr/local/bin/uv")
        values.update({"UV_PYTHON_INSTALL_DIR": "/opt/python", "VIRTUAL_ENV": "/opt/venv",
                       "PATH": "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                               "/usr/bin:/sbin:/bin"})  # fmt: skip
        install = "uv pip install --no-cache --no-deps"
    lines.append("ENV " + " \\\n    ".join(f"{k}={_docker_value(v)}" for k, v in values.items()))
    if image is not None:
        lines.append(f"RUN uv venv --python {version} /opt/venv")
    if pins.pinned:
        lines.append("# Every distribution the run had, at its version: the list is the whole")
        lines.append("# closure, so nothing is resolved (--no-deps).")
        lines.append(f"RUN {install} \\\n    " + " \\\n    ".join(pins.pinned))
    lines.append("WORKDIR /work")
    return ExportedFile("Dockerfile", "\n".join(lines) + "\n")


def _uv_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("uv")
    except metadata.PackageNotFoundError:
        return "latest"
