"""A deployment of the team server: one PostgreSQL database and one place for blobs (a
folder every server process mounts, or an S3-compatible bucket), shared by every server
process (they keep no state of their own).

Layout::

    database                      schema tether_team   users, tokens, projects, grants,
                                                       audit, the ledger of bucket blobs
                                  schema p_NAME        one project's runs, data pointers,
                                                       models (the tables of a project)
    BLOBS/projects/NAME/.tether/  with a folder: the project's content store (blobs by
                                  digest, the OCI layout of its ModelKits)
    s3://BUCKET/PREFIX/projects/NAME/…   with a bucket: its blobs (store/bucket.py), and
    CACHE/projects/NAME/.tether/  a disposable local cache of them on each server machine
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.db.connection import Database, open_database
from tether.db.migrations import TEAM_SCHEMA, ensure_current
from tether.db.url import SCHEMA_NAME, DatabaseURL
from tether.errors import ConfigError, UsageError
from tether.store.bucket import BucketURL
from tether.workspace import Workspace

PROJECT_NAME = SCHEMA_NAME  # a project's name is its schema's, less the "p_"


def check_command_line_url(text: str) -> str:
    """A URL typed on a command line (it lands in shell history and process lists):
    refused with a password in it."""
    from tether.db.url import check_no_password

    check_no_password(text, "--db")
    return text


def check_project_name(name: str) -> str:
    if not PROJECT_NAME.fullmatch(name) or len(name) > 60:
        raise UsageError(
            f"{name[:60]!r} is not a project name",
            hint="lower-case letters, digits and _, starting with a letter (e.g. recs)",
        )
    return name


def default_cache(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tether" / "server"


@dataclass
class Deployment:
    database_url: str  # postgresql://…, password from the environment when it has one
    blobs: str | Path  # a folder, or s3://BUCKET[/PREFIX]
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cache: Path | None = None  # with a bucket: the local cache (default: XDG cache)
    part_mb: int = 64  # with a bucket: the size of an upload's parts
    root: Path = field(init=False)  # where the projects' folders are
    bucket_url: BucketURL | None = field(default=None, init=False)
    _s3: Any = field(default=None, init=False, repr=False)
    _team: Database | None = field(default=None, init=False, repr=False)
    _projects: dict[str, Workspace] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if str(self.blobs).startswith("s3://"):
            self.bucket_url = BucketURL.parse(str(self.blobs))
            self.root = (self.cache or default_cache(self.env)).resolve()
        else:
            if "://" in str(self.blobs):
                raise ConfigError(
                    f"{str(self.blobs)[:80]!r} is not a place for blobs",
                    hint="give --blobs DIR or --blobs s3://BUCKET[/PREFIX]",
                )
            self.blobs = self.root = Path(self.blobs).resolve()
        url = DatabaseURL.parse(self.database_url, root=Path("/"))
        if url.dialect != "postgresql":
            raise ConfigError(
                "the team server keeps its metadata in PostgreSQL",
                hint="give --db postgresql://[USER@]HOST[:PORT]/DBNAME",
            )
        if url.schema is not None:
            raise ConfigError(
                "the server's database URL names a schema",
                hint="leave ?schema= out: the server makes one per project",
            )

    def _url(self, schema: str) -> str:
        sep = "&" if "?" in self.database_url else "?"
        return f"{self.database_url}{sep}schema={schema}"

    @property
    def team(self) -> Database:
        """The server's own tables (created on first use, then only checked)."""
        with self._lock:
            if self._team is None:
                db = open_database(DatabaseURL.parse(self._url(TEAM_SCHEMA), root=Path("/")))
                try:
                    ensure_current(db)
                except BaseException:
                    db.close()
                    raise
                self._team = db
            return self._team

    def project_root(self, name: str) -> Path:
        return self.root / "projects" / check_project_name(name)

    @property
    def s3(self) -> Any:
        """The bucket's client (one, thread-safe, for every project)."""
        from tether.store.bucket import check_reachable, s3_client

        assert self.bucket_url is not None
        with self._lock:
            if self._s3 is None:
                client = s3_client(self.env)
                check_reachable(client, self.bucket_url)
                self._s3 = client
            return self._s3

    def project(self, name: str) -> Workspace:
        """The project's workspace: its schema and its folder (made by ``create``; with a
        bucket, the folder is a cache, made again wherever it is missing)."""
        with self._lock:
            found = self._projects.get(name)
        if found is not None:
            return found
        root = self.project_root(name)
        store = None
        if self.bucket_url is not None:
            from tether.store.bucket import Bucket, BucketStore

            if not (root / ".tether" / "config.toml").is_file():
                self._init(name)
            bucket = Bucket(self.s3, self.bucket_url, name, part_size=self.part_mb << 20)
            dot = root / ".tether"
            store = BucketStore(dot / "store", dot / "tmp", bucket, _Ledger(self, name))
        env = {**self.env, "TETHER_DATABASE_URL": self._url(f"p_{name}")}
        made = Workspace(root, env=env, store=store)
        with self._lock:
            # Two threads may have made one each: the first kept is everyone's.
            return self._projects.setdefault(name, made)

    def _init(self, name: str) -> None:
        from tether.workspace import init_workspace

        root = self.project_root(name)
        root.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "TETHER_DATABASE_URL": self._url(f"p_{name}")}
        init_workspace(root, env=env, propose_kitfile=False)

    def create(self, name: str) -> Workspace:
        """Make the project's folder and schema (idempotent)."""
        self._init(name)
        ws = self.project(name)
        ws.db  # noqa: B018 - opening creates the schema's tables
        return ws

    def migrate(self) -> dict[str, list[str]]:
        """Bring the server's schema, then every project's, up to this tether (after an
        upgrade; servers answer /readyz 503 until then). Safe to re-run and beside
        running servers: each migration applies once, under the schema's lock. Returns
        the migrations applied now, by schema."""
        from tether.db.migrations import migrate
        from tether.repositories import team as repo

        applied: dict[str, list[str]] = {}
        schemas = [TEAM_SCHEMA]
        with self._lock:
            if self._team is not None:
                self._team.close()
                self._team = None
        for schema in schemas:
            db = open_database(DatabaseURL.parse(self._url(schema), root=Path("/")))
            try:
                applied[schema] = migrate(db)
                if schema == TEAM_SCHEMA:
                    schemas += [f"p_{name}" for name in repo.projects(db)]
            finally:
                db.close()
        return applied

    def close(self) -> None:
        with self._lock:
            for ws in self._projects.values():
                ws.close()
            self._projects.clear()
            if self._team is not None:
                self._team.close()
                self._team = None


@dataclass(frozen=True)
class _Ledger:
    """A project's record of the blobs verified into the bucket (store/bucket.py)."""

    team: Deployment
    project: str

    def record(self, digest: str, size: int) -> None:
        import time

        from tether.repositories import team as repo

        repo.record_blob(self.team.team, self.project, digest, size, at=time.time())

    def sizes(self, digests: list[str]) -> dict[str, int]:
        from tether.repositories import team as repo

        return repo.blob_sizes(self.team.team, self.project, digests) if digests else {}
