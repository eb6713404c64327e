"""A model on an OCI registry: versions as tags ``vN``, aliases as tags, and the
history as an artifact of its own, so that the registry alone answers "what did
production point at last week, who moved it, and why?".

The history artifact is an image manifest under the tag ``tether.history``::

    artifactType  application/vnd.tether.model.history.v1+json
    config        the empty descriptor (application/vnd.oci.empty.v1+json, "{}")
    layers[0]     application/vnd.tether.model.history.v1+json:
                  {"format": 1, "model": NAME,
                   "versions": [{"version", "digest", "run", "created", "user", "archived"}],
                   "aliases": {ALIAS: N}, "events": [{uid, alias, action, from, to, at,
                   user, reason}]}

Events carry a uid: a push merges the registry's events with the local ones, so two
people pushing the same model lose none of each other's history. The tags are what
``tether pull REGISTRY/REPO:production`` and ``kit pull`` use; they point at the very
ModelKit manifests the versions are.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from typing import Any

from tether.errors import ModelError, ModelKitNotFound, RegistryError
from tether.hashing import Digest
from tether.oci import mediatypes as mt
from tether.oci.client import RegistryClient
from tether.oci.manifest import Descriptor, ImageManifest
from tether.oci.reference import Reference, parse_reference
from tether.registry.records import ModelEvent, ModelVersion
from tether.workspace import Workspace

HISTORY_TAG = "tether.history"
FORMAT = 1
MAX_HISTORY_BYTES = 16 << 20
_MERGE_ATTEMPTS = 5


@dataclass(frozen=True)
class RemoteModel:
    """What the registry's history artifact says about a model."""

    model: str
    versions: list[dict[str, Any]]
    aliases: dict[str, int]
    events: list[ModelEvent]


@dataclass(frozen=True)
class ModelPushReport:
    destination: str
    versions: list[str]
    aliases: list[str]
    events: int
    history: Digest

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "versions": self.versions,
            "aliases": self.aliases,
            "events": self.events,
            "history": str(self.history),
        }


def push_model(
    ws: Workspace, client: RegistryClient, name: str, destination: str
) -> ModelPushReport:
    """Push every version in use (tag vN, with its provenance), point every alias tag
    at its version, and write the merged history. Remembers ``destination``."""
    from tether.modelkit.remote import push
    from tether.registry import models

    dest = repository_ref(destination)
    repo = dest.repository or ""
    every = models.versions(ws, name)
    active = [v for v in every if v.archived is None]
    by_number = {v.version: v for v in every}
    for v in active:
        push(ws, v.ref, f"{dest.name}:v{v.version}", client)
    aliases = {a: v.version for v in active for a in v.aliases}
    for alias_name, number in sorted(aliases.items()):
        raw = ws.store.read_bytes(by_number[number].digest, max_size=4 << 20)
        client.put_manifest(repo, alias_name, raw, mt.OCI_MANIFEST)
    local_events = models.history(ws, name)
    digest, merged = _write_history(client, repo, name, every, aliases, local_events)
    models.set_remote(ws, name, dest.name)
    return ModelPushReport(dest.name, [v.label for v in active], sorted(aliases), merged, digest)


def remote_history(client: RegistryClient, target: str) -> list[ModelEvent]:
    return read_remote(client, target).events


def read_remote(client: RegistryClient, target: str) -> RemoteModel:
    """The model history stored in ``REGISTRY/REPOSITORY``, verified."""
    ref = repository_ref(target)
    found = _read_history(client, ref.repository or "")
    if found is None:
        raise ModelKitNotFound(
            f"{ref.name} holds no model history (no tag {HISTORY_TAG})",
            hint="push a model there first: tether model push NAME " + ref.name,
        )
    return found[1]


def repository_ref(text: str) -> Reference:
    """``REGISTRY/REPOSITORY``: where a model lives, without tag or digest."""
    from tether.modelkit.remote import remote_ref

    ref = remote_ref(text)
    if parse_reference(text, default_tag=False).tag or ref.digest:
        raise ModelError(
            f"{text} names a tag; a model lives in a whole repository",
            hint="give REGISTRY/REPOSITORY: its versions and aliases are the tags",
        )
    return ref


def _write_history(
    client: RegistryClient,
    repo: str,
    name: str,
    versions: list[ModelVersion],
    aliases: dict[str, int],
    local: list[ModelEvent],
) -> tuple[Digest, int]:
    for _ in range(_MERGE_ATTEMPTS):
        current = _read_history(client, repo)
        events = {e.uid: e for e in (current[1].events if current else [])}
        events.update({e.uid: e for e in local})
        ordered = sorted(events.values(), key=lambda e: (e.at, e.uid))
        doc = {
            "format": FORMAT,
            "model": name,
            "versions": [
                {
                    "version": v.version,
                    "digest": str(v.digest),
                    "run": v.run_id,
                    "created": v.created,
                    "user": v.user,
                    "archived": v.archived,
                }
                for v in versions
            ],
            "aliases": dict(sorted(aliases.items())),
            "events": [e.to_json() for e in ordered],
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        layer = Descriptor(mt.MODEL_HISTORY, Digest.of_bytes(blob), len(blob))
        empty = Descriptor(mt.EMPTY_CONFIG, Digest.of_bytes(mt.EMPTY_JSON), len(mt.EMPTY_JSON))
        for desc, data in ((empty, mt.EMPTY_JSON), (layer, blob)):
            if client.blob_size(repo, desc.digest) is None:
                client.upload_blob(repo, desc, functools.partial(io.BytesIO, data))
        manifest = ImageManifest(empty, (layer,), mt.MODEL_HISTORY, {}).to_bytes()
        if current is not None:
            # Someone pushed since we read: merge again rather than drop their events.
            now = client.head_manifest(repo, HISTORY_TAG)
            if now is not None and now.digest != current[0]:
                continue
        client.put_manifest(repo, HISTORY_TAG, manifest, mt.OCI_MANIFEST)
        return Digest.of_bytes(manifest), len(ordered)
    raise RegistryError(
        f"the history on {client.registry}/{repo} kept changing while tether merged it",
        hint="someone else is pushing this model; try again",
    )


def _read_history(client: RegistryClient, repo: str) -> tuple[Digest, RemoteModel] | None:
    try:
        served = client.get_manifest(repo, HISTORY_TAG)
    except ModelKitNotFound:
        return None
    manifest = ImageManifest.from_bytes(served.data)
    layer = next((d for d in manifest.layers if d.media_type == mt.MODEL_HISTORY), None)
    if manifest.artifact_type != mt.MODEL_HISTORY or layer is None:
        raise RegistryError(
            f"{client.registry}/{repo}:{HISTORY_TAG} is not a tether model history",
            hint="something else uses that tag; the model's history cannot be kept there",
        )
    if layer.size > MAX_HISTORY_BYTES:
        raise RegistryError(f"the model history is {layer.size} bytes, over the limit")
    doc = json.loads(client.read_blob(repo, layer.digest, MAX_HISTORY_BYTES))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RegistryError(
            "the model history has a format this tether does not know",
            hint="upgrade tether",
        )
    events = [ModelEvent.from_json(e) for e in doc.get("events", []) if isinstance(e, dict)]
    aliases = {str(k): int(v) for k, v in (doc.get("aliases") or {}).items() if isinstance(v, int)}
    versions = [v for v in doc.get("versions", []) if isinstance(v, dict)]
    return served.digest, RemoteModel(str(doc.get("model", "")), versions, aliases, events)
