"""The layering DESIGN §4 promises, checked on the source: faces call the library and
never a repository or a database driver; only repositories (and the database boundary
itself) execute SQL."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import click

from tether.cli import cli

SRC = Path(__file__).resolve().parent.parent / "src" / "tether"
FORBIDDEN_IN_FACES = (
    "tether.repositories",
    "tether.db",
    "sqlite3",
    "psycopg",
    # Registry connections are opened by use cases (tether.api), which decide between
    # the store and the registry; a face only passes NetworkOptions.
    "tether.oci.client",
    "tether.oci.session",
    "tether.modelkit.remote",
    "tether.registry.remote",
)
# Statements; a domain may still open a transaction (db.atomic(), db.snapshot()) around
# several repository calls that one rule needs under one lock.
SQL_CALLS = {"execute", "executemany", "query", "insert_many"}
# The database boundary, the repositories, and the machine-local stat cache (always a
# SQLite file under .tether/cache/, not project metadata).
SQL_ALLOWED = ("db/", "repositories/", "store/statcache.py")


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}".strip()
        out.append((path, command))
        if isinstance(command, click.Group):
            out += _commands(command, path)
    return out


def test_no_command_imports_a_repository_a_database_driver_or_a_registry_client() -> None:
    commands = _commands(cli)
    assert len(commands) > 40
    offenders = []
    for path, command in commands:
        callback = command.callback
        assert callback is not None, path
        function = inspect.unwrap(callback)
        module = inspect.getmodule(function)
        assert module is not None
        used = _imports(ast.parse(textwrap.dedent(inspect.getsource(function))))
        used |= _imports(ast.parse(inspect.getsource(module)))
        bad = sorted(u for u in used if u.startswith(FORBIDDEN_IN_FACES))
        if bad:
            offenders.append(f"tether {path}: {', '.join(bad)}")
    assert not offenders, "\n".join(offenders)


def test_only_repositories_touch_the_database() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(SQL_ALLOWED):
            continue
        tree = ast.parse(path.read_text(), filename=rel)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_CALLS
                and (
                    (isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "db")
                    or (isinstance(node.func.value, ast.Name) and node.func.value.id == "conn")
                )
            ):
                offenders.append(f"{rel}:{node.lineno}: .{node.func.attr}(…)")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.lstrip().upper()
                if text.startswith(("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM")):
                    offenders.append(f"{rel}:{node.lineno}: SQL text")
        if {"sqlite3", "psycopg"} & _imports(tree):
            offenders.append(f"{rel}: imports a database driver")
    assert not offenders, "\n".join(offenders)
