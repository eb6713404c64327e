"""The model registry: models, their numbered versions and movable aliases.

A model is a repository of the local store; version N is an immutable ModelKit digest,
tagged ``NAME:vN``; an alias (``production``, ``staging``) is a movable tag
``NAME:ALIAS``. The database is the record (tables ``models``, ``model_versions``,
``model_aliases``, ``model_events``); the tags mirror it so that ``tether unpack
NAME:production`` and ``tether push`` work on registry names like any other.

Every change runs in one ``BEGIN IMMEDIATE`` transaction that also rewrites the tags,
so two processes moving the same alias serialize: both moves land in the history in
the order they happened, the alias and its tag end at the later one, nothing is lost.
Versions are never deleted, only archived: their number is never reused and lineage
can always name them.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tether.db.connection import Connection
from tether.errors import (
    ModelError,
    ModelKitNotFound,
    ModelNotFound,
    ReferenceFormatError,
    RunNotFound,
    TagConflict,
    UsageError,
)
from tether.hashing import Digest
from tether.oci.layout import IndexEntry
from tether.oci.reference import Reference, parse_reference
from tether.registry.records import ModelAction, ModelEvent, ModelSummary, ModelVersion
from tether.reporting import Callbacks
from tether.repositories import models as repo
from tether.workspace import Workspace

if TYPE_CHECKING:
    from tether.modelkit.unpack import UnpackReport
    from tether.runs.record import RunRecord

_VERSION = re.compile(r"^v?([1-9][0-9]{0,8})$")
_ALIAS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Registered:
    version: ModelVersion
    created: bool  # False: that ModelKit already was a version of the model
    packed: bool = False  # True: packed from a run for this registration
    warnings: tuple[str, ...] = ()


# -- naming ------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """A model name is a local repository name: ``movie-recommend``, ``team/recs``."""
    try:
        ref = parse_reference(name, default_tag=False)
    except ReferenceFormatError:
        ref = None
    if ref is None or ref.registry or ref.tag or ref.digest or ref.repository != name:
        raise UsageError(
            f"{name[:80]!r} is not a model name",
            hint="use lowercase letters, digits, '.', '_', '-' and '/', e.g. movie-recommend",
        )
    return name


def check_alias(ws: Workspace, alias: str) -> str:
    if not _ALIAS.match(alias) or _VERSION.match(alias) or ws.settings.is_version_tag(alias):
        raise UsageError(
            f"{alias[:80]!r} cannot be an alias",
            hint="an alias is a movable name such as production or staging; "
            "names like v2 or 1.0 are versions",
        )
    return alias


def split_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``NAME`` | ``NAME@vN`` | ``NAME@N`` | ``NAME@sha256:…`` | ``NAME:ALIAS`` →
    (name, version selector, alias)."""
    if "@" in spec:
        name, _, selector = spec.partition("@")
        return name, selector, None
    if ":" in spec:
        name, _, alias = spec.rpartition(":")
        return name, None, alias
    return spec, None, None


# -- reading -----------------------------------------------------------------------------


def list_models(ws: Workspace) -> list[ModelSummary]:
    with ws.db.snapshot() as conn:
        rows = repo.summaries(conn)
        aliases = repo.all_aliases(conn)
    return [
        ModelSummary(r.name, r.versions, r.latest, aliases.get(r.name, {}), r.remote) for r in rows
    ]


def versions(ws: Workspace, name: str) -> list[ModelVersion]:
    with ws.db.snapshot() as conn:
        _require_model(conn, check_name(name))
        return repo.versions(conn, name)


def resolve(ws: Workspace, spec: str, version: str | None = None) -> ModelVersion:
    """The version ``spec`` names: ``NAME`` (its latest), ``NAME@v3``, ``NAME:production``
    or ``NAME@sha256:…``; or ``spec`` a bare NAME and ``version`` one of ``v3``, ``3``,
    ``production``, ``sha256:…`` (as typed: ``tether model show recs v3``). Archived
    versions resolve too."""
    if version is not None:
        if any(c in spec for c in "@:"):
            raise UsageError(
                f"{spec!r} already names a version; {version!r} is one too many",
                hint="write NAME VERSION or NAME@vN / NAME:ALIAS, not both",
            )
        spec = _qualified(spec, version)
    with ws.db.snapshot() as conn:
        return _resolve(conn, spec)


def history(ws: Workspace, name: str, alias: str | None = None) -> list[ModelEvent]:
    with ws.db.snapshot() as conn:
        _require_model(conn, check_name(name))
        return repo.events(conn, name, alias)


