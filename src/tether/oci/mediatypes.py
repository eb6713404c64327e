"""OCI, KitOps and CNCF ModelPack media types and annotation keys.

Kit layers follow ``application/vnd.kitops.modelkit.<base>.v1.<format>[+<compression>]``;
ModelPack layers ``application/vnd.cncf.model.<base>.v1.<format>[+<compression>]``
(see shared/reference/kitops.md §2.3). Both are read; tether writes the Kit grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

KIT_ARTIFACT = "application/vnd.kitops.modelkit.manifest.v1+json"
KIT_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"

# Referrers tether attaches: an in-toto provenance Statement (as cosign and BuildKit
# attach attestations), and a model's alias history (an artifact under a fixed tag).
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
IN_TOTO = "application/vnd.in-toto+json"
MODEL_HISTORY = "application/vnd.tether.model.history.v1+json"
REFERRER_TYPES = (IN_TOTO,)

ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_CREATED = "org.opencontainers.image.created"
ANN_FILEPATH = "org.cncf.model.filepath"
ANN_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANN_LAYER_SUBTYPE = "ml.kitops.modelkit.layer-subtype"
ANN_KITFILE = "ml.kitops.modelkit.kitfile"
# Where tether keeps a ModelKit's repository in the layout index for untagged entries.
ANN_TETHER_REPO = "dev.tether.repository"
# On a referrer's entry in index.json: the manifest it is about (so finding a kit's
# provenance reads the index only), and the in-toto predicate type on its layer.
ANN_TETHER_SUBJECT = "dev.tether.subject"
ANN_PREDICATE_TYPE = "in-toto.io/predicate-type"

# Kitfile section -> Kit media type base name -> ModelPack base name.
KIT_BASES = ("model", "modelpart", "code", "dataset", "docs", "mcpb")
_MODELPACK_TO_KIT = {
    "weight": "model",
    "weight.config": "modelpart",
    "code": "code",
    "dataset": "dataset",
    "doc": "docs",
}
_KIT_RE = re.compile(r"^application/vnd\.kitops\.modelkit\.(\w+)\.v1\.(\w+)(?:\+(\w+))?$")
_MODELPACK_RE = re.compile(
    r"^application/vnd\.cncf\.model\.(weight\.config|weight|code|dataset|doc)\.v1\.(\w+)(?:\+(\w+))?$"
)

COMPRESSIONS = ("none", "gzip", "zstd")


@dataclass(frozen=True)
class LayerType:
    """A parsed layer media type: its Kit base, format (tar/raw) and compression."""

    base: str  # model | modelpart | code | dataset | docs | mcpb
    format: str  # tar | raw
    compression: str  # none | gzip | zstd

    def media_type(self) -> str:
        suffix = "" if self.compression == "none" else f"+{self.compression}"
        return f"application/vnd.kitops.modelkit.{self.base}.v1.{self.format}{suffix}"


def parse_layer_type(media_type: str) -> LayerType | None:
    """Parse a Kit or ModelPack layer media type; None when it is neither."""
    m = _KIT_RE.match(media_type)
    if m and m.group(1) in KIT_BASES:
        base = m.group(1)
    else:
        m = _MODELPACK_RE.match(media_type)
        if not m:
            return None
        base = _MODELPACK_TO_KIT[m.group(1)]
    fmt, comp = m.group(2), m.group(3) or "none"
    if fmt not in ("tar", "raw") or comp not in COMPRESSIONS:
        return None
    return LayerType(base=base, format=fmt, compression=comp)
