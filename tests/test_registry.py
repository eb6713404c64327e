"""ModelKits on a real OCI registry: Debian's docker-registry (CNCF distribution) on
127.0.0.1, plain, with htpasswd Basic auth, with a token server, and with TLS.

Hostile-registry cases put an httpx transport between tether's client and the real
registry (injected, in-process) that tampers with one kind of response."""

from __future__ import annotations

import base64
import gzip
import http.server
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tether.errors import AuthError, ModelKitNotFound, RegistryError
from tether.hashing import Digest
from tether.modelkit.remote import pull, push
from tether.oci import credentials
from tether.oci.client import RegistryClient
from tether.oci.manifest import Descriptor
from tether.oci.reference import parse_reference
from tether.oci.session import Connection
from tether.workspace import Workspace

from .conftest import separate_database, write_tree
from .registry import (
    Registry,
    TokenServer,
    free_port,
    htpasswd_auth,
    make_ca_and_cert,
    sha256,
    start_registry,
)

pytestmark = pytest.mark.registry

PLAIN = Connection(plain_http=True)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("basic-registry")
    reg = start_registry(root, auth=htpasswd_auth(root, {"ada": "s3cret-pass"}))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Registry, TokenServer]]:
    root = tmp_path_factory.mktemp("token-registry")
    server = TokenServer(root, {"ada": "t0ken-pass"})
    reg = start_registry(root, auth=server.auth_config())
    yield reg, server
    reg.stop()
    server.close()


def pack(project: Workspace, tether: Callable[..., Any], tag: str = "demo:v1") -> str:
    res = tether("pack", "-t", tag)
    assert res.exit_code == 0, res.output
    return str(project.index.resolve(parse_reference(tag)).digest)


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".tether" not in p.parts
    }


