"""Tag policy: version tags are immutable, every tag move is recorded.

A tag matching ``tags.immutable`` (``v1.0.0``, ``1.2``…) means one ModelKit forever:
moving it — or re-creating it after removal to point elsewhere — needs ``force`` and
is reported with what it replaced. Other tags (``latest``, ``dev``) move freely. All
changes go through the index's locked transaction and land in ``tag_events``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from tether.errors import ModelKitNotFound, TagConflict, UsageError
from tether.hashing import Digest
from tether.oci.layout import IndexEntry
from tether.oci.manifest import Descriptor
from tether.oci.reference import Reference
from tether.repositories import kits
from tether.repositories.kits import TagEvent
from tether.workspace import Workspace


@dataclass(frozen=True)
class TagChange:
    ref: str
    action: Literal["set", "move", "unchanged", "remove"]
    old: Digest | None
    new: Digest | None


def set_tags(
    ws: Workspace, refs: list[Reference], descriptor: Descriptor, *, force: bool = False
) -> list[TagChange]:
    """Point each ``repo:tag`` at ``descriptor`` (a manifest in the store)."""
    for ref in refs:
        if ref.repository is None or ref.tag is None or ref.digest is not None:
            raise UsageError(f"{ref} is not a REPOSITORY:TAG", hint="e.g. movie-recommend:v1.0.0")
    changes: list[TagChange] = []
    with ws.index.transaction() as entries:
        for ref in refs:
            current = next(
                (e for e in entries if e.repository == ref.name and e.tag == ref.tag), None
            )
            old = current.digest if current else None
            if old == descriptor.digest:
                changes.append(TagChange(str(ref), "unchanged", old, old))
                continue
            previous = old or _last_published(ws, ref)
            if (
                previous is not None
                and previous != descriptor.digest
                and not force
                and ws.settings.is_version_tag(ref.tag or "")
            ):
                raise TagConflict(
                    f"{ref} is a version tag and already means {previous.short}"
                    + ("" if old else " (removed, but published before)"),
                    hint="version tags are immutable: pick a new version, or use --force to "
                    "move it",
                )
            if current is not None:
                entries.remove(current)
            # An untagged entry of the same ModelKit in that repository is now redundant.
            entries[:] = [
                e
                for e in entries
                if not (
                    e.tag is None
                    and e.digest == descriptor.digest
                    and e.repository in (ref.name, "")
                )
            ]
            entries.append(IndexEntry(ref.name, ref.tag, descriptor))
            changes.append(TagChange(str(ref), "move" if old else "set", old, descriptor.digest))
    _record(ws, changes)  # after the index is written: history never shows a move that failed
    return changes


def add_untagged(ws: Workspace, repository: str, descriptor: Descriptor) -> None:
    with ws.index.transaction() as entries:
        if not any(e.digest == descriptor.digest for e in entries):
            entries.append(IndexEntry(repository, None, descriptor))


def remove(ws: Workspace, ref: Reference) -> list[TagChange]:
    """Untag ``repo:tag``; a digest reference removes every tag of that ModelKit.

    The blobs stay until ``tether gc``."""
    changes: list[TagChange] = []
    with ws.index.transaction() as entries:
        if ref.digest is not None:
            doomed = [
                e
                for e in entries
                if e.digest == ref.digest and (ref.repository is None or e.repository == ref.name)
            ]
        else:
            doomed = [e for e in entries if e.repository == ref.name and e.tag == ref.tag]
        if not doomed:
            raise ModelKitNotFound(
                f"no ModelKit {ref} in the local store", hint="see 'tether list'"
            )
        for e in doomed:
            entries.remove(e)
            changes.append(TagChange(e.ref(), "remove", e.digest, None))
        # A provenance document goes with the last entry of the ModelKit it is about.
        alive = {e.digest for e in entries if e.subject is None}
        entries[:] = [e for e in entries if e.subject is None or e.subject in alive]
    _record(ws, [c for c in changes if "@" not in c.ref])
    return changes


def history(ws: Workspace, repository: str, tag: str) -> list[TagEvent]:
    """Every set, move and removal of ``repository:tag``, oldest first."""
    return kits.tag_history(ws.db, repository, tag)


def _last_published(ws: Workspace, ref: Reference) -> Digest | None:
    digest = kits.last_tagged(ws.db, ref.name, ref.tag or "")
    return Digest.parse(digest) if digest else None


def _record(ws: Workspace, changes: list[TagChange]) -> None:
    now = time.time()
    events = [
        TagEvent(
            c.ref.rpartition(":")[0],
            c.ref.rpartition(":")[2],
            c.action,  # "unchanged" is filtered out below
            str(c.old) if c.old else None,
            str(c.new) if c.new else None,
            now,
            ws.user,
        )
        for c in changes
        if c.action != "unchanged"
    ]
    if events:
        kits.record_tag_events(ws.db, events)
