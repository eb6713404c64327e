from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tether.errors import ObjectCorrupted, UnpackConflict, UnsafeArchive, UsageError
from tether.modelkit.load import load
from tether.modelkit.pack import pack
from tether.modelkit.unpack import unpack
from tether.oci import mediatypes as mt
from tether.oci.reference import parse_tag_list
from tether.workspace import Workspace

from .kits import CODE_TAR, entry, make_kit, tar_bytes


def _assert_nothing_written(tmp_path: Path, target: Path) -> None:
    assert not (tmp_path / "evil").exists()
    assert not target.exists() or list(target.iterdir()) == []


HOSTILE = {
    "dotdot": [(entry("../evil"), b"x")],
    "nested-dotdot": [(entry("src/../../evil"), b"x")],
    "absolute": [(entry("/etc/evil"), b"x")],
    "symlink": [(entry("src/link", tarfile.SYMTYPE, linkname="/etc/passwd"), None)],
    "symlink-then-write": [
        (entry("src/x", tarfile.SYMTYPE, linkname="../.."), None),
        (entry("src/x/evil"), b"x"),
    ],
    "hardlink": [(entry("src/hl", tarfile.LNKTYPE, linkname="/etc/passwd"), None)],
    "chardev": [(entry("src/dev", tarfile.CHRTYPE), None)],
    "fifo": [(entry("src/fifo", tarfile.FIFOTYPE), None)],
    "duplicate": [(entry("src/a"), b"1"), (entry("src/a"), b"2")],
    "file-then-dir": [(entry("src/a"), b"1"), (entry("src/a/b"), b"2")],
    "backslash": [(entry("src\\..\\..\\evil"), b"x")],
    "empty-name": [(entry("./"), b"x")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused_and_write_nothing(
    project: Workspace, tmp_path: Path, case: str
) -> None:
    blob = tar_bytes(HOSTILE[case])
    make_kit(project, "evil:v1", [(CODE_TAR, blob, {mt.ANN_FILEPATH: "src"})])
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchive) as exc:
        unpack(project, "evil:v1", target)
    assert exc.value.hint
    _assert_nothing_written(tmp_path, target)


def test_hostile_layer_path_annotation_is_refused(project: Workspace, tmp_path: Path) -> None:
    # A ModelPack artifact without a Kitfile: the unpack path comes from an annotation.
    make_kit(
        project,
        "evil:raw",
        [("application/vnd.cncf.model.weight.v1.raw", b"weights", {mt.ANN_FILEPATH: "../../evil"})],
        config={"descriptor": {}},
        config_media_type=mt.MODELPACK_CONFIG,
        artifact_type=mt.MODELPACK_ARTIFACT,
    )
    with pytest.raises(Exception, match="outside the context"):
        unpack(project, "evil:raw", tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_foreign_modelpack_artifact_unpacks(project: Workspace, tmp_path: Path) -> None:
    weights_tar = entry("models", tarfile.DIRTYPE)
    weights = tar_bytes([(weights_tar, None), (entry("models/w.bin"), b"W" * 100)])
    make_kit(
        project,
        "foreign:v1",
        [
            (
                "application/vnd.cncf.model.weight.v1.tar",
                weights,
                {mt.ANN_FILEPATH: "models/w.bin"},
            ),
            ("application/vnd.cncf.model.doc.v1.raw", b"# readme", {mt.ANN_FILEPATH: "README"}),
        ],
        config={"descriptor": {"name": "x"}},
        config_media_type=mt.MODELPACK_CONFIG,
        artifact_type=mt.MODELPACK_ARTIFACT,
    )
    kit = load(project, "foreign:v1")
    assert [(layer.filter_type, layer.path) for layer in kit.layers] == [
        ("model", "models/w.bin"),
        ("docs", "README"),
    ]
    unpack(project, "foreign:v1", tmp_path / "out", filters=["model,docs"])
    assert (tmp_path / "out" / "models" / "w.bin").read_bytes() == b"W" * 100
    assert (tmp_path / "out" / "README").read_bytes() == b"# readme"


def test_corrupted_blob_is_refused_before_anything_lands(
    project: Workspace, tmp_path: Path
) -> None:
    result = pack(project, tags=parse_tag_list("demo:v1"))
    blob = project.store.path(result.manifest.layers[0].digest)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[600] ^= 0x01  # flip one bit inside the model file's bytes
    blob.write_bytes(bytes(data))
    with pytest.raises(ObjectCorrupted):
        unpack(project, "demo:v1", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_size_limits_stop_bombs(
    project: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack(project, tags=parse_tag_list("demo:v1"))
    monkeypatch.setenv("TETHER_UNPACK_MAX_BYTES", "1000")
    ws = Workspace.open(project.root)
    with pytest.raises(UnsafeArchive, match="unpack limits"):
        unpack(ws, "demo:v1", tmp_path / "out")


def test_refuses_to_overwrite_differing_files(project: Workspace, tmp_path: Path) -> None:
    pack(project, tags=parse_tag_list("demo:v1"))
    target = tmp_path / "out"
    first = unpack(project, "demo:v1", target)
    assert "models/model.pkl" in first.written and "Kitfile" in first.written
    (target / "src" / "train.py").write_text("edited")
    (target / "README.md").write_text("edited too")
    with pytest.raises(UnpackConflict, match="2 file") as exc:
        unpack(project, "demo:v1", target)
    assert "nothing was changed" in (exc.value.hint or "")
    assert (target / "src" / "train.py").read_text() == "edited"
    report = unpack(project, "demo:v1", target, overwrite=True)
    assert sorted(report.replaced) == ["README.md", "src/train.py"]
    assert (target / "src" / "train.py").read_text() == "print('train')\n"


def test_symlink_in_target_is_not_followed(project: Workspace, tmp_path: Path) -> None:
    pack(project, tags=parse_tag_list("demo:v1"))
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "out"
    target.mkdir()
    (target / "models").symlink_to(outside)
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        unpack(project, "demo:v1", target)
    assert list(outside.iterdir()) == []


def test_filters(project: Workspace, tmp_path: Path) -> None:
    pack(project, tags=parse_tag_list("demo:v1"))
    out = tmp_path / "a"
    unpack(project, "demo:v1", out, filters=["datasets:ratings"])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "data/ratings.csv"
    ]
    out = tmp_path / "b"
    unpack(project, "demo:v1", out, filters=["model", "kitfile"])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "Kitfile",
        "models/model.pkl",
    ]
    with pytest.raises(UsageError, match="unknown filter"):
        unpack(project, "demo:v1", out, filters=["weights"])
    with pytest.raises(UsageError, match="matches no layer"):
        unpack(project, "demo:v1", out, filters=["datasets:nope"])


def test_unpacked_kitfile_repacks_to_the_same_digest(project: Workspace, tmp_path: Path) -> None:
    from tether.workspace import init_workspace

    first = pack(project, tags=parse_tag_list("demo:v1"))
    out = tmp_path / "copy"
    unpack(project, "demo:v1", out)
    init_workspace(out)
    ws2 = Workspace.open(out)
    assert pack(ws2).digest == first.digest
