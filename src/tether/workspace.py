"""A tether project: the one entry point that wires settings, store, index and database.

On disk::

    project/
      Kitfile                  what a ModelKit of this project contains (KitOps format)
      .kitignore               files a pack leaves out (optional)
      .tether/
        config.toml            project settings (committed)
        store/                 OCI image layout: blobs and index.json (see store/objects.py)
        tether.db              SQLite, WAL: runs, tags, models (unless [database] url
                               names PostgreSQL; see db/url.py)
        cache/                 disposable: stat.db (see store/statcache.py), remotes/
        tmp/                   temp files, same filesystem as store/ for atomic renames
        locks/                 flock files: index (tags), gc (store-wide), data (add,
                               checkout, pull; push holds it shared)
        quarantine/            blobs fsck found corrupt, kept for inspection

Everything but ``config.toml`` is listed in ``.gitignore`` by ``tether init``.
"""

from __future__ import annotations

import contextlib
import copy
import getpass
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tether import config
from tether.db.connection import Database, open_database
from tether.db.migrations import ensure_current, migrate
from tether.db.url import DEFAULT_SQLITE, DatabaseURL
from tether.errors import WorkspaceError
from tether.oci.layout import LocalIndex
from tether.store.atomic import write_atomic
from tether.store.locks import file_lock
from tether.store.objects import ContentStore
from tether.store.statcache import StatCache

DOT = ".tether"
GITIGNORE_ENTRIES = (
    ".tether/store/",
    ".tether/tether.db*",
    ".tether/cache/",
    ".tether/tmp/",
    ".tether/locks/",
    ".tether/quarantine/",
    ".tether/redaction.key",  # keys the digests of withheld secrets: never committed
)


