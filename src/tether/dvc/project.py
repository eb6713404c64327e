"""A DVC project as tether reads it to import it: its ``.dvc`` files, ``dvc.lock``,
``.dvc/config`` and where its objects are. Nothing here writes to the DVC project.

What DVC keeps, and where::

    PATH.dvc                 outs: [{path, md5, size, hash: md5}] for one tracked path
    dvc.lock                 stages: NAME: {cmd, deps, params, outs} as last run
    .dvc/config(.local)      [core] remote = NAME; ['remote "NAME"'] url = …
    .dvc/cache/files/md5/AB/CDEF…    an object (DVC 3); .dvc/cache/AB/CDEF… (DVC 2)
    …/AB/CDEF….dir           a folder: JSON [{"md5", "relpath"}], itself named by its md5

An out without ``hash: md5`` was written by DVC 2, whose md5 of a text file is taken
after turning CRLF into LF ("dos2unix"); both forms are accepted when checking.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from tether.errors import DataError, UsageError

_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
_REMOTE = re.compile(r"""^\s*remote\s+"(?P<name>[^"]+)"\s*$""")


@dataclass(frozen=True)
class Out:
    """One path DVC tracks (a file or a folder) with the md5 it recorded."""

    path: str  # relative to the project root, '/'-separated
    md5: str  # "….dir" for a folder
    size: int | None
    legacy: bool  # DVC 2's md5 (dos2unix for text)
    source: str  # the .dvc file or "dvc.lock" it comes from

    @property
    def is_dir(self) -> bool:
        return self.md5.endswith(".dir")


@dataclass(frozen=True)
class Dep:
    path: str
    md5: str | None  # None: DVC recorded no hash (a parameter file, say)


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[Dep, ...]
    outs: tuple[Out, ...]
    params: dict[str, str] = field(default_factory=dict)
    lock_md5: str = ""  # of its dvc.lock entry: the same stage run again is the same run


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    options: dict[str, str]


def _rel(root: Path, base: Path, path: str) -> str:
    full = (base / path).resolve()
    try:
        return full.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise DataError(
            f"{path} points outside the DVC project", hint="it is not imported"
        ) from None


class DvcProject:
    def __init__(self, root: Path) -> None:
        if not (root / ".dvc").is_dir():
            raise UsageError(
                f"{root} is not a DVC project (no .dvc folder)",
                hint="give the folder where 'dvc init' was run",
            )
        self.root = root
        self.config = self._config()

    def _config(self) -> dict[str, dict[str, str]]:
        parser = configparser.ConfigParser(interpolation=None)
        for name in ("config", "config.local"):
            path = self.root / ".dvc" / name
            if path.is_file():
                parser.read(path, encoding="utf-8")
        return {s.strip().strip("'"): dict(parser[s]) for s in parser.sections()}

    # -- what is tracked ---------------------------------------------------------------

    def dvc_files(self) -> list[Path]:
        found = []
        for dirpath, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if d not in (".dvc", ".git", ".tether")]
            found += [Path(dirpath) / f for f in files if f.endswith(".dvc")]
        return sorted(found)

    def outs(self) -> list[Out]:
        """Every out of every ``.dvc`` file and of ``dvc.lock``."""
        out = []
        for path in self.dvc_files():
            doc = _yaml(path)
            source = path.relative_to(self.root).as_posix()
            for raw in doc.get("outs") or ():
                out.append(self._out(raw, path.parent, source))
        for stage in self.stages():
            out += stage.outs
        return out

    def _out(self, raw: Any, base: Path, source: str) -> Out:
        if not isinstance(raw, dict) or "path" not in raw:
            raise DataError(f"{source}: an out without a path", hint="is the file damaged?")
        md5 = str(raw.get("md5") or "")
        if not _MD5.match(md5):
            raise DataError(
                f"{source}: {raw['path']} has no md5 DVC recorded",
                hint="run 'dvc commit' (or 'dvc repro') first",
            )
        size = raw.get("size")
        return Out(
            _rel(self.root, base, str(raw["path"])),
            md5,
            int(size) if size is not None else None,
            raw.get("hash") != "md5",
            source,
        )

    def stages(self) -> list[Stage]:
        lock = self.root / "dvc.lock"
        if not lock.is_file():
            return []
        doc = _yaml(lock)
        found = []
        for name, raw in sorted((doc.get("stages") or {}).items()):
            if not isinstance(raw, dict):
                continue
            deps = tuple(
                Dep(
                    _rel(self.root, self.root, str(d["path"])),
                    str(d["md5"]) if d.get("md5") else None,
                )
                for d in raw.get("deps") or ()
            )
            outs = tuple(self._out(o, self.root, "dvc.lock") for o in raw.get("outs") or ())
            params = {
                f"{key}": _text(value)
                for _file, values in (raw.get("params") or {}).items()
                for key, value in _flat(values)
            }
            digest = hashlib.md5(json.dumps(raw, sort_keys=True).encode()).hexdigest()
            found.append(Stage(str(name), str(raw.get("cmd") or ""), deps, outs, params, digest))
        return found

    # -- where the objects are ---------------------------------------------------------

    def cache_dir(self) -> Path:
        configured = self.config.get("cache", {}).get("dir")
        if configured:
            return (self.root / ".dvc" / configured).resolve()
        return self.root / ".dvc" / "cache"

    def remote(self, name: str | None) -> Remote | None:
        """The remote ``name``, else the default one (``core.remote``); None if none."""
        wanted = name or self.config.get("core", {}).get("remote")
        if not wanted:
            return None
        for section, options in self.config.items():
            m = _REMOTE.match(section)
            if m and m.group("name") == wanted:
                url = options.get("url", "")
                if "://" not in url:  # a local path, relative to .dvc/
                    url = str((self.root / ".dvc" / url).resolve())
                return Remote(wanted, url, options)
        raise UsageError(f"no DVC remote {wanted!r}", hint="see 'dvc remote list'")


