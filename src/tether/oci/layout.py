"""The store's ``index.json``: which ModelKits the local store holds, and their tags.

``index.json`` is an OCI image index. Each entry is a manifest descriptor; a tagged
entry carries ``org.opencontainers.image.ref.name = "<repository>:<tag>"`` (so
``skopeo copy oci:.tether/store:movie-recommend:v1 …`` finds it), an untagged one
carries only ``dev.tether.repository``. One manifest appears once per tag.

Every change is a read-modify-write under ``.tether/locks/index.lock`` and replaces
the file atomically, so concurrent tether processes never lose each other's tags.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tether.errors import ModelKitNotFound, StoreError
from tether.hashing import Digest
from tether.oci import mediatypes as mt
from tether.oci.manifest import Descriptor
from tether.oci.reference import Reference, parse_reference
from tether.store.atomic import write_atomic
from tether.store.locks import file_lock
from tether.store.objects import ContentStore


@dataclass(frozen=True)
class IndexEntry:
    """One row of the local index: a repository, an optional tag, a manifest."""

    repository: str
    tag: str | None
    descriptor: Descriptor

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    def ref(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.digest}"

    @property
    def subject(self) -> Digest | None:
        """For a referrer (a provenance document): the ModelKit it is about."""
        value = self.descriptor.annotations.get(mt.ANN_TETHER_SUBJECT)
        return Digest.parse(value) if value and Digest.is_valid(value) else None


class LocalIndex:
    """Tags and ModelKits of one content store."""

    def __init__(
        self, store: ContentStore, lock_path: str | Path, *, lock_timeout: float = 600.0
    ) -> None:
        self.store = store
        self.path = store.root / "index.json"
        self.lock_path = Path(lock_path)
        self.lock_timeout = lock_timeout

    # -- reading --------------------------------------------------------------------

    def entries(self) -> list[IndexEntry]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise StoreError(
                f"{self.path} is not valid JSON ({exc})",
                hint="restore it from a backup, or re-pack the ModelKits",
            ) from None
        out = []
        for raw in doc.get("manifests", []):
            desc = Descriptor.from_json(raw)
            entry = _entry_from_descriptor(desc)
            if entry is not None:
                out.append(entry)
        return out

    def kits(self) -> list[IndexEntry]:
        """The ModelKits (and other artifacts) the user tagged or packed: every entry
        but referrers, which travel with their subject and are not listed on their own."""
        return [e for e in self.entries() if e.subject is None]

    def referrers(self, subject: Digest) -> list[IndexEntry]:
        return [e for e in self.entries() if e.subject == subject]

    def resolve(self, ref: Reference) -> IndexEntry:
        """Find the entry a reference names; raises ModelKitNotFound with suggestions."""
        entries = self.kits()
        for e in entries:
            if ref.digest is not None and e.digest != ref.digest:
                continue
            if ref.repository is not None and e.repository != ref.name:
                continue
            if ref.tag is not None and ref.digest is None and e.tag != ref.tag:
                continue
            return e
        if ref.digest is not None and ref.repository is None and self.store.has(ref.digest):
            size = self.store.size(ref.digest)
            return IndexEntry("", None, Descriptor(mt.OCI_MANIFEST, ref.digest, size))
        known = sorted({e.ref() for e in entries if e.repository == ref.name})
        hint = ("known here: " + ", ".join(known[:8])) if known else "see 'tether list'"
        raise ModelKitNotFound(f"no ModelKit {ref} in the local store", hint=hint)

    # -- writing --------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[list[IndexEntry]]:
        """Lock, load, let the caller edit the list in place, write back atomically."""
        with file_lock(self.lock_path, timeout=self.lock_timeout):
            entries = self.entries()
            before = list(entries)
            yield entries
            if entries != before:
                self._write(entries)

    def _write(self, entries: list[IndexEntry]) -> None:
        manifests = []
        for e in entries:
            ann = {
                k: v
                for k, v in e.descriptor.annotations.items()
                if k not in (mt.ANN_REF_NAME, mt.ANN_TETHER_REPO)
            }
            if e.tag:
                ann[mt.ANN_REF_NAME] = f"{e.repository}:{e.tag}"
            else:
                ann[mt.ANN_TETHER_REPO] = e.repository
            d = e.descriptor
            manifests.append(
                Descriptor(d.media_type, d.digest, d.size, ann, d.artifact_type).to_json()
            )
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        data = json.dumps(doc, indent=2).encode() + b"\n"
        write_atomic(self.path, data, tmp_dir=self.store.tmp_dir)

    def referenced_manifests(self) -> set[Digest]:
        return {e.digest for e in self.entries()}


def _entry_from_descriptor(desc: Descriptor) -> IndexEntry | None:
    ref_name = desc.annotations.get(mt.ANN_REF_NAME)
    if ref_name:
        try:
            ref = parse_reference(ref_name, default_tag=False)
        except Exception:
            return None  # a foreign ref name we cannot interpret; leave it alone
        if ref.repository and ref.tag:
            return IndexEntry(ref.name, ref.tag, desc)
        return None
    repo = desc.annotations.get(mt.ANN_TETHER_REPO)
    return IndexEntry(repo or "", None, desc)
