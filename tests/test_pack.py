from __future__ import annotations

import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from tether.errors import KitfileError, UsageError
from tether.hashing import Digest
from tether.modelkit.load import load
from tether.modelkit.pack import pack
from tether.modelkit.unpack import unpack
from tether.oci import mediatypes as mt
from tether.oci.reference import parse_tag_list
from tether.reporting import Callbacks
from tether.workspace import Workspace, init_workspace

from .conftest import demo_tree, write_tree


def _layer_names(ws: Workspace, digest: str) -> list[str]:
    with ws.store.open(Digest.parse(digest)) as f, tarfile.open(fileobj=f, mode="r|") as tf:
        return [m.name for m in tf]


def test_same_files_same_digest_in_any_directory(tmp_path: Path) -> None:
    digests = []
    for i, umask in enumerate((0o022, 0o077)):
        root = tmp_path / f"elsewhere-{i}" / "project"
        root.mkdir(parents=True)
        old = os.umask(umask)  # different umasks give different file modes on disk
        try:
            write_tree(root, demo_tree())
        finally:
            os.umask(old)
        init_workspace(root)
        ws = Workspace.open(root)
        digests.append(pack(ws, tags=parse_tag_list("demo:v1")).digest)
        ws.close()
    assert digests[0] == digests[1]


def test_manifest_is_kitops_format(project: Workspace) -> None:
    result = pack(project, tags=parse_tag_list("demo:v1.0.0"))
    doc = json.loads(project.store.read_bytes(result.digest))
    assert doc["mediaType"] == mt.OCI_MANIFEST
    assert doc["artifactType"] == mt.KIT_ARTIFACT
    assert doc["config"]["mediaType"] == mt.KIT_CONFIG
    assert [layer["mediaType"] for layer in doc["layers"]] == [
        "application/vnd.kitops.modelkit.model.v1.tar",
        "application/vnd.kitops.modelkit.code.v1.tar",
        "application/vnd.kitops.modelkit.dataset.v1.tar",
        "application/vnd.kitops.modelkit.docs.v1.tar",
    ]
    assert [layer["annotations"][mt.ANN_FILEPATH] for layer in doc["layers"]] == [
        "models/model.pkl",
        "src",
        "data/ratings.csv",
        "README.md",
    ]
    assert "annotations" not in doc, "no timestamp unless SOURCE_DATE_EPOCH"
    config = json.loads(project.store.read_bytes(result.manifest.config.digest))
    assert config["model"]["digest"] == doc["layers"][0]["digest"]
    assert config["model"]["diffId"] == doc["layers"][0]["digest"], "uncompressed: diffId = digest"
    assert config["datasets"][0]["digest"] == doc["layers"][2]["digest"]
    # Entry names are relative to the context and include parent directories.
    assert _layer_names(project, doc["layers"][0]["digest"]) == ["models", "models/model.pkl"]
    with (
        project.store.open(result.manifest.layers[0].digest) as f,
        tarfile.open(fileobj=f, mode="r|") as tf,
    ):
        for m in tf:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 1000, 0, "", "")