# -- changing ----------------------------------------------------------------------------


def register(
    ws: Workspace,
    name: str,
    source: str,
    *,
    description: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Registered:
    """Make the ModelKit ``source`` names (a local REF), or a ModelKit packed from the run
    ``source`` names (id or name), the next version of ``name``. Registering a ModelKit
    that already is a version of the model returns that version."""
    check_name(name)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn is not None:
            warn(message)

    entry, run_id, packed = _source(ws, source, note, model=name)
    made = register_kit(ws, name, entry, KitSource(source, run_id, description))
    return Registered(made.version, made.created, packed, tuple(warnings))


@dataclass(frozen=True)
class KitSource:
    text: str  # as recorded: a reference, a run, an MLflow URI
    run_id: str | None
    description: str | None = None
    # Imported history keeps its own: the version's number (above every number the model
    # has used), when it was made and by whom.
    number: int | None = None
    created: float | None = None
    user: str | None = None


def register_kit(ws: Workspace, name: str, entry: IndexEntry, source: KitSource) -> Registered:
    """Make the ModelKit ``entry`` (in the local store) the next version of ``name``; the
    version it already is, if so."""
    check_name(name)
    with ws.db.atomic() as conn:
        existing = repo.version_of_digest(conn, name, str(entry.digest))
        if existing is not None and source.number is None:
            return Registered(_resolve(conn, f"{name}@v{existing}"), False)
        number = repo.next_number(conn, name)
        if source.number is not None:
            if source.number < number:
                raise ModelError(
                    f"{name} already has a version {source.number} or above",
                    hint=f"see 'tether model versions {name}'",
                )
            number = source.number
        repo.add_version(
            conn,
            ModelVersion(name, number, entry.digest, source.run_id, source.text,
                         source.created or time.time(), source.user or ws.user,
                         source.description),
        )  # fmt: skip
        _event(conn, ws, name, None, "register", None, number, source.description)
        _tag(ws, name, f"v{number}", entry, immutable=True)
        return Registered(_resolve(conn, f"{name}@v{number}"), True)


def create_model(ws: Workspace, name: str) -> bool:
    """An empty model, to which versions come later (MLflow's order); False if it exists."""
    check_name(name)
    with ws.db.atomic() as conn:
        return repo.add_model(conn, name, time.time(), ws.user)


def set_alias(
    ws: Workspace, name: str, alias: str, version: str, *, reason: str | None = None
) -> ModelEvent | None:
    """Point ``alias`` at ``version`` (``v2``, ``2``, ``sha256:…``, another alias);
    None when it already points there (nothing is recorded)."""
    check_name(name)
    check_alias(ws, alias)
    with ws.db.atomic() as conn:
        target = _resolve(conn, _qualified(name, version))
        return _move(conn, ws, target, alias, "set", reason)


def remove_alias(ws: Workspace, name: str, alias: str, *, reason: str | None = None) -> ModelEvent:
    check_name(name)
    with ws.db.atomic() as conn:
        _require_model(conn, name)
        return _drop_alias(conn, ws, name, alias, _existing_alias(conn, name, alias), reason)


def rollback(
    ws: Workspace,
    name: str,
    alias: str,
    *,
    to: str | None = None,
    reason: str | None = None,
) -> ModelEvent:
    """Move ``alias`` back: to ``to``, or by default to where it pointed before its
    last move. Restoring the files is the caller's next step (``restore``)."""
    check_name(name)
    with ws.db.atomic() as conn:
        _require_model(conn, name)
        current = _existing_alias(conn, name, alias)
        if to is not None:
            target = _resolve(conn, _qualified(name, to))
        else:
            previous = repo.previous_version(conn, name, alias)
            if previous is None:
                raise ModelError(
                    f"{name}:{alias} has pointed only at v{current}: nothing to roll back to",
                    hint=f"name the version: tether model rollback {name} {alias} --to vN",
                )
            target = _resolve(conn, f"{name}@v{previous}")
        if target.version == current:
            raise ModelError(
                f"{name}:{alias} already points at v{current}",
                hint="see 'tether model history " + name + "'",
            )
        event = _move(conn, ws, target, alias, "rollback", reason)
        assert event is not None  # target differs from current
        return event


def restore(ws: Workspace, version: ModelVersion, *, dry_run: bool = False) -> UnpackReport:
    """Put the version's files back into the project (``tether rollback`` on its kit)."""
    from tether.modelkit.unpack import rollback as restore_files

    return restore_files(ws, str(version.digest), dry_run=dry_run)


def archive(
    ws: Workspace, name: str, version: str, *, force: bool = False, reason: str | None = None
) -> tuple[ModelVersion, list[ModelEvent]]:
    """Delete a version from use: its tag goes (gc may reclaim its blobs if nothing else
    holds them) but its record stays, archived, for history and lineage. Refused while
    an alias points at it, unless ``force``, which removes those aliases (recorded)."""
    check_name(name)
    with ws.db.atomic() as conn:
        target = _resolve(conn, _qualified(name, version))
        if target.archived is not None:
            raise ModelError(f"{name} v{target.version} is already archived")
        events = []
        if target.aliases:
            if not force:
                names = ", ".join(target.aliases)
                raise ModelError(
                    f"{name} v{target.version} is what {names} points at",
                    hint=f"move the alias first (tether model alias {name} "
                    f"{target.aliases[0]} vN), or --force to remove it too",
                )
            for a in target.aliases:
                events.append(_drop_alias(conn, ws, name, a, target.version, reason))
        repo.archive(conn, name, target.version, time.time())
        events.append(_event(conn, ws, name, None, "archive", target.version, None, reason))
        _untag(ws, name, f"v{target.version}")
        return _resolve(conn, f"{name}@v{target.version}"), events


def set_remote(ws: Workspace, name: str, remote: str) -> None:
    with ws.db.atomic() as conn:
        _require_model(conn, name)
        repo.set_remote(conn, name, remote)


# -- internals ---------------------------------------------------------------------------


def _source(
    ws: Workspace, source: str, note: Callable[[str], None], *, model: str
) -> tuple[IndexEntry, str | None, bool]:
    """A local ModelKit reference, else a run: packed now from its outputs, with the
    Kitfile as the run saw it. A run that already is a version of ``model`` gives that
    version's ModelKit instead of a second one."""
    kit_error: ModelKitNotFound | ReferenceFormatError | None = None
    try:
        entry = ws.index.resolve(parse_reference(source))
    except (ModelKitNotFound, ReferenceFormatError) as exc:
        kit_error = exc
    else:
        from tether.repositories import kits

        with ws.db.snapshot() as conn:
            return entry, kits.maker(conn, str(entry.digest)), False
    from tether.modelkit.pack import pack
    from tether.repositories.runs import load_run

    try:
        run = load_run(ws.db, source)
    except RunNotFound:
        raise ModelNotFound(
            f"{source[:80]!r} is neither a ModelKit in the local store nor a run",
            hint=(kit_error.hint if kit_error and kit_error.hint else "see 'tether list'")
            + "; or 'tether runs list' for runs",
        ) from None
    if run.status != "finished":
        raise ModelError(
            f"run {run.name or run.id} {run.status}; only a finished run makes a version",
            hint="register a run that completed",
        )
    label = run.name or run.id[:12]
    with ws.db.snapshot() as conn:
        already = repo.version_made_by_run(conn, model, run.id)
    if already:
        note(
            f"run {label} already is {model}@v{already[0]}; that version is "
            "returned, not a duplicate (register a ModelKit explicitly to force one)"
        )
        digest = Digest.parse(already[1])
        return ws.index.resolve(Reference(None, digest=digest)), run.id, False
    with _kitfile_of(ws, run, note) as kitfile:
        result = pack(ws, run=run, kitfile=kitfile, report=Callbacks(on_warn=note))
    return ws.index.resolve(Reference(None, digest=result.digest)), run.id, True


@contextlib.contextmanager
def _kitfile_of(
    ws: Workspace, run: RunRecord, note: Callable[[str], None]
) -> Iterator[Path | None]:
    """The Kitfile as ``run`` saw it (from its code record), in a scratch file; None (the
    current Kitfile) when the record does not hold one."""
    from tether.manifest import KITFILE_NAMES
    from tether.runs.code import file_as_recorded

    for name in KITFILE_NAMES:
        recorded = file_as_recorded(ws.store, run.code, ws.root, name)
        if recorded is None:
            continue
        current = ws.root / name
        if current.is_file() and current.read_bytes() == recorded:
            break  # unchanged since the run: the working Kitfile is that Kitfile
        with tempfile.TemporaryDirectory(prefix="kitfile-", dir=ws.dot / "tmp") as tmp:
            path = Path(tmp) / name
            path.write_bytes(recorded)
            note(f"packed with the Kitfile as run {run.name or run.id[:12]} saw it")
            yield path
        return
    else:
        note(
            f"the record of run {run.name or run.id[:12]} holds no Kitfile; "
            "packed with the current one"
        )
    yield None


def _qualified(name: str, version: str) -> str:
    if version.startswith("sha256:") or _VERSION.match(version):
        return f"{name}@{version}"
    return f"{name}:{version}"


def _resolve(conn: Connection, spec: str) -> ModelVersion:
    name, selector, alias = split_spec(spec)
    check_name(name)
    _require_model(conn, name)
    if alias is not None:
        number = _existing_alias(conn, name, alias)
    elif selector is None:
        latest = repo.latest_in_use(conn, name)
        if latest is None:
            raise ModelNotFound(
                f"{name} has no version in use", hint=f"see 'tether model versions {name}'"
            )
        number = latest
    elif selector.startswith("sha256:"):
        found_number = repo.version_of_digest(conn, name, selector)
        if found_number is None:
            raise ModelNotFound(
                f"{selector[:19]}… is not a version of {name}",
                hint=f"see 'tether model versions {name}'",
            )
        number = found_number
    else:
        m = _VERSION.match(selector)
        if m is None:
            raise UsageError(
                f"{selector[:40]!r} is not a version", hint="write versions as v3 (or 3)"
            )
        number = int(m.group(1))
    found = repo.versions(conn, name, number)
    if not found:
        raise ModelNotFound(
            f"{name} has no version v{number}", hint=f"see 'tether model versions {name}'"
        )
    return found[0]


def _require_model(conn: Connection, name: str) -> None:
    if not repo.exists(conn, name):
        known = repo.names(conn, 8)
        raise ModelNotFound(
            f"no model {name!r}",
            hint=("models here: " + ", ".join(known))
            if known
            else f"register one: tether model register {name} --from REF|RUN",
        )


def _existing_alias(conn: Connection, name: str, alias: str) -> int:
    number = repo.alias_version(conn, name, alias)
    if number is None:
        raise ModelNotFound(f"{name} has no alias {alias!r}", hint=_aliases_hint(conn, name))
    return number


def _drop_alias(
    conn: Connection,
    ws: Workspace,
    name: str,
    alias: str,
    version: int,
    reason: str | None,
) -> ModelEvent:
    repo.drop_alias(conn, name, alias)
    event = _event(conn, ws, name, alias, "remove", version, None, reason)
    _untag(ws, name, alias)
    return event


def _aliases_hint(conn: Connection, name: str) -> str:
    names = [alias for alias, _ in repo.aliases(conn, name)]
    return (
        ("its aliases: " + ", ".join(names))
        if names
        else f"set one: tether model alias {name} production vN"
    )


def _move(
    conn: Connection,
    ws: Workspace,
    target: ModelVersion,
    alias: str,
    action: ModelAction,
    reason: str | None,
) -> ModelEvent | None:
    if target.archived is not None:
        raise ModelError(
            f"{target.model} v{target.version} is archived",
            hint="an alias may only point at a version in use; register it again to revive it",
        )
    current = repo.alias_version(conn, target.model, alias)
    if current == target.version:
        return None
    if action == "set":
        action = "set" if current is None else "move"
    repo.point_alias(conn, target.model, alias, target.version)
    event = _event(conn, ws, target.model, alias, action, current, target.version, reason)
    entry = ws.index.resolve(Reference(None, digest=target.digest))
    _tag(ws, target.model, alias, entry, immutable=False)
    return event


def _tag(ws: Workspace, name: str, tag: str, entry: IndexEntry, *, immutable: bool) -> None:
    from tether.modelkit.tags import set_tags

    try:
        set_tags(ws, [Reference(name, tag)], entry.descriptor, force=not immutable)
    except TagConflict:
        raise ModelError(
            f"the tag {name}:{tag} already names another ModelKit",
            hint="it was made outside the model registry; remove it (tether remove "
            f"{name}:{tag}) or register under another model name",
        ) from None


def _untag(ws: Workspace, name: str, tag: str) -> None:
    from tether.modelkit.tags import remove

    # Already gone from the store (removed by hand): the record is what counts.
    with contextlib.suppress(ModelKitNotFound):
        remove(ws, Reference(name, tag))


def _event(
    conn: Connection,
    ws: Workspace,
    name: str,
    alias: str | None,
    action: ModelAction,
    old: int | None,
    new: int | None,
    reason: str | None,
) -> ModelEvent:
    event = ModelEvent(
        uuid.uuid4().hex, name, alias, action, old, new, time.time(), ws.user, reason
    )
    repo.add_event(conn, event)
    return event
