"""Data remotes: where ``tether data push`` sends content and ``pull`` gets it back.

Configured in the committed ``.tether/config.toml`` (never with credentials; S3 and other
clouds take theirs from the usual environment and files)::

    [remote.origin]
    url = "s3://bucket/team/project"      # or /mnt/nfs/store, file:///…, gs://…, az://…
    endpoint_url = "http://127.0.0.1:9000"  # optional, S3-compatible servers

    [data]
    remote = "origin"                       # the default ('tether remote add --default')

A local or NFS directory is written with temp file + fsync + rename; every fsspec file
system (``s3fs``, ``gcsfs``, ``adlfs``…) through fsspec, where a PUT is atomic.
The layout a remote holds is drawn in ``data/transfer.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from tether.errors import RemoteError, UsageError
from tether.store.atomic import fsync_dir
from tether.workspace import Workspace

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SCHEME_RE = re.compile(r"^([a-z][a-z0-9+.-]*)://")


@dataclass(frozen=True)
class RemoteConfig:
    name: str
    url: str
    endpoint_url: str | None = None

    @property
    def scheme(self) -> str:
        m = _SCHEME_RE.match(self.url)
        return m.group(1) if m else "file"


class Backend(Protocol):
    """The few operations transfers need; paths are '/'-separated, relative to the remote."""

    description: str

    def list(self, directory: str) -> list[str]: ...

    def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes: ...

    def open_read(self, path: str) -> IO[bytes]: ...

    def write_bytes(self, path: str, data: bytes) -> None: ...

    def write_parts(self, path: str, parts: Sequence[bytes]) -> None: ...

    def write_file(self, path: str, local: Path) -> None: ...

    def exists(self, path: str) -> bool: ...

    def sweep_temps(self, grace_s: float) -> tuple[str, ...]: ...


# What an interrupted push leaves (a temp file beside its final name) is removed once no
# write has touched it for this long: an active writer updates its file's mtime.
TEMP_GRACE_S = 2 * 3600.0
TEMP_PREFIX = ".tmp-"
_TEMP_DIRS = ("blobs/sha256", "packs", "chunklists/sha256", "")


# -- configuration ---------------------------------------------------------------------


def _config_path(ws: Workspace) -> Path:
    return ws.dot / "config.toml"


def list_remotes(ws: Workspace) -> list[RemoteConfig]:
    import tomllib

    path = _config_path(ws)
    if not path.is_file():
        return []
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    table = doc.get("remote", {})
    out = []
    for name, entry in sorted(table.items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise RemoteError(
                f"{path}: [remote.{name}] needs a url",
                hint="fix it with 'tether remote add NAME URL --force'",
            )
        out.append(RemoteConfig(name, entry["url"], entry.get("endpoint_url")))
    return out


def default_remote(ws: Workspace) -> str | None:
    return ws.settings.data_remote or None


@dataclass(frozen=True)
class RemoteListing:
    remotes: tuple[RemoteConfig, ...]
    default: str | None

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r.name,
                "url": r.url,
                "endpoint_url": r.endpoint_url,
                "default": r.name == self.default,
            }
            for r in self.remotes
        ]


def remotes(ws: Workspace) -> RemoteListing:
    """The configured data remotes and which one is the default."""
    return RemoteListing(tuple(list_remotes(ws)), default_remote(ws))


def add_remote(
    ws: Workspace,
    name: str,
    url: str,
    *,
    default: bool = False,
    endpoint_url: str | None = None,
    force: bool = False,
) -> RemoteConfig:
    """Add (or with ``force`` replace) a remote in the project's config file, keeping
    the file's comments and layout."""
    import tomlkit

    from tether.store.atomic import write_atomic

    if not _NAME_RE.match(name):
        raise UsageError(
            f"remote name {name!r} is not valid",
            hint="use letters, digits, '.', '_' and '-' (up to 64)",
        )
    _check_url(url)
    if endpoint_url is not None and not re.match(r"^https?://", endpoint_url):
        raise UsageError(
            f"endpoint URL {endpoint_url!r} is not http(s)", hint="e.g. http://127.0.0.1:9000"
        )
    path = _config_path(ws)
    doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.is_file() else tomlkit.document()
    remotes = doc.setdefault("remote", tomlkit.table(is_super_table=True))
    if name in remotes and not force:
        raise RemoteError(
            f"remote {name!r} exists ({remotes[name].get('url')})",
            hint="pass --force to replace it, or choose another name",
        )
    entry = tomlkit.table()
    entry["url"] = url
    if endpoint_url:
        entry["endpoint_url"] = endpoint_url
    remotes[name] = entry
    if default:
        data = doc.setdefault("data", tomlkit.table())
        data["remote"] = name
    write_atomic(path, tomlkit.dumps(doc).encode(), tmp_dir=ws.dot / "tmp")
    return RemoteConfig(name, url, endpoint_url)


def remove_remote(ws: Workspace, name: str) -> None:
    import tomlkit

    from tether.store.atomic import write_atomic

    path = _config_path(ws)
    doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.is_file() else None
    if doc is None or name not in doc.get("remote", {}):
        raise RemoteError(f"no remote named {name!r}", hint="see 'tether remote list'")
    del doc["remote"][name]
    data = doc.get("data")
    if data is not None and data.get("remote") == name:
        data["remote"] = ""
    write_atomic(path, tomlkit.dumps(doc).encode(), tmp_dir=ws.dot / "tmp")


