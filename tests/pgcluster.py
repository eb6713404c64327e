"""A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's ``postgresql`` binaries), for
the suite's PostgreSQL pass and the benchmarks. As root it runs as the ``postgres``
user, since ``initdb`` refuses root."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return versions[0].parent if versions else None


@dataclass(frozen=True)
class Cluster:
    host: str
    port: int
    user: str
    pg_ctl: tuple[str, ...] = ()  # the command that controls it, up to "-D DATA"
    options: str = ""

    def restart(self, down_s: float) -> None:
        """Stop the server (its clients' connections drop), stay down ``down_s``
        seconds, start it again on the same port."""
        quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        subprocess.run([*self.pg_ctl, "-m", "fast", "-w", "stop"], **quiet)  # type: ignore[call-overload]
        time.sleep(down_s)
        subprocess.run([*self.pg_ctl, "-w", "-o", self.options, "start"], **quiet)  # type: ignore[call-overload]

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def cluster(base: Path, *, durable: bool = False) -> Iterator[Cluster]:
    """Start a cluster in ``base`` (removed by the caller); stop it on exit. Not
    ``durable``: fsync off, as for any test database."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = base / "data"
    base.mkdir(parents=True, exist_ok=True)
    if as_root:
        shutil.chown(base, "postgres")
        base.chmod(0o700)
    run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "tether", "-A", "trust"],
        **run,  # type: ignore[call-overload]
    )
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {base} -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    pg_ctl = (*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"))
    subprocess.run([*pg_ctl, "-w", "-o", options, "start"], **run)  # type: ignore[call-overload]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Cluster("127.0.0.1", port, "tether", pg_ctl, options)
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
