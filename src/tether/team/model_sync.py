"""The model registry between a checkout and its team server.

A model travels as a ``ModelCopy``: its versions (each a ModelKit by digest, whose blobs
go first), its history (events with uids) and where its aliases point. ``merge`` takes
one side's copy into the other's — on the server for a push, in the checkout for a
pull — with the same rules:

- a version the receiver lacks is added; the same number naming another ModelKit (two
  people registered a "v3" apart) is a conflict: reported, that version left alone;
- events merge by uid, so neither side's history loses or doubles an entry;
- an alias moves by compare-and-swap only: the sender's first move that the receiver
  has not seen must start where the receiver's alias points now, and the receiver must
  have no move of its own that the sender has not seen. Otherwise both moved it apart:
  a conflict, reported with both sides, and neither is overwritten — unless both ended
  where the other did, when only the histories merge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether.errors import Forbidden, ModelError, UsageError
from tether.hashing import Digest
from tether.registry.records import ModelEvent, ModelVersion
from tether.repositories import models as repo
from tether.workspace import Workspace

MAX_KIT_MANIFEST = 4 << 20


@dataclass(frozen=True)
class ModelCopy:
    name: str
    versions: tuple[ModelVersion, ...]
    events: tuple[ModelEvent, ...]
    aliases: Mapping[str, int]
    remote: str | None = None  # the registry repository 'model push' mirrors it to

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [v.to_json() for v in self.versions],
            "events": [e.to_json() for e in self.events],
            "aliases": dict(self.aliases),
            "remote": self.remote,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelCopy:
        from tether.registry.models import check_name

        try:
            name = check_name(str(data["name"]))
            versions = tuple(ModelVersion.from_json(v) for v in data["versions"])
            events = tuple(ModelEvent.from_json(e) for e in data["events"])
            aliases = {str(a): int(v) for a, v in dict(data["aliases"]).items()}
            remote = data.get("remote")
            if remote is not None:
                from tether.modelkit.remote import remote_ref

                remote_ref(str(remote)[:512])  # refused unless it names a registry
                remote = str(remote)[:512]
        except (KeyError, TypeError, ValueError, ModelError, UsageError) as e:
            raise UsageError(
                f"a model's copy does not parse: {type(e).__name__}", hint="upgrade the client"
            ) from None
        if any(v.model != name or v.version < 1 for v in versions) or any(
            e.model != name for e in events
        ):
            raise UsageError(
                f"a copy of {name} holds another model's records", hint="upgrade the client"
            )
        return cls(name, versions, events, aliases, remote)


@dataclass(frozen=True)
class Conflict:
    model: str
    alias: str | None  # None: a version
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "alias": self.alias, "message": self.message}


@dataclass(frozen=True)
class ModelMerge:
    model: str
    versions: tuple[int, ...] = ()  # added
    events: int = 0  # added
    aliases: tuple[str, ...] = ()  # moved
    conflicts: tuple[Conflict, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "versions": list(self.versions),
            "events": self.events,
            "aliases": list(self.aliases),
            "conflicts": [c.to_json() for c in self.conflicts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelMerge:
        return cls(
            str(data["model"]),
            tuple(int(v) for v in data.get("versions", ())),
            int(data.get("events", 0)),
            tuple(str(a) for a in data.get("aliases", ())),
            tuple(
                Conflict(str(c["model"]), c.get("alias"), str(c["message"]))
                for c in data.get("conflicts", ())
            ),
        )


def copies(ws: Workspace) -> list[ModelCopy]:
    """Every model of this project, as it travels."""
    with ws.db.snapshot() as conn:
        rows = repo.summaries(conn)
        return [
            ModelCopy(
                row.name,
                tuple(repo.versions(conn, row.name)),
                tuple(repo.events(conn, row.name)),
                repo.all_aliases(conn).get(row.name, {}),
                row.remote,
            )
            for row in rows
        ]


def kit_blobs(ws: Workspace, digest: Digest) -> list[str]:
    """The blobs of the ModelKit ``digest`` names: its manifest, config and layers."""
    from tether.oci.manifest import ImageManifest

    manifest = ImageManifest.from_bytes(ws.store.read_bytes(digest, max_size=MAX_KIT_MANIFEST))
    return [str(digest), str(manifest.config.digest), *(str(d.digest) for d in manifest.layers)]


def merge(
    ws: Workspace, incoming: ModelCopy, *, may_move: Callable[[str], None] | None = None
) -> ModelMerge:
    """Take ``incoming`` into this project's registry, in one transaction (module
    docstring: the rules). The ModelKits of new versions must be in the store already.
    ``may_move`` raises Forbidden for an alias the sender may not move (the server's
    protected aliases): that move is refused and reported like a conflict."""
    name = incoming.name
    conflicts: list[Conflict] = []
    added: list[int] = []
    moved: list[str] = []
    with ws.db.atomic() as conn:
        ours = {v.version: v for v in repo.versions(conn, name)}
        refused: set[int] = set()
        for v in sorted(incoming.versions, key=lambda v: v.version):
            mine = ours.get(v.version)
            if mine is None:
                if not ws.store.has(v.digest):
                    refused.add(v.version)
                    why = f"{name} v{v.version}: its ModelKit {v.digest.short} did not arrive"
                    conflicts.append(Conflict(name, None, why + "; sync again"))
                    continue
                repo.add_version(conn, v)
                if v.archived is not None:
                    repo.archive(conn, name, v.version, v.archived)
                added.append(v.version)
            elif mine.digest != v.digest:
                refused.add(v.version)
                conflicts.append(Conflict(
                    name, None, f"{name} v{v.version} is ModelKit {mine.digest.short} on one"
                    f" side and {v.digest.short} on the other (registered apart)",
                ))  # fmt: skip
            elif v.archived is not None and mine.archived is None:
                repo.archive(conn, name, v.version, v.archived)
        known = {e.uid: e for e in repo.events(conn, name)}
        sent = {e.uid for e in incoming.events}
        unseen = sorted((e for e in incoming.events if e.uid not in known), key=_order)
        new_events = 0
        for alias, moves in _by_alias(unseen).items():
            current = repo.alias_version(conn, name, alias)
            target = incoming.aliases.get(alias)
            apart = [e for e in known.values() if e.alias == alias and e.uid not in sent]
            if target == current and target not in refused:
                # Both sides already agree where it points: only the histories merge.
                for e in moves:
                    repo.add_event(conn, e)
                new_events += len(moves)
                continue
            if moves[0].old_version != current or apart or target in refused:
                conflicts.append(_alias_conflict(name, alias, current, target, apart))
                continue
            if may_move is not None:
                try:
                    may_move(alias)
                except Forbidden as refusal:
                    why = f"{name}:{alias} not moved: {refusal.message}"
                    conflicts.append(Conflict(name, alias, why))
                    continue
            if target is None:
                repo.drop_alias(conn, name, alias)
            elif target in ours or target in added:
                repo.point_alias(conn, name, alias, target)
            else:
                why = f"{name}:{alias} points at v{target}, a version this side lacks"
                conflicts.append(Conflict(name, alias, why))
                continue
            for e in moves:
                repo.add_event(conn, e)
            new_events += len(moves)
            moved.append(alias)
        for e in unseen:
            if e.alias is None:
                repo.add_event(conn, e)
                new_events += 1
        # Where the team mirrors it: learnt by a side that does not know yet (each side
        # keeps its own once set; 'model push DEST' changes it).
        known_remote = {r.name: r.remote for r in repo.summaries(conn)}
        if incoming.remote and name in known_remote and known_remote[name] is None:
            repo.set_remote(conn, name, incoming.remote)
        every = {**ours, **{v.version: v for v in incoming.versions if v.version in added}}
        _tag_layout(ws, name, every, added, moved, incoming.aliases)
    return ModelMerge(name, tuple(added), new_events, tuple(moved), tuple(conflicts))


def _order(e: ModelEvent) -> tuple[float, str]:
    return (e.at, e.uid)


def _by_alias(events: Sequence[ModelEvent]) -> dict[str, list[ModelEvent]]:
    out: dict[str, list[ModelEvent]] = {}
    for e in events:
        if e.alias is not None:
            out.setdefault(e.alias, []).append(e)
    return out


def _alias_conflict(
    name: str, alias: str, current: int | None, target: int | None, apart: list[ModelEvent]
) -> Conflict:
    here = "nothing" if current is None else f"v{current}"
    there = "nothing" if target is None else f"v{target}"
    who = ""
    if apart:
        last = max(apart, key=_order)
        who = f" (moved by {last.user}{': ' + last.reason if last.reason else ''})"
    return Conflict(
        name,
        alias,
        f"{name}:{alias} points at {here} on one side{who} and at {there} on the other;"
        " neither was overwritten",
    )


def _tag_layout(
    ws: Workspace,
    name: str,
    every: Mapping[int, ModelVersion],
    added: Sequence[int],
    moved: Sequence[str],
    aliases: Mapping[str, int],
) -> None:
    """The OCI layout's tags follow the registry: ``vN`` for a new version, the alias
    tags that moved (as ``tether model alias`` leaves them)."""
    from contextlib import suppress

    from tether.errors import ModelKitNotFound
    from tether.modelkit.tags import remove, set_tags
    from tether.oci.reference import Reference

    def tag(tag: str, version: ModelVersion, *, force: bool) -> None:
        entry = ws.index.resolve(Reference(None, digest=version.digest))
        set_tags(ws, [Reference(name, tag)], entry.descriptor, force=force)

    for number in added:
        tag(f"v{number}", every[number], force=False)
    for alias in moved:
        target = aliases.get(alias)
        if target is None:
            with suppress(ModelKitNotFound):
                remove(ws, Reference(name, alias))
        else:
            tag(alias, every[target], force=True)
