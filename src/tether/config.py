"""Typed settings, resolved when asked and never at import.

Precedence, lowest first: built-in defaults < user file
(``$XDG_CONFIG_HOME/tether/config.toml``, default ``~/.config/tether/config.toml``)
< project file ``.tether/config.toml`` < ``TETHER_*`` environment variables <
explicit arguments. Files use the same keys as ``DEFAULT_CONFIG_TOML`` below.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tether.errors import ConfigError

DEFAULT_CONFIG_TOML = """\
# tether project settings (committed with the project). See docs/configuration.md.

[pack]
# Layer compression: "none" (fastest, and digests are stable everywhere), "gzip" or "zstd".
compression = "none"

[tags]
# Tags matching this pattern are versions: immutable unless moved with --force.
immutable = '^v?[0-9]+(\\.[0-9]+)*([-+][0-9A-Za-z.+-]*)?$'

[unpack]
# Refuse layers that would write more than this many bytes or files (decompression bombs).
max_bytes = 1099511627776
max_files = 2000000
# Refuse a compressed layer that expands more than this many times its size (past 16 MiB).
max_ratio = 200

[run]
# Set SOURCE_DATE_EPOCH to the run's start (when it is not set already), so writers that
# honour it (matplotlib's PDF/PS/SVG, archivers, build tools) embed the same date when
# the run is reproduced; 'tether reproduce' gives the reproduction the recorded value.
source_date_epoch = true

[database]
# Where runs, tags and the model registry are recorded (blobs stay in the store).
# Unset: SQLite in .tether/tether.db (or the url of your user settings). For a team:
# url = "postgresql://USER@HOST:PORT/DBNAME"
# Never put a password here (this file is committed): use TETHER_DATABASE_URL,
# PGPASSWORD or ~/.pgpass. See docs/database.md.

[locks]
# Seconds to wait for another tether process before giving up.
timeout = 600

[checkout]
# How 'tether checkout' and 'tether data pull' place files, first that works wins:
# reflink (copy-on-write clone), copy, or hardlink. A hardlink shares the store's
# read-only file: instant and no extra space, but a write through it (root ignores the
# read-only bit; some editors write in place) corrupts the store, so it is opt-in:
# "reflink,hardlink,copy".
link = "reflink,copy"

[data]
# The remote 'tether data push/pull' use when -r is not given ('tether remote add --default').
remote = ""