class Counter:
    """Counts the requests an httpx client sends, by method and kind of path."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def hook(self, request: httpx.Request) -> None:
        self.requests.append((request.method, request.url.path))

    def count(self, method: str, part: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and part in p)


def client(
    reg: Registry,
    *,
    connection: Connection = PLAIN,
    transport: httpx.BaseTransport | None = None,
    counter: Counter | None = None,
    credential: credentials.Credential | None = None,
    journal: Path | None = None,
) -> RegistryClient:
    http = httpx.Client(
        transport=transport,
        follow_redirects=False,
        event_hooks={"request": [counter.hook]} if counter else {},
        timeout=30,
    )
    return RegistryClient(
        reg.host,
        connection=connection,
        http=http,
        credential=(lambda: credential) if credential else None,
        upload_journal=journal,
    )


# -- round trip, dedup, mount, interop ---------------------------------------------------


def test_push_remove_pull_unpack_round_trip(
    project: Workspace, tether: Callable[..., Any], registry: Registry, tmp_path: Path
) -> None:
    digest = pack(project, tether)
    ref = f"{registry.host}/team/demo:v1"
    res = tether("push", "demo:v1", ref, "--plain-http")
    assert res.exit_code == 0, res.output
    assert "5 blob(s) sent" in res.output
    before = files_of(project.root)
    assert tether("remove", "demo:v1").exit_code == 0
    assert tether("gc", "--force").exit_code == 0
    assert not any(project.store)  # nothing left locally

    res = tether("pull", ref, "--plain-http")
    assert res.exit_code == 0, res.output
    assert project.index.resolve(parse_reference(ref)).digest == Digest.parse(digest)
    out = tmp_path / "out"
    res = tether("unpack", ref, "-d", str(out))
    assert res.exit_code == 0, res.output
    unpacked = files_of(out)
    assert yaml.safe_load(unpacked.pop("Kitfile")) == yaml.safe_load(before["Kitfile"])
    assert set(unpacked) == {
        "README.md",
        "models/model.pkl",
        "src/train.py",
        "src/lib/util.py",
        "data/ratings.csv",
    }
    assert unpacked == {k: before[k] for k in unpacked}  # the same bytes
    res = tether("list", f"{registry.host}/team/demo", "--plain-http", "--json")
    assert json.loads(res.output) == [
        {"repository": f"{registry.host}/team/demo", "tag": "v1", "digest": digest}
    ]


def test_second_version_sends_only_changed_blobs(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    pack(project, tether, "demo:v1")
    counter = Counter()
    with client(registry, counter=counter) as c:
        first = push(project, "demo:v1", f"{registry.host}/dedup/demo:v1", c)
    assert (first.moved, first.present) == (5, 0)  # config + model, code, dataset, docs
    (project.root / "models" / "model.pkl").write_bytes(b"model-v2" * 1000)
    pack(project, tether, "demo:v2")
    counter = Counter()
    with client(registry, counter=counter) as c:
        second = push(project, "demo:v2", f"{registry.host}/dedup/demo:v2", c)
    # Only the new config and model layer travel; the other three are HEAD-checked.
    assert (second.moved, second.present, second.mounted) == (2, 3, 0)
    assert counter.count("POST", "/blobs/uploads/") == 2
    assert counter.count("PUT", "/blobs/uploads/") == 2
    assert counter.count("HEAD", "/blobs/") == 5
    assert second.bytes_moved < first.bytes_moved


def test_blobs_in_another_repository_are_mounted(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    pack(project, tether)
    with client(registry) as c:
        push(project, "demo:v1", f"{registry.host}/mount-a/demo:v1", c)
    counter = Counter()
    with client(registry, counter=counter) as c:
        report = push(project, "demo:v1", f"{registry.host}/mount-b/demo:v1", c)
    assert (report.moved, report.mounted, report.bytes_moved) == (0, 5, 0)
    assert counter.count("PUT", "/blobs/uploads/") == 0
    assert counter.count("POST", "/blobs/uploads/") == 5  # all mounts


@pytest.mark.skopeo
def test_skopeo_copies_a_tether_modelkit_and_tether_pulls_the_copy(
    project: Workspace, tether: Callable[..., Any], registry: Registry, tmp_path: Path
) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    digest = pack(project, tether)
    src, dst = f"{registry.host}/interop/src:v1", f"{registry.host}/interop/copy:v1"
    assert tether("push", "demo:v1", src, "--plain-http").exit_code == 0
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{src}",
            f"docker://{dst}",
        ],
        check=True,
        capture_output=True,
    )
    res = tether("pull", dst, "--plain-http")
    assert res.exit_code == 0, res.output
    assert digest in res.output
    out = tmp_path / "out"
    assert tether("unpack", dst, "-d", str(out), "--filter", "model").exit_code == 0
    assert (out / "models" / "model.pkl").read_bytes() == (
        project.root / "models" / "model.pkl"
    ).read_bytes()


def test_pushed_modelkit_is_exactly_kitops_format(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    digest = pack(project, tether)
    assert tether("push", "demo:v1", f"{registry.host}/kit/demo:v1", "--plain-http").exit_code == 0
    # Read back with plain httpx, not tether's client.
    base = f"http://{registry.host}/v2/kit/demo"
    resp = httpx.get(
        f"{base}/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    assert resp.headers["docker-content-digest"] == digest
    assert resp.content == project.store.read_bytes(Digest.parse(digest))
    doc = resp.json()
    assert doc["artifactType"] == "application/vnd.kitops.modelkit.manifest.v1+json"
    assert doc["config"]["mediaType"] == "application/vnd.kitops.modelkit.config.v1+json"
    assert {layer["mediaType"] for layer in doc["layers"]} == {
        "application/vnd.kitops.modelkit.model.v1.tar",
        "application/vnd.kitops.modelkit.code.v1.tar",
        "application/vnd.kitops.modelkit.dataset.v1.tar",
        "application/vnd.kitops.modelkit.docs.v1.tar",
    }
    config = httpx.get(f"{base}/blobs/{doc['config']['digest']}").json()
    assert config["model"]["digest"] == doc["layers"][0]["digest"]
    assert config["package"]["name"] == "demo"


# -- ModelKits made by another tool ---------------------------------------------------------


def _raw_push(
    reg: Registry, repo: str, blobs: list[bytes], manifest: dict[str, Any], tag: str
) -> str:
    """Push with bare HTTP calls, as another tool would: monolithic POST+PUT uploads."""
    base = f"http://{reg.host}/v2/{repo}"
    for blob in blobs:
        loc = httpx.post(f"{base}/blobs/uploads/").headers["location"]
        url = httpx.URL(f"http://{reg.host}").join(loc)
        put = httpx.put(url.copy_merge_params({"digest": sha256(blob)}), content=blob)
        assert put.status_code == 201, put.text
    data = json.dumps(manifest).encode()
    put = httpx.put(
        f"{base}/manifests/{tag}",
        content=data,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert put.status_code == 201, put.text
    return sha256(data)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid = len(data), 0o644, 1000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _desc(media_type: str, blob: bytes, **annotations: str) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media_type, "digest": sha256(blob), "size": len(blob)}
    if annotations:
        out["annotations"] = annotations
    return out


def test_foreign_kit_modelkit_with_raw_and_compressed_layers(
    project: Workspace, tether: Callable[..., Any], registry: Registry, tmp_path: Path
) -> None:
    weights = os.urandom(4096)
    raw_layer = weights  # a raw layer is the file itself
    code_tar = gzip.compress(_tar({"src/train.py": b"print('hi')\n"}), mtime=0)
    docs_tar = _tar({"README.md": b"# foreign\n"})
    kitfile = {
        "manifestVersion": "1.0.0",
        "package": {"name": "foreign"},
        "model": {
            "name": "w",
            "path": "weights.bin",
            "digest": sha256(raw_layer),
            "diffId": sha256(raw_layer),
        },
        "code": [
            {"path": "src", "digest": sha256(code_tar), "diffId": sha256(gzip.decompress(code_tar))}
        ],
        "docs": [{"path": "README.md", "digest": sha256(docs_tar), "diffId": sha256(docs_tar)}],
    }
    config = json.dumps(kitfile).encode()
    manifest = {
        "schemaVersion": 2,
        "artifactType": "application/vnd.kitops.modelkit.manifest.v1+json",
        "config": _desc("application/vnd.kitops.modelkit.config.v1+json", config),
        "layers": [
            _desc(
                "application/vnd.kitops.modelkit.model.v1.raw",
                raw_layer,
                **{
                    "org.cncf.model.filepath": "weights.bin",
                    "org.cncf.model.file.metadata+json": json.dumps(
                        {
                            "name": "weights.bin",
                            "mode": 420,
                            "uid": 0,
                            "gid": 0,
                            "size": len(weights),
                            "mtime": "2026-01-01T00:00:00Z",
                            "typeflag": 48,
                        }
                    ),
                },
            ),
            _desc(
                "application/vnd.kitops.modelkit.code.v1.tar+gzip",
                code_tar,
                **{"org.cncf.model.filepath": "src"},
            ),
            _desc(
                "application/vnd.kitops.modelkit.docs.v1.tar",
                docs_tar,
                **{"org.cncf.model.filepath": "README.md"},
            ),
        ],
        "annotations": {"ml.kitops.modelkit.cli-version": "1.9.0"},
    }
    _raw_push(registry, "foreign/kit", [config, raw_layer, code_tar, docs_tar], manifest, "v1")
    out = tmp_path / "out"
    res = tether("unpack", f"{registry.host}/foreign/kit:v1", "-d", str(out), "--plain-http")
    assert res.exit_code == 0, res.output
    assert (out / "weights.bin").read_bytes() == weights
    assert (out / "src" / "train.py").read_bytes() == b"print('hi')\n"
    assert (out / "README.md").read_bytes() == b"# foreign\n"
    res = tether("inspect", f"{registry.host}/foreign/kit:v1", "--plain-http", "--json")
    assert json.loads(res.output)["kitfile"]["package"]["name"] == "foreign"


def test_foreign_modelpack_artifact_pulls_and_unpacks(
    project: Workspace, tether: Callable[..., Any], registry: Registry, tmp_path: Path
) -> None:
    weight = _tar({"model/weights.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "})
    cfg_layer = _tar({"model/config.json": b'{"hidden": 8}'})
    dataset = gzip.compress(_tar({"data/eval.csv": b"a,b\n1,2\n"}), mtime=0)
    config = json.dumps(
        {
            "descriptor": {"name": "tiny", "createdAt": "2026-01-01T00:00:00Z"},
            "modelfs": {
                "type": "layers",
                "diffIds": [sha256(weight), sha256(cfg_layer), sha256(gzip.decompress(dataset))],
            },
            "config": {"format": "safetensors"},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": _desc("application/vnd.cncf.model.config.v1+json", config),
        "layers": [
            _desc(
                "application/vnd.cncf.model.weight.v1.tar",
                weight,
                **{"org.cncf.model.filepath": "model/weights.safetensors"},
            ),
            _desc(
                "application/vnd.cncf.model.weight.config.v1.tar",
                cfg_layer,
                **{"org.cncf.model.filepath": "model/config.json"},
            ),
            _desc(
                "application/vnd.cncf.model.dataset.v1.tar+gzip",
                dataset,
                **{"org.cncf.model.filepath": "data/eval.csv"},
            ),
        ],
    }
    ref = f"{registry.host}/foreign/modelpack:v1"
    _raw_push(registry, "foreign/modelpack", [config, weight, cfg_layer, dataset], manifest, "v1")
    res = tether("pull", ref, "--plain-http")
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    res = tether("unpack", ref, "-d", str(out), "--filter", "model")
    assert res.exit_code == 0, res.output
    assert (out / "model" / "config.json").read_bytes() == b'{"hidden": 8}'
    assert (out / "model" / "weights.safetensors").exists()
    assert not (out / "data").exists()


# -- filters, tags, pagination, referrers ----------------------------------------------------


def test_pull_filter_fetches_only_selected_layers(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    pack(project, tether)
    ref = f"{registry.host}/filter/demo:v1"
    assert tether("push", "demo:v1", ref, "--plain-http").exit_code == 0
    tether("remove", "demo:v1")
    tether("gc", "--force")
    counter = Counter()
    with client(registry, counter=counter) as c:
        report, _ = pull(project, ref, c, filters=["docs"])
    assert report.skipped == 3
    assert counter.count("GET", "/blobs/sha256:") == 2  # config and the docs layer only
    res = tether("push", ref, f"{registry.host}/filter/again:v1", "--plain-http")
    assert res.exit_code == 1 and "pulled with --filter" in res.output


def test_remote_tag_and_remove_and_version_tags_on_pull(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    pack(project, tether, "demo:v1")
    (project.root / "README.md").write_text("# changed\n")
    pack(project, tether, "demo:v2")
    base = f"{registry.host}/tags/demo"
    for tag in ("v1", "v2"):
        assert tether("push", f"demo:{tag}", f"{base}:{tag}", "--plain-http").exit_code == 0
    assert tether("pull", f"{base}:v1", "--plain-http").exit_code == 0
    res = tether("tag", "--remote", f"{base}:v2", f"{base}:v1", "--plain-http")
    assert res.exit_code == 1 and "version tag" in res.output  # immutable on the registry too
    assert (
        tether("tag", "--remote", f"{base}:v2", f"{base}:v1", "--force", "--plain-http").exit_code
        == 0
    )
    res = tether("pull", f"{base}:v1", "--plain-http")
    assert res.exit_code == 1 and "version tag" in res.output  # the local promise holds
    assert tether("pull", f"{base}:v1", "--plain-http", "--force").exit_code == 0
    assert tether("tag", "--remote", f"{base}:v2", f"{base}:prod", "--plain-http").exit_code == 0
    res = tether("remove", "--remote", f"{base}:prod", "--plain-http")
    assert res.exit_code == 1 and "v1" in res.output and "v2" in res.output
    res = tether("remove", "--remote", f"{base}:prod", "--plain-http", "--force")
    assert res.exit_code == 0, res.output
    res = tether("list", base, "--plain-http", "--json")
    assert json.loads(res.output) == []


def test_tag_list_pagination_and_referrers_fallback(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    pack(project, tether)
    with client(registry) as c:
        report = push(project, "demo:v1", f"{registry.host}/pages/demo:v1", c)
        for i in range(5):
            data = project.store.read_bytes(report.digest)
            c.put_manifest(
                "pages/demo", f"t{i}", data, "application/vnd.oci.image.manifest.v1+json"
            )
        assert sorted(c.list_tags("pages/demo", page_size=2)) == [
            "t0",
            "t1",
            "t2",
            "t3",
            "t4",
            "v1",
        ]
        # An artifact about the ModelKit: distribution 2.8 has no referrers API, so the
        # client keeps the 'sha256-<hex>' index tag.
        empty = b"{}"
        c.upload_blob(
            "pages/demo",
            Descriptor("application/vnd.oci.empty.v1+json", Digest.of_bytes(empty), 2),
            lambda: io.BytesIO(empty),
        )
        note = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.tether.test.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": str(Digest.of_bytes(empty)),
                    "size": 2,
                },
                "layers": [],
                "subject": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": str(report.digest),
                    "size": len(data),
                },
            }
        ).encode()
        attached = c.attach(
            "pages/demo",
            note,
            "application/vnd.oci.image.manifest.v1+json",
            report.digest,
            "application/vnd.tether.test.v1+json",
        )
        found = c.referrers("pages/demo", report.digest)
        assert [d.digest for d in found] == [attached]
        assert found[0].artifact_type == "application/vnd.tether.test.v1+json"


# -- auth ----------------------------------------------------------------------------------


def test_basic_auth_login_push_pull_logout(
    project: Workspace, tether: Callable[..., Any], basic_registry: Registry
) -> None:
    host = basic_registry.host
    pack(project, tether)
    res = tether("push", "demo:v1", f"{host}/auth/demo:v1", "--plain-http")
    assert (
        res.exit_code == 1
        and "requires a login" in res.output
        and f"tether login {host}" in res.output
    )

    res = tether("login", host, "-u", "ada", "--password-stdin", "--plain-http", input="wrong\n")
    assert res.exit_code == 1 and "refused" in res.output and "wrong" not in res.output
    assert not credentials.config_path().exists()  # nothing stored on failure

    res = tether(
        "login", host, "-u", "ada", "--password-stdin", "--plain-http", input="s3cret-pass\n"
    )
    assert res.exit_code == 0, res.output
    assert "s3cret-pass" not in res.output
    path = credentials.config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    auth = json.loads(path.read_text())["auths"][host]["auth"]
    assert base64.b64decode(auth) == b"ada:s3cret-pass"

    assert tether("push", "demo:v1", f"{host}/auth/demo:v1", "--plain-http").exit_code == 0
    assert tether("pull", f"{host}/auth/demo:v1", "--plain-http").exit_code == 0
    # The credential lives with Docker's, never in the project (nor in its base64 form).
    stored = b"".join(p.read_bytes() for p in project.dot.rglob("*") if p.is_file())
    assert b"s3cret-pass" not in stored and auth.encode() not in stored
    assert tether("logout", host).exit_code == 0
    assert host not in json.loads(path.read_text())["auths"]


def test_login_keeps_other_docker_settings(
    basic_registry: Registry, tether: Callable[..., Any]
) -> None:
    path = credentials.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}}, "psFormat": "x"}))
    res = tether(
        "login",
        basic_registry.host,
        "-u",
        "ada",
        "--password-stdin",
        "--plain-http",
        input="s3cret-pass",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == "x" and "other.example" in doc["auths"]


def test_credential_helper_is_used(
    tmp_path: Path,
    basic_registry: Registry,
    tether: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A credential helper speaks Docker's protocol: get/store/erase, JSON on stdio.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    store = tmp_path / "helper-store.json"
    helper = bindir / "docker-credential-testhelper"
    helper.write_text(f"""#!/usr/bin/env python3
