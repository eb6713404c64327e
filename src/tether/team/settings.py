"""The team server's settings: command line, then ``TETHER_SERVER_*`` variables, then a
TOML file (``--config FILE`` or ``TETHER_SERVER_CONFIG``), then defaults::

    # /etc/tether/server.toml
    db = "postgresql://tether@db.internal/tether"   # password: PGPASSWORD or ~/.pgpass
    blobs = "s3://ml-blobs/tether"                  # or a folder every process mounts
    host = "0.0.0.0"
    port = 8080
    workers = 4
    cache = "/var/cache/tether"                     # with a bucket: the local cache
    part_mb = 64                                    # size of an upload's parts

Secrets never come from the command line (it lands in shell history and process
lists): a database password belongs in the environment, ``~/.pgpass``, or this file
(readable by the server's account only).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from tether.errors import ConfigError

# Each setting: its type, and for numbers the range it must fall in.
SETTINGS: dict[str, tuple[type, tuple[int, int] | None]] = {
    "db": (str, None),
    "blobs": (str, None),
    "host": (str, None),
    "port": (int, (0, 65535)),
    "workers": (int, (1, 64)),
    "cache": (str, None),
    "part_mb": (int, (5, 5120)),
}


def read_file(path: Path) -> dict[str, Any]:
    """The settings a file sets, each checked; an unknown key is refused (a typo would
    otherwise be silently ignored)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no settings file {path}", hint="check --config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not TOML: {e}", hint="fix the file") from None
    for key, value in data.items():
        if key not in SETTINGS:
            raise ConfigError(
                f"{path}: unknown setting {key!r}", hint=f"settings: {', '.join(SETTINGS)}"
            )
        kind, bounds = SETTINGS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            example = "8080" if kind is int else '"…"'
            raise ConfigError(f"{path}: {key} is a {kind.__name__}", hint=f"e.g. {key} = {example}")
        if bounds is not None and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
            raise ConfigError(
                f"{path}: {key} is between {bounds[0]} and {bounds[1]}", hint="fix the file"
            )
    return data
