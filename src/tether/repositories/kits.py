"""The ModelKit repository: what the database knows about ModelKits beyond the store.

Tables (``db/schema_*.py``)::

    tag_events      every tag set, move and removal: repository, tag, old → new digest
    layer_files     a layer's file listing (path, size, digest, mode) as JSON, by layer
                    digest; derivable from the blobs, so safe to drop
    registry_blobs  (registry, digest, repository) where a blob was seen, for mounts
    kit_runs        (kit digest, run) → how the link is known: from-run, detected,
                    provenance
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tether.db.connection import Connection, Database, Instant

TagAction = Literal["set", "move", "remove"]
KitRunHow = Literal["from-run", "detected", "provenance"]


@dataclass(frozen=True)
class TagEvent:
    repository: str
    tag: str
    action: TagAction
    old_digest: str | None
    new_digest: str | None
    at: float
    user: str

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "action": self.action,
            "from": self.old_digest,
            "to": self.new_digest,
            "at": self.at,
            "user": self.user,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TagEvent:
        return cls(
            str(data["repository"]),
            str(data["tag"]),
            data["action"],
            data.get("from"),
            data.get("to"),
            float(data["at"]),
            str(data.get("user", "")),
        )


def record_tag_events(db: Database, events: Sequence[TagEvent]) -> None:
    with db.atomic() as conn:
        conn.executemany(
            "INSERT INTO tag_events"
            ' (repository, tag, action, old_digest, new_digest, at, "user")'
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (e.repository, e.tag, e.action, e.old_digest, e.new_digest, Instant(e.at), e.user)
                for e in events
            ],
        )


def tag_history(db: Database, repository: str, tag: str) -> list[TagEvent]:
    rows = db.query(
        'SELECT at, action, old_digest, new_digest, "user" FROM tag_events '
        "WHERE repository = ? AND tag = ? ORDER BY id",
        (repository, tag),
    )
    return [
        TagEvent(repository, tag, r["action"], r["old_digest"], r["new_digest"], r["at"], r["user"])
        for r in rows
    ]


def last_tagged(db: Database, repository: str, tag: str) -> str | None:
    """The digest ``repository:tag`` last pointed at (removed since, perhaps)."""
    rows = db.query(
        "SELECT new_digest FROM tag_events WHERE repository = ? AND tag = ? "
        "AND new_digest IS NOT NULL ORDER BY id DESC LIMIT 1",
        (repository, tag),
    )
    return str(rows[0]["new_digest"]) if rows else None


def layer_listing(db: Database, layer_digest: str) -> list[dict[str, Any]] | None:
    rows = db.query("SELECT files_json FROM layer_files WHERE layer_digest = ?", (layer_digest,))
    return json.loads(rows[0]["files_json"]) if rows else None


def save_layer_listing(db: Database, layer_digest: str, files: list[dict[str, Any]]) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO layer_files VALUES (?, ?)"
            " ON CONFLICT (layer_digest) DO UPDATE SET files_json = excluded.files_json",
            (layer_digest, json.dumps(files)),
        )


def blob_sightings(db: Database, registry: str, but_not: str) -> list[tuple[str, str]]:
    """(digest, repository) of blobs seen in ``registry``'s other repositories, newest
    sighting first."""
    rows = db.query(
        "SELECT digest, repository FROM registry_blobs WHERE registry = ? AND repository != ? "
        "ORDER BY seen_at DESC",
        (registry, but_not),
    )
    return [(r["digest"], r["repository"]) for r in rows]


def saw_blobs(db: Database, registry: str, repository: str, digests: Iterable[str]) -> None:
    now = Instant(time.time())
    with db.atomic() as conn:
        conn.executemany(
            "INSERT INTO registry_blobs (registry, digest, repository, seen_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (registry, digest, repository)"
            " DO UPDATE SET seen_at = excluded.seen_at",
            [(registry, d, repository, now) for d in digests],
        )


def link_run(db: Database, kit_digest: str, run_id: str, how: KitRunHow) -> None:
    with db.atomic() as conn:
        conn.execute(
            "INSERT INTO kit_runs VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (kit_digest, run_id, how),
        )


def made_by_run(db: Database, run_id: str) -> list[tuple[str, str]]:
    """The ModelKits linked to a run: (kit digest, how the link is known)."""
    rows = db.query("SELECT kit_digest, how FROM kit_runs WHERE run_id = ?", (run_id,))
    return [(str(r["kit_digest"]), str(r["how"])) for r in rows]


def maker(conn: Connection, kit_digest: str) -> str | None:
    """The run that made a ModelKit: the one named at pack time first."""
    row = conn.execute(
        "SELECT run_id FROM kit_runs WHERE kit_digest = ?"
        " ORDER BY CASE WHEN how = 'from-run' THEN 0 ELSE 1 END LIMIT 1",
        (kit_digest,),
    ).fetchone()
    return None if row is None else str(row["run_id"])
