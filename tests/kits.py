"""Hand-built ModelKits for hostile-input tests, written from the OCI and KitOps
formats directly (not by tether's packer)."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from tether.hashing import Digest
from tether.modelkit.tags import set_tags
from tether.oci import mediatypes as mt
from tether.oci.manifest import Descriptor, ImageManifest
from tether.oci.reference import parse_reference
from tether.workspace import Workspace


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def make_kit(
    ws: Workspace,
    ref: str,
    layers: list[tuple[str, bytes, dict[str, str]]],
    config: dict[str, Any] | None = None,
    *,
    config_media_type: str = mt.KIT_CONFIG,
    artifact_type: str = mt.KIT_ARTIFACT,
) -> Digest:
    descs = [
        Descriptor(media, ws.store.put_bytes(blob), len(blob), ann) for media, blob, ann in layers
    ]
    if config is None:
        config = {
            "manifestVersion": "1.0.0",
            "code": [
                {
                    "path": a.get(mt.ANN_FILEPATH, "."),
                    "digest": str(d.digest),
                    "diffId": str(d.digest),
                }
                for (_, _, a), d in zip(layers, descs, strict=True)
            ],
        }
    config_bytes = json.dumps(config).encode()
    cfg = Descriptor(config_media_type, ws.store.put_bytes(config_bytes), len(config_bytes))
    manifest = ImageManifest(cfg, tuple(descs), artifact_type).to_bytes()
    digest = ws.store.put_bytes(manifest)
    set_tags(
        ws,
        [parse_reference(ref)],
        Descriptor(mt.OCI_MANIFEST, digest, len(manifest), artifact_type=artifact_type),
    )
    return digest


CODE_TAR = "application/vnd.kitops.modelkit.code.v1.tar"
