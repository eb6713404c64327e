"""OCI descriptors and image manifests as typed values, with one canonical encoding.

Encoding is compact JSON, keys in the order the OCI specs list them, annotation keys
sorted, no trailing newline: the same values always give the same bytes and so the
same manifest digest. Parsing is strict (digests must be ``sha256:<hex>``, sizes
non-negative integers, no index/manifest ambiguity — CVE-2021-41190) so that nothing
an attacker writes into a manifest reaches the filesystem unchecked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tether.errors import ModelKitError
from tether.hashing import Digest
from tether.oci import mediatypes as mt

MAX_MANIFEST_BYTES = 4 << 20  # as containers/image: larger manifests are refused


def _bad(why: str) -> ModelKitError:
    return ModelKitError(
        f"invalid OCI manifest: {why}",
        hint="the ModelKit was not written by a conforming tool, or is damaged",
        code="bad-manifest",
    )


def _common_fields(doc: dict[str, Any], what: str) -> tuple[dict[str, str], str | None]:
    """The ``annotations`` and ``artifactType`` that descriptors and manifests share."""
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise _bad(f"{what} annotations must map strings to strings")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _bad("artifactType must be a string")
    return dict(annotations), artifact_type


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, data: Any) -> Descriptor:
        if not isinstance(data, dict):
            raise _bad("a descriptor is not an object")
        media_type = data.get("mediaType")
        digest = data.get("digest")
        size = data.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise _bad("descriptor without mediaType")
        if not isinstance(digest, str) or not Digest.is_valid(digest):
            raise _bad(f"descriptor digest {str(digest)[:80]!r} is not sha256:<64 hex>")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 63:
            raise _bad(f"descriptor size {size!r} is not a non-negative int64")
        annotations, artifact_type = _common_fields(data, "descriptor")
        return cls(media_type, Digest.parse(digest), size, dict(annotations), artifact_type)


@dataclass(frozen=True)
class ImageManifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    artifact_type: str | None = mt.KIT_ARTIFACT
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    # The manifest this one is about (a referrer: provenance, a model's history).
    subject: Descriptor | None = None

    def to_bytes(self) -> bytes:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_json()
        out["layers"] = [layer.to_json() for layer in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.to_json()
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageManifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise _bad(f"manifest is {len(data)} bytes, more than the 4 MiB limit")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise _bad("not a JSON object")
        if doc.get("schemaVersion") != 2:
            raise _bad("schemaVersion is not 2")
        if "manifests" in doc:
            raise _bad("it holds 'manifests' like an index (ambiguous document)")
        media_type = doc.get("mediaType")
        if media_type not in (None, mt.OCI_MANIFEST):
            raise _bad(f"mediaType {media_type!r} is not an OCI image manifest")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise _bad("'layers' is missing or not a list")
        annotations, artifact_type = _common_fields(doc, "manifest")
        subject = doc.get("subject")
        return cls(
            config=Descriptor.from_json(doc.get("config")),
            layers=tuple(Descriptor.from_json(layer) for layer in layers),
            artifact_type=artifact_type,
            annotations=dict(annotations),
            subject=None if subject is None else Descriptor.from_json(subject),
        )

    @property
    def is_modelkit(self) -> bool:
        return self.artifact_type in (
            mt.KIT_ARTIFACT,
            mt.MODELPACK_ARTIFACT,
        ) or self.config.media_type in (mt.KIT_CONFIG, mt.MODELPACK_CONFIG)

    @property
    def total_size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)
