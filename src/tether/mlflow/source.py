"""An MLflow tracking store read for import: what every kind of store yields.

``open_source`` reads ``SOURCE`` as MLflow names tracking stores: ``sqlite:///FILE`` or
``postgresql://…`` (its database, read only: ``repositories/mlflow_db.py``), a
``./mlruns`` folder (``mlflow/source_files.py``) or an ``http(s)://`` server
(``mlflow/source_rest.py``). Each yields the same records, with times in seconds.

Artifacts are read where MLflow put them (``Artifacts``): a local path or ``file:`` URI,
the server's ``mlflow-artifacts:`` (over HTTP, or under ``--artifacts-root`` when reading
the server's database directly), or any URI fsspec reads (``s3://`` with ``s3fs``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

from tether.errors import DataError, UsageError

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class SourceExperiment:
    id: str
    name: str
    lifecycle: str  # active | deleted
    artifact_location: str | None
    created: float | None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceRun:
    id: str
    experiment_id: str
    name: str | None
    user: str | None
    status: str  # RUNNING, SCHEDULED, FINISHED, FAILED, KILLED
    started: float | None
    ended: float | None
    lifecycle: str
    artifact_uri: str | None
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metric_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Series:
    steps: list[int]
    ats: list[float]  # seconds
    values: list[float]


ModelStatus = Literal["pending", "ready", "failed"]


@dataclass(frozen=True)
class SourceLoggedModel:
    id: str
    experiment_id: str
    name: str
    run_id: str | None
    status: ModelStatus
    model_type: str | None
    created: float
    updated: float
    artifact_location: str
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceVersion:
    version: int
    source: str
    run_id: str | None
    storage_location: str | None  # where its files are, resolved by MLflow
    description: str | None
    created: float | None
    user: str | None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceModel:
    name: str
    description: str | None
    created: float | None
    versions: tuple[SourceVersion, ...]
    aliases: Mapping[str, int] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


class Source(Protocol):
    """One MLflow tracking store, read only."""

    display: str
    artifacts: Artifacts

    def experiments(self) -> list[SourceExperiment]: ...

    def runs(self, experiment: SourceExperiment) -> Iterator[SourceRun]: ...

    def history(self, run: SourceRun, key: str) -> Series: ...

    def logged_models(self, experiment: SourceExperiment) -> list[SourceLoggedModel]: ...

    def models(self) -> list[SourceModel]: ...

    def close(self) -> None: ...


def seconds(ms: object) -> float | None:
    """MLflow's milliseconds (int, text or None) in seconds."""
    if ms is None or ms == "":
        return None
    return int(str(ms)) / 1000


# -- artifacts -------------------------------------------------------------------------------


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Listed:
    path: str  # relative to the listed URI, slash-separated
    size: int | None


class Artifacts:
    """Reads files under an MLflow artifact URI, wherever MLflow put them."""

    def __init__(self, *, http: httpx.Client | None = None, root: Path | None = None) -> None:
        self._http = http  # an MLflow server that serves mlflow-artifacts:
        self._root = root  # where a server's mlflow-artifacts: live on this machine

    def walk(self, uri: str) -> Iterator[Listed]:
        """Every file under ``uri`` (none when there is nothing there)."""
        kind, where = self._locate(uri)
        if kind == "path":
            base = Path(where)
            if base.is_file():
                yield Listed("", base.stat().st_size)
                return
            for dirpath, _dirs, files in os.walk(base):
                for name in sorted(files):
                    full = Path(dirpath) / name
                    if not full.is_symlink():
                        rel = full.relative_to(base).as_posix()
                        yield Listed(rel, full.stat().st_size)
        elif kind == "http":
            with _http_errors(uri):
                yield from self._walk_http(where, "")
        else:
            fs, path = _fsspec(where)
            for found, info in sorted(fs.find(path, detail=True).items()):
                rel = found[len(path.rstrip("/")) + 1 :]
                yield Listed(rel, info.get("size"))

    def _walk_http(self, base: str, rel: str) -> Iterator[Listed]:
        assert self._http is not None
        path = f"{base}/{rel}".rstrip("/")
        reply = self._http.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": path})
        if reply.status_code == 404:
            return
        reply.raise_for_status()
        for f in reply.json().get("files", []):
            name = f"{rel}/{f['path'].rsplit('/', 1)[-1]}".lstrip("/")
            if f.get("is_dir"):
                yield from self._walk_http(base, name)
            else:
                yield Listed(name, int(f["file_size"]) if "file_size" in f else None)

    @contextlib.contextmanager
    def open(self, uri: str, rel: str) -> Iterator[Readable]:
        kind, where = self._locate(uri)
        if kind == "path":
            with open(Path(where) / rel if rel else where, "rb") as f:
                yield f
        elif kind == "http":
            assert self._http is not None
            path = f"{where}/{rel}".rstrip("/")
            with (
                _http_errors(uri),
                self._http.stream("GET", f"/api/2.0/mlflow-artifacts/artifacts/{path}") as r,
            ):
                r.raise_for_status()
                yield _Stream(r.iter_bytes(1 << 20))
        else:
            fs, path = _fsspec(where)
            with fs.open(f"{path.rstrip('/')}/{rel}" if rel else path, "rb") as f:
                yield f

    def _locate(self, uri: str) -> tuple[str, str]:
        """("path", local path) | ("http", path on the server) | ("fsspec", URI)."""
        parts = urlsplit(uri)
        if parts.scheme in ("", "file"):
            return "path", unquote(parts.path) if parts.scheme else uri
        if parts.scheme == "mlflow-artifacts":
            inner = parts.path.lstrip("/")
            if self._http is not None:
                return "http", inner
            if self._root is not None:
                return "path", str(self._root / inner)
            raise UsageError(
                f"{uri[:120]} is in an MLflow server's artifact store",
                hint="pass --artifacts-root DIR (the server's --artifacts-destination, "
                "./mlartifacts by default), or import from the server's http:// URL",
            )
        return "fsspec", uri


@contextlib.contextmanager
def _http_errors(uri: str) -> Iterator[None]:
    import httpx

    try:
        yield
    except httpx.HTTPError as e:
        raise DataError(f"reading {uri[:120]} failed: {e}", hint="is the server up?") from None


def _fsspec(uri: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise UsageError(
            f"cannot read artifacts at {uri[:120]}: {e}",
            hint="install the filesystem's package (s3fs for s3://, gcsfs for gs://)",
        ) from None
    return fs, path


class _Stream:
    """A file-like ``read`` over an iterator of chunks (an HTTP body)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if n < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


def open_source(text: str, *, artifacts_root: Path | None = None) -> Source:
    """The MLflow tracking store ``text`` names (see the module's docstring)."""
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        from tether.mlflow.source_rest import RestSource

        return RestSource(text, artifacts_root=artifacts_root)
    if scheme in ("sqlite", "postgresql", "postgres") or scheme.startswith("postgresql+"):
        from tether.mlflow.source_db import DatabaseSource

        return DatabaseSource(text, artifacts_root=artifacts_root)
    path = Path(unquote(urlsplit(text).path) if scheme == "file" else text)
    if scheme in ("", "file") and path.is_dir():
        from tether.mlflow.source_files import FileSource

        return FileSource(path, artifacts_root=artifacts_root)
    raise UsageError(
        f"{text[:120]!r} is not an MLflow tracking store",
        hint="give sqlite:///mlflow.db, postgresql://HOST/DB, a ./mlruns folder "
        "or an http(s):// MLflow server",
    )
