from __future__ import annotations

import json

import pytest

from tether.errors import ModelKitError
from tether.modelkit.load import load
from tether.oci.manifest import ImageManifest
from tether.workspace import Workspace

from .kits import CODE_TAR, entry, make_kit, tar_bytes

DIGEST = "sha256:" + "a" * 64
GOOD = {"schemaVersion": 2, "config": {"mediaType": "x", "digest": DIGEST, "size": 1}, "layers": []}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"manifests": []}, "ambiguous"),
        ({"schemaVersion": 1}, "schemaVersion"),
        ({"mediaType": "application/vnd.oci.image.index.v1+json"}, "not an OCI image manifest"),
        ({"layers": {}}, "'layers'"),
        (
            {"config": {"mediaType": "x", "digest": "sha256:../../etc/passwd", "size": 1}},
            "is not sha256",
        ),
        ({"config": {"mediaType": "x", "digest": DIGEST, "size": -1}}, "non-negative"),
        ({"config": {"mediaType": "x", "digest": DIGEST, "size": True}}, "non-negative"),
        ({"annotations": {"a": 1}}, "strings to strings"),
    ],
)
def test_malformed_manifests_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ModelKitError, match=message):
        ImageManifest.from_bytes(json.dumps({**GOOD, **change}).encode())


def test_oversized_and_non_json_manifests() -> None:
    with pytest.raises(ModelKitError, match="4 MiB"):
        ImageManifest.from_bytes(b" " * ((4 << 20) + 1))
    with pytest.raises(ModelKitError, match="not JSON"):
        ImageManifest.from_bytes(b"\xff{")


def test_round_trip_is_canonical() -> None:
    data = json.dumps(GOOD).encode()
    manifest = ImageManifest.from_bytes(data)
    assert ImageManifest.from_bytes(manifest.to_bytes()).to_bytes() == manifest.to_bytes()


def test_config_digest_must_match_manifest(project: Workspace) -> None:
    blob = tar_bytes([(entry("src/a.py"), b"x")])
    make_kit(
        project,
        "bad:v1",
        [(CODE_TAR, blob, {})],
        config={
            "manifestVersion": "1.0.0",
            "code": [{"path": "src", "digest": "sha256:" + "b" * 64}],
        },
    )
    with pytest.raises(ModelKitError, match="not listed in the ModelKit's Kitfile"):
        load(project, "bad:v1")