[registry]
# Registries spoken to over plain HTTP (no TLS), comma-separated host[:port]. Only for
# registries on a trusted network, e.g. "127.0.0.1:5000". Same as --plain-http.
plain_http = ""
# Blobs transferred at once by push and pull.
concurrency = 4
# Token services (host:port, comma-separated) that may receive your registry credential
# although they are not the registry's own origin, e.g. a token server on another port.
token_realms = ""
"""


@dataclass(frozen=True)
class Settings:
    pack_compression: str = "none"
    tags_immutable: str = r"^v?[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.+-]*)?$"
    unpack_max_bytes: int = 1 << 40
    unpack_max_files: int = 2_000_000
    unpack_max_ratio: int = 200
    locks_timeout: float = 600.0
    database_url: str = ""
    run_source_date_epoch: int = 1
    checkout_link: str = "reflink,copy"
    data_remote: str = ""
    data_chunk_min_mb: int = 8
    registry_plain_http: str = ""
    registry_concurrency: int = 4
    registry_token_realms: str = ""

    @property
    def link_order(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.checkout_link.split(",") if m.strip())

    def is_plain_http(self, registry: str) -> bool:
        return registry in {h.strip() for h in self.registry_plain_http.split(",")}

    @property
    def token_realms(self) -> frozenset[str]:
        return frozenset(
            h.strip().lower() for h in self.registry_token_realms.split(",") if h.strip()
        )

    def is_version_tag(self, tag: str) -> bool:
        return re.match(self.tags_immutable, tag) is not None


_ENV = {
    "TETHER_PACK_COMPRESSION": "pack_compression",
    "TETHER_TAGS_IMMUTABLE": "tags_immutable",
    "TETHER_UNPACK_MAX_BYTES": "unpack_max_bytes",
    "TETHER_UNPACK_MAX_FILES": "unpack_max_files",
    "TETHER_UNPACK_MAX_RATIO": "unpack_max_ratio",
    "TETHER_LOCK_TIMEOUT": "locks_timeout",
    "TETHER_DATABASE_URL": "database_url",
    "TETHER_RUN_SOURCE_DATE_EPOCH": "run_source_date_epoch",
    "TETHER_CHECKOUT_LINK": "checkout_link",
    "TETHER_DATA_REMOTE": "data_remote",
    "TETHER_DATA_CHUNK_MIN_MB": "data_chunk_min_mb",
    "TETHER_REGISTRY_PLAIN_HTTP": "registry_plain_http",
    "TETHER_REGISTRY_CONCURRENCY": "registry_concurrency",
    "TETHER_REGISTRY_TOKEN_REALMS": "registry_token_realms",
}


def user_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "tether" / "config.toml"


def user_cache_dir(env: Mapping[str, str]) -> Path:
    """Where tether keeps what it can rebuild and shares between projects (recreated
    environments): ``$TETHER_CACHE_DIR``, else ``$XDG_CACHE_HOME/tether``."""
    if env.get("TETHER_CACHE_DIR"):
        return Path(env["TETHER_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return Path(base) / "tether"


def load(
    project_config: Path | None, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Resolve settings from every source in precedence order."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for path in (user_config_path(env), project_config):
        if path is not None and path.is_file():
            values.update(_read_toml(path))
    for var, key in _ENV.items():
        if var in env:
            values[key] = env[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _build(values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax") from None
    out: dict[str, Any] = {}
    known = {f.name for f in fields(Settings)}
    for section, table in doc.items():
        if section == "remote":
            continue  # [remote.NAME] tables belong to data/remote.py
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: '{section}' must be a [table]", hint="see docs/configuration.md"
            )
        for key, value in table.items():
            name = f"{section}_{key}"
            if name not in known:
                raise ConfigError(
                    f"{path}: unknown setting {section}.{key}",
                    hint="see docs/configuration.md for the settings",
                )
            out[name] = value
    if "database_url" in out:
        from tether.db.url import check_no_password

        check_no_password(str(out["database_url"]), str(path))
    return out


def _build(values: dict[str, Any]) -> Settings:
    settings = Settings()
    types = {f.name: f.type for f in fields(Settings)}
    converted: dict[str, Any] = {}
    for key, value in values.items():
        kind = types[key]
        try:
            if kind == "int":
                converted[key] = int(value)
            elif kind == "float":
                converted[key] = float(value)
            else:
                converted[key] = str(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"setting {key.replace('_', '.', 1)} = {value!r} is not a {kind}",
                hint="see docs/configuration.md",
            ) from None
    settings = replace(settings, **converted)
    if settings.data_chunk_min_mb < 0:
        raise ConfigError(
            f"data.chunk_min_mb = {settings.data_chunk_min_mb} is negative",
            hint="give a size in MiB from which files are chunked, or 0 to keep files whole",
        )
    if settings.pack_compression not in ("none", "gzip", "zstd"):
        raise ConfigError(
            f"pack.compression = {settings.pack_compression!r} is not supported",
            hint="use none, gzip or zstd",
        )
    links = settings.link_order
    if not links or any(m not in ("reflink", "hardlink", "copy") for m in links):
        raise ConfigError(
            f"checkout.link = {settings.checkout_link!r} is not supported",
            hint="use a comma-separated order of reflink, hardlink and copy",
        )
    try:
        re.compile(settings.tags_immutable)
    except re.error as exc:
        raise ConfigError(
            f"tags.immutable is not a valid regular expression: {exc}",
            hint="see docs/configuration.md",
        ) from None
    return settings