class Workspace:
    """An opened project. Services are attributes: ``store``, ``index``, ``db``."""

    def __init__(
        self,
        root: Path,
        *,
        env: Mapping[str, str] | None = None,
        store: ContentStore | None = None,
    ) -> None:
        self.root = root
        self.dot = root / DOT
        self.env = os.environ if env is None else env
        self.settings = config.load(self.dot / "config.toml", self.env)
        # Resolved now: a view rooted elsewhere (rooted_at) keeps this project's database.
        self.database_url = DatabaseURL.parse(
            self.settings.database_url or DEFAULT_SQLITE, root=self.root
        )
        # Another store: the team server's, whose blobs live in a bucket.
        self.store = store or ContentStore(
            self.dot / "store", self.dot / "tmp", chunk_min=self.settings.data_chunk_min_mb << 20
        )
        self.index = LocalIndex(
            self.store, self.dot / "locks" / "index.lock", lock_timeout=self.settings.locks_timeout
        )

    @classmethod
    def open(
        cls, start: str | Path | None = None, *, env: Mapping[str, str] | None = None
    ) -> Workspace:
        """Open the project containing ``start`` (default: the current directory)."""
        here = Path(start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            dot = candidate / DOT
            if (dot / "store" / "oci-layout").is_file():
                ws = cls(candidate, env=env)
                ws.store.check_layout()
                return ws
            if (dot / "config.toml").is_file():
                # A fresh clone: the committed settings are here, the local store and
                # database (never committed) are not yet. The first command makes them.
                for sub in ("tmp", "cache", "locks"):
                    (dot / sub).mkdir(parents=True, exist_ok=True)
                ContentStore.create(dot / "store", dot / "tmp")
                return cls(candidate, env=env)
        raise WorkspaceError(
            f"no tether project at {here} or above",
            hint="run 'tether init' in the project's root folder",
        )

    def rooted_at(self, root: Path) -> Workspace:
        """This project's store, database and settings, with files recorded relative to
        ``root``: a reproduction runs in a rebuilt copy of the project elsewhere and its
        run must name files as the original did."""
        view = copy.copy(self)
        view.root = root
        return view

    @cached_property
    def db(self) -> Database:
        database = open_database(self.database_url)
        try:
            ensure_current(database)
        except BaseException:
            database.close()
            raise
        return database

    @cached_property
    def stat_cache(self) -> StatCache:
        return StatCache(self.dot / "cache" / "stat.db")

    @property
    def own_paths(self) -> list[Path]:
        """Folders tether itself reads and writes while a run is recorded (the project's
        .tether/, the user settings): never a run's inputs or outputs."""
        return [self.dot, config.user_config_path(self.env).parent]

    @property
    def user(self) -> str:
        try:
            return getpass.getuser()
        except Exception:  # no passwd entry in some containers
            return str(os.getuid())

    @contextlib.contextmanager
    def lock(
        self, name: str, *, shared: bool = False, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        with file_lock(
            self.dot / "locks" / f"{name}.lock",
            shared=shared,
            timeout=self.settings.locks_timeout,
            on_wait=on_wait,
        ):
            yield

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.close()
        if "stat_cache" in self.__dict__:
            self.stat_cache.close()


@dataclass(frozen=True)
class InitReport:
    root: Path
    created: bool  # False when .tether/ already existed
    gitignore_added: tuple[str, ...]
    migrations: tuple[str, ...]
    kitfile: Path | None  # the Kitfile proposed now; None when one existed or none was asked
    kitfile_existing: Path | None


def init_workspace(
    root: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    propose_kitfile: bool = True,
    database_url: str | None = None,
) -> InitReport:
    """Create ``.tether/`` in ``root`` (or repair a partial one) and propose a Kitfile
    when the folder has none. Safe to re-run: nothing existing is overwritten.

    ``database_url`` (no password: the file is committed) is written to the settings
    and its database is created or brought up to date."""
    from tether.manifest import KITFILE_NAMES
    from tether.manifest.propose import propose

    root = Path(root).resolve()
    if not root.is_dir():
        raise WorkspaceError(f"{root} is not a directory", hint="create it first, or cd into it")
    dot = root / DOT
    created = not dot.exists()
    for sub in ("tmp", "cache", "locks"):
        (dot / sub).mkdir(parents=True, exist_ok=True)
    cfg = dot / "config.toml"
    if not cfg.exists():
        write_atomic(cfg, config.DEFAULT_CONFIG_TOML.encode(), tmp_dir=dot / "tmp")
    if database_url is not None:
        _set_database_url(cfg, database_url, root, tmp_dir=dot / "tmp")
    ContentStore.create(dot / "store", dot / "tmp")
    settings = config.load(cfg, os.environ if env is None else env)
    database = open_database(DatabaseURL.parse(settings.database_url or DEFAULT_SQLITE, root=root))
    try:
        applied = migrate(database)
    finally:
        database.close()
    added = _ensure_gitignore(root, dot / "tmp")
    existing = next((root / n for n in KITFILE_NAMES if (root / n).is_file()), None)
    proposed = None
    if propose_kitfile and existing is None:
        proposed = root / "Kitfile"
        text = "# Proposed by 'tether init': check it, then 'tether pack -t NAME:TAG'.\n"
        write_atomic(proposed, (text + propose(root).to_yaml()).encode(), tmp_dir=dot / "tmp")
    return InitReport(root, created, tuple(added), tuple(applied), proposed, existing)


def _set_database_url(cfg: Path, url: str, root: Path, *, tmp_dir: Path) -> None:
    import tomlkit

    from tether.db.url import check_no_password

    check_no_password(url, "--db")
    DatabaseURL.parse(url, root=root)  # refuse what does not parse before writing it
    doc = tomlkit.parse(cfg.read_text(encoding="utf-8"))
    table = doc.setdefault("database", tomlkit.table())
    table["url"] = url
    write_atomic(cfg, tomlkit.dumps(doc).encode(), tmp_dir=tmp_dir)


@dataclass(frozen=True)
class MigrateReport:
    database: str  # the URL, without a password
    dialect: str
    applied: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"database": self.database, "dialect": self.dialect, "applied": list(self.applied)}


def migrate_database(ws: Workspace) -> MigrateReport:
    """Bring the project's database to this tether's schema (``tether migrate``)."""
    database = open_database(ws.database_url)
    try:
        applied = migrate(database)
    finally:
        database.close()
    return MigrateReport(ws.database_url.display, ws.database_url.dialect, tuple(applied))


def _ensure_gitignore(root: Path, tmp_dir: Path) -> list[str]:
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [e for e in GITIGNORE_ENTRIES if e not in present]
    if missing:
        if text and not text.endswith("\n"):
            text += "\n"
        text += "# tether: local store, database and caches (config.toml is committed)\n"
        text += "".join(f"{e}\n" for e in missing)
        write_atomic(path, text.encode(), tmp_dir=tmp_dir)
    return missing