def _check_url(url: str) -> None:
    m = _SCHEME_RE.match(url)
    scheme = m.group(1) if m else "file"
    if scheme in ("oci", "docker"):
        raise UsageError(
            "OCI registry data remotes are not supported yet",
            hint="use a directory or a bucket for data; ModelKits go to registries "
            "with 'tether push'",
        )
    if scheme in ("http", "https"):
        raise UsageError(
            f"{url} is not a writable store",
            hint="use a directory, s3://, gs://, az:// or another fsspec URL",
        )
    if m and re.match(r"^[a-z0-9+.-]+://[^/@]*:[^/@]*@", url):
        raise UsageError(
            "the remote URL carries a password",
            hint="the config file is committed: give credentials through the environment "
            "(e.g. AWS_ACCESS_KEY_ID) or the tool's own config instead",
        )


def resolve(ws: Workspace, name: str | None) -> RemoteConfig:
    remotes = {r.name: r for r in list_remotes(ws)}
    chosen = name or default_remote(ws)
    if chosen is None:
        if len(remotes) == 1:
            return next(iter(remotes.values()))
        raise RemoteError(
            "no remote given and no default remote set",
            hint="pass -r NAME, or set one with 'tether remote add NAME URL --default'",
        )
    if chosen not in remotes:
        raise RemoteError(
            f"no remote named {chosen!r}",
            hint="see 'tether remote list'; add one with 'tether remote add NAME URL'",
        )
    return remotes[chosen]


def open_backend(ws: Workspace, remote: RemoteConfig) -> Backend:
    if remote.scheme == "file":
        raw = remote.url[len("file://") :] if remote.url.startswith("file://") else remote.url
        root = Path(raw).expanduser()
        if not root.is_absolute():
            root = ws.root / root  # relative to the project, so a committed path works
        return LocalBackend(root)
    return FsspecBackend(remote)


# -- backends ----------------------------------------------------------------------------


class LocalBackend:
    """A directory (local disk, NFS): atomic, durable writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def _p(self, path: str) -> Path:
        return self.root / path

    def list(self, directory: str) -> list[str]:
        try:
            return os.listdir(self._p(directory))
        except FileNotFoundError:
            return []

    def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        try:
            with open(self._p(path), "rb") as f:
                if start is None:
                    return f.read()
                f.seek(start)
                return f.read((end or 0) - start) if end is not None else f.read()
        except FileNotFoundError:
            raise RemoteError(
                f"{path} is missing on remote {self.description}",
                hint="push it again from a clone that has it",
            ) from None

    def open_read(self, path: str) -> IO[bytes]:
        return open(self._p(path), "rb")

    def write_bytes(self, path: str, data: bytes) -> None:
        with self._tmp(path) as fd:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

    def write_parts(self, path: str, parts: Sequence[bytes]) -> None:
        """Write ``parts`` back to back as one object (a pack is never joined in memory)."""
        with self._tmp(path) as fd:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]

    def write_file(self, path: str, local: Path) -> None:
        with self._tmp(path) as fd, open(local, "rb") as src:
            os.sendfile(fd, src.fileno(), 0, os.fstat(src.fileno()).st_size)

    @contextlib.contextmanager
    def _tmp(self, path: str) -> Iterator[int]:
        final = self._p(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=final.parent)
        try:
            yield fd
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def exists(self, path: str) -> bool:
        return self._p(path).exists()

    def sweep_temps(self, grace_s: float) -> tuple[str, ...]:
        """Remove temp files of interrupted writes untouched for ``grace_s`` seconds;
        returns their remote paths."""
        removed: tuple[str, ...] = ()
        cutoff = time.time() - grace_s
        for directory in _TEMP_DIRS:
            for name in self.list(directory):
                if not name.startswith(TEMP_PREFIX):
                    continue
                rel = f"{directory}/{name}" if directory else name
                try:
                    if os.lstat(self._p(rel)).st_mtime < cutoff:
                        os.unlink(self._p(rel))
                        removed += (rel,)
                except FileNotFoundError:
                    continue  # finished or swept by another process meanwhile
        return removed


class FsspecBackend:
    """Any fsspec file system: s3://, gs://, az://, memory://…"""

    def __init__(self, remote: RemoteConfig) -> None:
        try:
            import fsspec
        except ImportError:
            raise RemoteError(
                f"remote {remote.name} needs fsspec", hint="pip install 'tether-ml[s3]'"
            ) from None
        options: dict[str, Any] = {}
        if remote.endpoint_url:
            options["endpoint_url"] = remote.endpoint_url
        try:
            fs, root = fsspec.core.url_to_fs(remote.url, **options)
        except (ImportError, ValueError) as exc:
            raise RemoteError(
                f"cannot open remote {remote.name} ({remote.url}): {exc}",
                hint="install the file system's package, e.g. pip install 'tether-ml[s3]'",
            ) from None
        self.fs = fs
        self.root = root.rstrip("/")
        self.description = remote.url

    def _p(self, path: str) -> str:
        return f"{self.root}/{path}"

    def list(self, directory: str) -> list[str]:
        try:
            entries = self.fs.ls(self._p(directory), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]

    def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._p(path), start=start, end=end)
        except FileNotFoundError:
            raise RemoteError(
                f"{path} is missing on remote {self.description}",
                hint="push it again from a clone that has it",
            ) from None
        return data

    def open_read(self, path: str) -> IO[bytes]:
        f: IO[bytes] = self.fs.open(self._p(path), "rb")
        return f

    def write_bytes(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(path), data)

    def write_parts(self, path: str, parts: Sequence[bytes]) -> None:
        self.fs.pipe_file(self._p(path), b"".join(parts))  # one PUT: atomic

    def write_file(self, path: str, local: Path) -> None:
        self.fs.put_file(str(local), self._p(path))

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._p(path)))

    def sweep_temps(self, grace_s: float) -> tuple[str, ...]:
        return ()  # object stores write whole objects: an interrupted upload leaves none