class ObjectStore:
    """Reads DVC objects by md5 from the cache, then the workspace, then a remote."""

    def __init__(self, project: DvcProject, remote: Remote | None) -> None:
        self.project = project
        self.remote = remote
        self._fs: Any = None

    def _local(self, md5: str) -> Path | None:
        cache = self.project.cache_dir()
        for path in (cache / "files" / "md5" / md5[:2] / md5[2:], cache / md5[:2] / md5[2:]):
            if path.is_file():
                return path
        return None

    def _remote_paths(self, md5: str) -> list[str]:
        assert self.remote is not None
        base = self.remote.url.rstrip("/")
        return [f"{base}/files/md5/{md5[:2]}/{md5[2:]}", f"{base}/{md5[:2]}/{md5[2:]}"]

    def _remote_fs(self) -> Any:
        if self._fs is None:
            assert self.remote is not None
            import fsspec

            options: dict[str, Any] = {}
            if self.remote.url.startswith("s3://"):
                endpoint = self.remote.options.get("endpointurl")
                if endpoint:
                    options["client_kwargs"] = {"endpoint_url": endpoint}
            self._fs = fsspec.core.url_to_fs(self.remote.url, **options)[0]
        return self._fs

    @contextlib.contextmanager
    def open(self, md5: str, workspace: Path | None = None) -> Iterator[Any]:
        """The object's bytes; ``workspace`` is a file that may hold them too (checked
        against the md5 by the reader, like any other source)."""
        local = self._local(md5)
        if local is None and workspace is not None and workspace.is_file():
            local = workspace
        if local is not None:
            with open(local, "rb") as f:
                yield f
            return
        if self.remote is not None:
            fs = self._remote_fs()
            for path in self._remote_paths(md5):
                if fs.exists(path):
                    with fs.open(path, "rb") as f:
                        yield f
                    return
        where = f", nor in remote {self.remote.name}" if self.remote else " (no remote is set)"
        raise DataError(
            f"object {md5} is not in the DVC cache{where}",
            hint="run 'dvc pull' first, or name the remote that has it: --remote NAME",
        )

    def listing(self, md5: str) -> list[tuple[str, str]]:
        """A folder object: (relpath, md5) of each file, checked against its md5."""
        with self.open(md5) as f:
            data = f.read()
        if hashlib.md5(data).hexdigest() != md5.removesuffix(".dir"):
            raise DataError(
                f"the folder listing {md5} does not match its md5",
                hint="the DVC cache or remote is damaged",
            )
        entries = json.loads(data)
        out = []
        for e in entries:
            rel = str(e["relpath"]).replace("\\", "/")
            pure = PurePosixPath(rel)
            if pure.is_absolute() or ".." in pure.parts or not _MD5.match(str(e["md5"])):
                raise DataError(
                    f"folder {md5} lists a bad entry {rel[:80]!r}",
                    hint="the listing is damaged or hostile; nothing was imported",
                )
            out.append((pure.as_posix(), str(e["md5"])))
        return out


def _yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read {path.name}: {e}", hint="is it a DVC file?") from None
    return doc if isinstance(doc, dict) else {}


def _flat(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