import json, sys
path = {str(store)!r}
try:
    db = json.load(open(path))
except FileNotFoundError:
    db = {{}}
action, data = sys.argv[1], sys.stdin.read()
if action == "store":
    doc = json.loads(data); db[doc["ServerURL"]] = [doc["Username"], doc["Secret"]]
    json.dump(db, open(path, "w"))
elif action == "get":
    if data not in db:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({{"ServerURL": data, "Username": db[data][0], "Secret": db[data][1]}}))
elif action == "erase":
    db.pop(data, None); json.dump(db, open(path, "w"))
""")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    path = credentials.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"credsStore": "testhelper"}))
    host = basic_registry.host
    res = tether(
        "login", host, "-u", "ada", "--password-stdin", "--plain-http", input="s3cret-pass"
    )
    assert res.exit_code == 0, res.output
    assert "docker-credential-testhelper" in res.output
    assert "auths" not in json.loads(path.read_text())  # the secret is not in the file
    assert credentials.lookup(host) == credentials.Credential("ada", "s3cret-pass")
    assert tether("logout", host).exit_code == 0
    assert credentials.lookup(host) is None


def test_token_auth_and_expired_token_refresh(
    project: Workspace,
    tether: Callable[..., Any],
    token_registry: tuple[Registry, TokenServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg, server = token_registry
    pack(project, tether)
    ref = f"{reg.host}/tok/demo:v1"
    res = tether("push", "demo:v1", ref, "--plain-http")
    assert res.exit_code == 1 and "requires a login" in res.output

    # The token server is the same host on another port over plain HTTP: another origin,
    # so the credential is not sent there until the user says so.
    asked = len(server.requests)
    res = tether(
        "login", reg.host, "-u", "ada", "--password-stdin", "--plain-http", input="t0ken-pass"
    )
    assert res.exit_code == 1 and "registry.token_realms" in res.output, res.output
    assert server.requests[asked:] and not any(r["authorization"] for r in server.requests[asked:])
    monkeypatch.setenv("TETHER_REGISTRY_TOKEN_REALMS", f"127.0.0.1:{server.port}")

    res = tether("login", reg.host, "-u", "ada", "--password-stdin", "--plain-http", input="nope")
    assert res.exit_code == 1 and "refused" in res.output
    res = tether(
        "login", reg.host, "-u", "ada", "--password-stdin", "--plain-http", input="t0ken-pass"
    )
    assert res.exit_code == 0, res.output
    assert tether("push", "demo:v1", ref, "--plain-http").exit_code == 0

    # The next token the server hands out is already expired for the registry: the
    # client must notice the 401, fetch a fresh token and carry on.
    server.expired_first = True
    asked = len(server.requests)
    tether("remove", "demo:v1")
    tether("gc", "--force")
    res = tether("pull", ref, "--plain-http")
    assert res.exit_code == 0, res.output
    assert len(server.requests) - asked >= 2
    assert all(r["authorization"] for r in server.requests[asked:])


def test_realm_on_plain_http_elsewhere_is_refused() -> None:
    from tether.oci.auth import parse_challenge, realm_policy

    ch = parse_challenge('Bearer realm="https://auth.example.com/t,x",service="r",scope="a b"', "r")
    assert ch.realm == "https://auth.example.com/t,x" and ch.params["scope"] == "a b"
    with pytest.raises(AuthError, match="twice"):
        parse_challenge('Bearer realm="https://a/",realm="https://b/"', "r")
    with pytest.raises(AuthError, match="plain HTTP"):
        realm_policy("http://evil.example/token", "registry.example.com", plain_http=False)
    assert realm_policy("https://auth.docker.io/token", "registry-1.docker.io", plain_http=False)
    assert not realm_policy("https://evil.example/token", "registry.example.com", plain_http=False)
    assert not realm_policy("https://127.0.0.2/token", "127.0.0.1:5000", plain_http=False)
    # Origins are (scheme, host, port): the same host on another port is another origin.
    assert realm_policy("http://127.0.0.1:5000/t", "127.0.0.1:5000", plain_http=True)
    assert not realm_policy("http://127.0.0.1:5001/t", "127.0.0.1:5000", plain_http=True)
    assert not realm_policy("https://reg.example:8443/t", "reg.example", plain_http=False)
    assert not realm_policy(
        "https://auth.docker.io:8443/t", "registry-1.docker.io", plain_http=False
    )
    trusted = frozenset({"reg.example:8443", "127.0.0.1:5001"})
    assert realm_policy(
        "https://reg.example:8443/t", "reg.example", plain_http=False, trusted=trusted
    )
    assert realm_policy(
        "http://127.0.0.1:5001/t", "127.0.0.1:5000", plain_http=True, trusted=trusted
    )


def test_tls_needs_the_ca_file(
    project: Workspace, tether: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("tls-registry")
    ca, cert, key = make_ca_and_cert(root / "pki")
    reg = start_registry(root, tls=(cert, key))
    try:
        pack(project, tether)
        ref = f"{reg.host}/tls/demo:v1"
        res = tether("push", "demo:v1", ref)
        assert res.exit_code == 1 and "--ca-file" in res.output
        res = tether("push", "demo:v1", ref, "--ca-file", str(ca))
        assert res.exit_code == 0, res.output
        res = tether("list", f"{reg.host}/tls/demo", "--insecure")
        assert res.exit_code == 0 and "v1" in res.output
    finally:
        reg.stop()


# -- failures -------------------------------------------------------------------------------


def test_registry_down_mid_push_then_resumed(
    project: Workspace, tether: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    reg = start_registry(tmp_path_factory.mktemp("flaky-registry"))
    try:
        big = os.urandom(6 << 20)
        write_tree(project.root, {"models": {"model.pkl": big}})
        pack(project, tether)
        ref = f"{reg.host}/flaky/demo:v1"
        journal = project.dot / "cache" / "uploads"
        patches: list[int] = []

        def kill_after_two(response: httpx.Response) -> None:
            if response.request.method == "PATCH":
                patches.append(int(response.request.headers["content-length"]))
                if len(patches) == 2:
                    reg.stop()

        http = httpx.Client(event_hooks={"response": [kill_after_two]}, timeout=30)
        c = RegistryClient(
            reg.host,
            connection=Connection(plain_http=True, concurrency=1),
            http=http,
            upload_journal=journal,
        )
        c.chunk_threshold = c.chunk_size = 1 << 20
        with pytest.raises(RegistryError, match="cannot reach"), c:
            push(project, "demo:v1", ref, c)
        assert len(list(journal.iterdir())) == 1  # where the big upload stands

        reg.start()
        counter = Counter()
        c = client(reg, counter=counter, journal=journal)
        c.chunk_threshold = c.chunk_size = 1 << 20
        with c:
            report = push(project, "demo:v1", ref, c)
        # The big layer resumed after the two chunks the registry had taken.
        assert report.bytes_moved < len(big)
        assert report.bytes_moved <= len(big) - 2 * (1 << 20) + 100_000
        assert not list(journal.iterdir())
        tether("remove", "demo:v1")
        tether("gc", "--force")
        assert tether("pull", ref, "--plain-http").exit_code == 0
        out = project.root / "restored"
        assert tether("unpack", ref, "-d", str(out), "--filter", "model").exit_code == 0
        assert (out / "models" / "model.pkl").read_bytes() == big
    finally:
        reg.stop()


class Tamper(httpx.BaseTransport):
    """Forwards to the real registry; ``rewrite`` may replace a response."""

    def __init__(self, rewrite: Callable[[httpx.Request, httpx.Response], httpx.Response | None]):
        self.inner = httpx.HTTPTransport()
        self.rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        resp.read()
        resp.close()  # the body is read; the connection goes back to the pool
        return self.rewrite(request, resp) or resp

    def close(self) -> None:
        self.inner.close()


def _nothing_bad_kept(project: Workspace) -> None:
    """Verified blobs may stay (a retry then fetches only the rest); nothing else may."""
    assert all(project.store.verify(d) for d in project.store)
    assert not [p for p in project.store.tmp_dir.iterdir() if p.name.startswith("blob-")]
    assert not [e for e in project.index.entries() if "evil" in e.repository]


def _pushed(project: Workspace, tether: Callable[..., Any], reg: Registry, repo: str) -> str:
    pack(project, tether)
    ref = f"{reg.host}/{repo}:v1"
    assert tether("push", "demo:v1", ref, "--plain-http").exit_code == 0
    tether("remove", "demo:v1")
    tether("gc", "--force")
    return ref


def test_blob_with_wrong_digest_is_refused_and_not_kept(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    ref = _pushed(project, tether, registry, "evil/digest")

    def corrupt(req: httpx.Request, resp: httpx.Response) -> httpx.Response | None:
        if req.method == "GET" and "/blobs/sha256:" in req.url.path and len(resp.content) > 1000:
            body = bytearray(resp.content)
            body[100] ^= 0xFF
            return httpx.Response(200, headers=resp.headers, content=bytes(body))
        return None

    with (
        client(registry, transport=Tamper(corrupt)) as c,
        pytest.raises(RegistryError, match="does not match its digest"),
    ):
        pull(project, ref, c)
    _nothing_bad_kept(project)


def test_oversized_manifest_and_bad_digests_are_refused(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    ref = _pushed(project, tether, registry, "evil/manifest")

    def huge(req: httpx.Request, resp: httpx.Response) -> httpx.Response | None:
        if "/manifests/" in req.url.path:
            body = resp.content[:-1] + b',"annotations":{"x":"' + b"a" * (5 << 20) + b'"}}'
            # Streamed without a Content-Length, so the limit must hold while reading.
            return httpx.Response(
                200, headers={"content-type": resp.headers["content-type"]}, content=iter([body])
            )
        return None

    with client(registry, transport=Tamper(huge)) as c, pytest.raises(RegistryError) as err:
        pull(project, ref, c)
    assert err.value.code == "too-large"

    def bad_header(req: httpx.Request, resp: httpx.Response) -> httpx.Response | None:
        if "/manifests/" in req.url.path:
            headers = dict(resp.headers)
            headers["docker-content-digest"] = "sha256:../../../../etc/passwd"
            return httpx.Response(200, headers=headers, content=resp.content)
        return None

    with (
        client(registry, transport=Tamper(bad_header)) as c,
        pytest.raises(RegistryError, match="malformed digest"),
    ):
        pull(project, ref, c)

    def bad_layer(req: httpx.Request, resp: httpx.Response) -> httpx.Response | None:
        if "/manifests/" in req.url.path:
            doc = json.loads(resp.content)
            doc["layers"][0]["digest"] = "sha256:" + "../" * 20 + "x" * 4
            body = json.dumps(doc).encode()
            headers = {"content-type": resp.headers["content-type"]}
            return httpx.Response(200, headers=headers, content=body)
        return None

    with (
        client(registry, transport=Tamper(bad_layer)) as c,
        pytest.raises(Exception, match="sha256"),
    ):
        pull(project, ref, c)
    _nothing_bad_kept(project)


def test_redirect_to_another_host_gets_no_credentials(
    project: Workspace, tether: Callable[..., Any], basic_registry: Registry
) -> None:
    host = basic_registry.host
    cred = credentials.Credential("ada", "s3cret-pass")
    pack(project, tether)
    ref = f"{host}/redirect/demo:v1"
    with client(basic_registry, credential=cred) as c:
        report = push(project, "demo:v1", ref, c)
    blobs = {f"/{d.hex}": project.store.read_bytes(d, max_size=1 << 30) for d in project.store}
    tether("remove", "demo:v1")
    tether("gc", "--force")

    # A blob store on another host (as S3 behind a registry): records what it is sent.
    seen: list[str | None] = []

    class Storage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = blobs[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    storage = http.server.ThreadingHTTPServer(("127.0.0.2", free_port()), Storage)
    threading.Thread(target=storage.serve_forever, daemon=True).start()
    other = f"http://127.0.0.2:{storage.server_address[1]}"

    def redirect(req: httpx.Request, resp: httpx.Response) -> httpx.Response | None:
        if req.method == "GET" and "/blobs/sha256:" in req.url.path and resp.status_code == 200:
            hexdigest = req.url.path.rsplit(":", 1)[1]
            return httpx.Response(307, headers={"Location": f"{other}/{hexdigest}"})
        return None

    try:
        with client(basic_registry, transport=Tamper(redirect), credential=cred) as c:
            pulled, _ = pull(project, ref, c)
    finally:
        storage.shutdown()
        storage.server_close()
    assert pulled.digest == report.digest
    assert seen and seen == [None] * len(seen)  # followed, but no Authorization went along


def test_pull_of_unknown_tag_and_unreachable_registry(
    project: Workspace, tether: Callable[..., Any], registry: Registry
) -> None:
    res = tether("pull", f"{registry.host}/nothing/here:v9", "--plain-http")
    assert res.exit_code == 1 and "has no nothing/here:v9" in res.output
    res = tether("pull", f"127.0.0.1:{free_port()}/x/y:v1", "--plain-http")
    assert res.exit_code == 1 and "cannot reach" in res.output
    res = tether("push", "demo:v1")
    assert res.exit_code == 2 and "names no registry" in res.output
    with pytest.raises(ModelKitNotFound), client(registry) as c:
        c.get_manifest("nothing/here", "v9")


# -- models and provenance on a registry ------------------------------------------------


def _other_project(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> tuple[Workspace, Callable[..., Any]]:
    from click.testing import CliRunner

    from tether.cli import cli
    from tether.workspace import init_workspace

    from .conftest import demo_tree

    root = tmp_path / name
    root.mkdir()
    write_tree(root, demo_tree())
    init_workspace(root)
    separate_database(request, root)
    ws = Workspace.open(root)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["-C", str(root), *args], catch_exceptions=False)

    return ws, run


def _outside_project(tmp_path: Path, *args: str) -> Any:
    """The CLI started in an empty folder: no project, only the registry."""
    import contextlib

    from click.testing import CliRunner

    from tether.cli import cli

    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    with contextlib.chdir(empty):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_provenance_travels_with_push_and_pull(
    project: Workspace,
    tether: Callable[..., Any],
    registry: Registry,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    from tether.lineage.graph import lineage

    from .conftest import train

    run_id = train(tether, project, "v1", "alpha")
    res = tether("pack", "--from-run", "v1", "-t", "demo:v1")
    assert res.exit_code == 0, res.output
    ref = f"{registry.host}/prov/demo:v1"
    res = tether("push", "demo:v1", ref, "--plain-http", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["provenance"] == 1

    # Read from the registry alone, outside any project.
    res = _outside_project(tmp_path, "inspect", "--provenance", ref, "--plain-http", "--json")
    assert res.exit_code == 0, res.output
    (statement,) = json.loads(res.output)
    assert statement["predicate"]["runDetails"]["metadata"]["invocationId"] == run_id

    # Someone with push rights attaches a forged "provenance" to the same ModelKit.
    from tether.modelkit.provenance import referrer_manifest
    from tether.oci import mediatypes as mt

    kit = project.index.resolve(parse_reference("demo:v1")).descriptor
    forged = json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": []}).encode()
    junk = referrer_manifest(Digest.of_bytes(forged), len(forged), kit)
    with client(registry) as c:
        for desc, data in ((junk.layers[0], forged), (junk.config, mt.EMPTY_JSON)):
            c.upload_blob("prov/demo", desc, lambda data=data: io.BytesIO(data))
        c.attach("prov/demo", junk.to_bytes(), mt.OCI_MANIFEST, kit.digest, mt.IN_TOTO)

    # Another project pulls it: the genuine Statement comes along, verified, the forged
    # one is left out (and said so), and lineage reads the Statement there although
    # that database never saw the run.
    other, run_other = _other_project(request, tmp_path, "elsewhere")
    res = run_other("pull", ref, "--plain-http", "--json")
    assert res.exit_code == 0, res.output
    pulled = json.loads(res.output)
    assert pulled["provenance"] == 1 and pulled["provenance_refused"] == 1
    assert len(other.index.referrers(kit.digest)) == 1
    res = run_other("inspect", "--provenance", ref)
    assert res.exit_code == 0 and f"({run_id})" in res.output
    graph = lineage(other, ref)
    (run,) = graph.of_kind("run")
    assert run.attrs["from_provenance"] and run.attrs["seed"] == 42
    assert "data/ratings.csv" in {n.label for n in graph.of_kind("data")}
    other.close()


def test_model_push_mirrors_aliases_and_history_reads_from_the_registry(
    project: Workspace,
    tether: Callable[..., Any],
    registry: Registry,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    pack(project, tether, "demo:v1.0.0")
    (project.root / "models" / "model.pkl").write_bytes(b"weights two")
    pack(project, tether, "demo:v2.0.0")
    for step in [
        ("model", "register", "recs", "--from", "demo:v1.0.0"),
        ("model", "register", "recs", "--from", "demo:v2.0.0"),
        ("model", "alias", "recs", "production", "v1", "-m", "first release"),
        ("model", "alias", "recs", "production", "v2", "-m", "better RMSE"),
        ("model", "rollback", "recs", "production", "-m", "v2 misbehaves"),
        ("model", "alias", "recs", "staging", "v2"),
    ]:
        res = tether(*step)
        assert res.exit_code == 0, (step, res.output)
    dest = f"{registry.host}/team/recs"
    res = tether("model", "push", "recs", dest, "--plain-http", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["versions"] == ["v1", "v2"] and report["aliases"] == ["production", "staging"]

    from tether.modelkit.remote import remote_tags
    from tether.registry import models

    with client(registry) as c:
        tags = {t.tag: t.digest for t in remote_tags(c, dest)}
    assert set(tags) == {"v1", "v2", "production", "staging", "tether.history"}
    assert tags["production"] == models.resolve(project, "recs@v1").digest
    assert tags["staging"] == tags["v2"] == models.resolve(project, "recs@v2").digest

    # The registry alone answers the history, outside any project.
    res = _outside_project(tmp_path, "model", "history", dest, "--plain-http", "--json")
    assert res.exit_code == 0, res.output
    remote = [
        (e["alias"], e["action"], e["from"], e["to"], e["reason"]) for e in json.loads(res.output)
    ]
    local = [
        (e.alias, e.action, e.old_version, e.new_version, e.reason)
        for e in models.history(project, "recs")
    ]
    assert remote == local
    assert ("production", "rollback", 2, 1, "v2 misbehaves") in remote

    # A colleague pushes their own moves of the same model: nobody's events are lost.
    other, run_other = _other_project(request, tmp_path, "colleague")
    for step in [
        ("pull", f"{dest}:v2", "--plain-http"),
        ("model", "register", "recs", "--from", f"{dest}:v2"),
        ("model", "alias", "recs", "canary", "v1", "-m", "colleague's canary"),
    ]:
        res = run_other(*step)
        assert res.exit_code == 0, (step, res.output)
    res = run_other("model", "push", "recs", dest, "--plain-http")
    assert res.exit_code == 0, res.output
    with client(registry) as c:
        from tether.registry.remote import read_remote

        merged = read_remote(c, dest)
    reasons = {e.reason for e in merged.events}
    assert {"better RMSE", "v2 misbehaves", "colleague's canary"} <= reasons
    assert len(merged.events) == len(local) + 2  # its register and alias events
    # A later push needs no destination: it was remembered.
    res = tether("model", "alias", "recs", "production", "v2", "-m", "fixed")
    res = tether("model", "push", "recs", "--plain-http")
    assert res.exit_code == 0, res.output
    with client(registry) as c:
        assert (
            remote_tags(c, dest) and c.head_manifest("team/recs", "production").digest == tags["v2"]
        )  # type: ignore[union-attr]
    other.close()