def test_source_date_epoch(project: Workspace) -> None:
    result = pack(project, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert result.manifest.annotations[mt.ANN_CREATED] == "2023-11-14T22:13:20Z"
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        pack(project, env={"SOURCE_DATE_EPOCH": "yesterday"})


def test_nested_layers_hold_each_file_once(project: Workspace) -> None:
    (project.root / "Kitfile").write_text(
        "manifestVersion: 1.0.0\nmodel: {path: models/model.pkl}\ncode: [{path: .}]\n"
    )
    result = pack(project)
    code_names = _layer_names(project, str(result.manifest.layers[1].digest))
    assert "models/model.pkl" not in code_names
    assert "src/train.py" in code_names and "README.md" in code_names
    assert not any(n.startswith(".tether") or n == "Kitfile" for n in code_names)


def test_kitignore_symlinks_and_special_files(project: Workspace) -> None:
    root = project.root
    (root / ".kitignore").write_text("**/*.log\n!src/keep.log\n")
    (root / "src" / "debug.log").write_text("noise")
    (root / "src" / "keep.log").write_text("keep")
    (root / "src" / "link.py").symlink_to(root / "src" / "train.py")
    os.mkfifo(root / "src" / "pipe")
    (root / "src" / ".DS_Store").write_text("junk")
    warnings: list[str] = []
    result = pack(project, report=Callbacks(on_warn=warnings.append))
    names = _layer_names(project, str(result.manifest.layers[1].digest))
    assert "src/keep.log" in names
    assert not {"src/debug.log", "src/link.py", "src/pipe", "src/.DS_Store"} & set(names)
    assert any("symlink src/link.py" in w for w in warnings)
    assert any("src/pipe" in w for w in warnings)


def test_missing_path_and_symlinked_layer_path(project: Workspace) -> None:
    shutil.rmtree(project.root / "data")
    with pytest.raises(KitfileError, match=r"datasets\[0\]: path 'data/ratings.csv' does not"):
        pack(project)
    (project.root / "data").mkdir()
    (project.root / "data" / "ratings.csv").symlink_to(project.root / "README.md")
    with pytest.raises(KitfileError, match="symbolic link"):
        pack(project)
    assert project.index.entries() == []


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_layers_round_trip(project: Workspace, tmp_path: Path, compression: str) -> None:
    result = pack(project, tags=parse_tag_list(f"demo:{compression}"), compression=compression)
    assert all(layer.media_type.endswith(f"+{compression}") for layer in result.manifest.layers)
    config = json.loads(project.store.read_bytes(result.manifest.config.digest))
    assert config["model"]["diffId"] != config["model"]["digest"]
    again = pack(project, compression=compression)
    assert again.digest == result.digest, "compressed packs are deterministic too"
    unpack(project, f"demo:{compression}", tmp_path / "out")
    assert (tmp_path / "out" / "models" / "model.pkl").read_bytes() == (
        project.root / "models" / "model.pkl"
    ).read_bytes()


def test_prompts_and_mcp_servers(project: Workspace, tmp_path: Path) -> None:
    root = project.root
    write_tree(root, {"prompts": {"system.prompt.md": "You are helpful."}})
    with zipfile.ZipFile(root / "fs.mcpb", "w") as zf:
        zf.writestr("manifest.json", "{}")
    (root / "Kitfile").write_text(
        "manifestVersion: 1.0.0\nprompts: [{name: sys, path: prompts/system.prompt.md}]\n"
        "mcpServers: [{name: fs, path: fs.mcpb}]\n"
    )
    result = pack(project, tags=parse_tag_list("agent:v1"))
    prompt, mcp = result.manifest.layers
    assert prompt.media_type == "application/vnd.kitops.modelkit.code.v1.tar"
    assert prompt.annotations[mt.ANN_LAYER_SUBTYPE] == "prompt"
    assert mcp.media_type == "application/vnd.kitops.modelkit.mcpb.v1.raw"
    kit = load(project, "agent:v1")
    assert [layer.filter_type for layer in kit.layers] == ["prompts", "mcpservers"]
    unpack(project, "agent:v1", tmp_path / "out")
    assert zipfile.ZipFile(tmp_path / "out" / "fs.mcpb").namelist() == ["manifest.json"]
    (root / "fs.mcpb").write_text("not a zip")
    with pytest.raises(KitfileError, match="not an MCP bundle"):
        pack(project)


def test_empty_kitfile_packs_no_layers(project: Workspace) -> None:
    (project.root / "Kitfile").write_text("manifestVersion: 1.0.0\n")
    result = pack(project, tags=parse_tag_list("empty:v1"))
    assert result.manifest.layers == ()


def test_kitfile_option_and_missing_kitfile(project: Workspace, tmp_path: Path) -> None:
    other = tmp_path / "Other.yaml"
    other.write_text("manifestVersion: 1.0.0\ndocs: [{path: README.md}]\n")
    result = pack(project, kitfile=other)
    assert len(result.manifest.layers) == 1
    (project.root / "Kitfile").unlink()
    with pytest.raises(UsageError, match="no Kitfile"):
        pack(project)


@pytest.mark.parametrize(
    ("rel", "is_dir", "size", "mode"),
    [
        ("models", True, 0, 0o755),
        ("models/m.bin", False, 12345, 0o644),
        ("run.sh", False, 0, 0o755),
        ("x" * 100, False, 7, 0o644),
        ("x" * 101, False, 7, 0o644),
        ("données/é.csv", False, 3, 0o644),
        ("a/" * 60 + "b", False, 1, 0o644),
    ],
)
def test_fast_tar_headers_equal_tarfiles(rel: str, is_dir: bool, size: int, mode: int) -> None:
    from tether.modelkit.tarwrite import FileEntry, header

    entry = FileEntry(rel, None if is_dir else Path("unused"), size, mode)
    info = tarfile.TarInfo(rel)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size, info.mode, info.mtime, info.uid, info.gid = size, mode, 0, 1000, 0
    info.uname = info.gname = ""
    assert header(entry) == info.tobuf(
        format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
    )
