"""Which database a project uses, named by URL.

``sqlite:///.tether/tether.db`` (the default; a relative path is under the project root,
``sqlite:////abs/path`` is absolute) or ``postgresql://[user@]host[:port]/dbname``, with
``?schema=NAME`` to keep a project's tables in a schema of a shared database (the team
server keeps each project in one).
The URL comes from ``TETHER_DATABASE_URL``, else ``[database] url`` in the settings.
A password never belongs in a settings file (the project's is committed): it comes
from the environment variable, from ``PGPASSWORD`` or from ``~/.pgpass``, which libpq
reads itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tether.errors import ConfigError

Dialect = Literal["sqlite", "postgresql"]
DEFAULT_SQLITE = "sqlite:///.tether/tether.db"
SCHEMA_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_HINT = "use sqlite:///PATH or postgresql://[USER@]HOST[:PORT]/DBNAME (see docs/database.md)"


@dataclass(frozen=True)
class DatabaseURL:
    dialect: Dialect
    url: str  # as given, password included when the environment supplied one
    path: Path | None = None  # sqlite only, resolved against the project root
    schema: str | None = None  # postgresql only: the schema the tables live in

    @classmethod
    def parse(cls, text: str, *, root: Path) -> DatabaseURL:
        text = text.strip()
        scheme, _, rest = text.partition("://")
        scheme = scheme.lower()
        if scheme == "sqlite":
            if not rest.startswith("/") or rest == "/":
                raise ConfigError(f"database URL {text!r} names no file", hint=_HINT)
            path = Path(rest[1:])
            return cls("sqlite", text, path if path.is_absolute() else root / path)
        if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            parts = urlsplit(text)
            if not parts.path.strip("/"):
                raise ConfigError(
                    f"database URL {cls.redact(text)!r} names no database", hint=_HINT
                )
            # libpq reads postgresql:// and postgres://, nothing with a driver suffix;
            # 'schema' is ours, not libpq's, so it leaves the URL libpq sees.
            query = parse_qsl(parts.query, keep_blank_values=True)
            schemas = [v for k, v in query if k == "schema"]
            if schemas and not SCHEMA_NAME.fullmatch(schemas[-1]):
                raise ConfigError(
                    f"{schemas[-1][:40]!r} is not a schema name",
                    hint="lower-case letters, digits and _, starting with a letter",
                )
            rest = urlencode([(k, v) for k, v in query if k != "schema"])
            url = urlunsplit(("postgresql", parts.netloc, parts.path, rest, parts.fragment))
            return cls("postgresql", url, schema=schemas[-1] if schemas else None)
        raise ConfigError(f"unsupported database URL {cls.redact(text)!r}", hint=_HINT)

    @property
    def display(self) -> str:
        """The URL as it may be shown or logged: no password."""
        shown = self.redact(self.url)
        if self.schema is None:
            return shown
        return shown + ("&" if "?" in shown else "?") + f"schema={self.schema}"

    @staticmethod
    def redact(text: str) -> str:
        parts = urlsplit(text)
        if parts.password is None:
            return text
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit((parts.scheme, netloc, *parts[2:]))


def check_no_password(text: str, where: str) -> None:
    """Refuse a URL with a password in a settings file or on a command line that writes one."""
    if "://" in text and urlsplit(text).password is not None:
        raise ConfigError(
            f"{where}: the database URL carries a password",
            hint="keep it out of files: set TETHER_DATABASE_URL or PGPASSWORD, or use ~/.pgpass",
        )
