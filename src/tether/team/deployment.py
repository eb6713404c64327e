"""A deployment of the team server: one PostgreSQL database and one blob folder, shared
by every server process (they keep no state of their own).

Layout::

    database                      schema tether_team   users, tokens, projects, grants, audit
                                  schema p_NAME        one project's runs, data pointers,
                                                       models (the tables of a project)
    BLOBS/projects/NAME/.tether/  the project's content store (blobs by digest, the OCI
                                  layout of its ModelKits)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tether.db.connection import Database, open_database
from tether.db.migrations import TEAM_SCHEMA, ensure_current
from tether.db.url import SCHEMA_NAME, DatabaseURL
from tether.errors import ConfigError, UsageError
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


@dataclass
class Deployment:
    database_url: str  # postgresql://…, password from the environment when it has one
    blobs: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _team: Database | None = field(default=None, init=False, repr=False)
    _projects: dict[str, Workspace] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
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
        self.blobs = self.blobs.resolve()

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
        return self.blobs / "projects" / check_project_name(name)

    def project(self, name: str) -> Workspace:
        """The project's workspace: its schema and its folder (made by ``create``)."""
        with self._lock:
            found = self._projects.get(name)
            if found is None:
                env = {**self.env, "TETHER_DATABASE_URL": self._url(f"p_{name}")}
                found = Workspace(self.project_root(name), env=env)
                self._projects[name] = found
            return found

    def create(self, name: str) -> Workspace:
        """Make the project's folder and schema (idempotent)."""
        from tether.workspace import init_workspace

        root = self.project_root(name)
        root.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "TETHER_DATABASE_URL": self._url(f"p_{name}")}
        init_workspace(root, env=env, propose_kitfile=False)
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
