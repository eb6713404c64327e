from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tether.cli import cli
from tether.workspace import Workspace

Tether = Callable[..., Result]
COMMANDS = [
    "init", "pack", "list", "inspect", "diff", "tag", "remove", "unpack", "rollback", "gc",
    "run", "runs list", "runs show", "runs compare", "runs metrics", "runs log", "runs delete",
    "env show", "env diff", "env export", "add", "status", "checkout", "fsck", "data diff",
    "data push", "data fetch", "data pull", "data du", "remote add", "remote list",
    "remote remove", "reproduce", "explain", "doctor", "login", "logout", "push", "pull",
    "model list", "model register",
    "model versions", "model show", "model alias", "model unalias", "model history",
    "model rollback", "model delete", "model push", "lineage", "migrate", "ui", "completion",
    "server user add", "server user list", "server token create", "server token revoke",
    "server token list", "server project add", "server project list", "server grant",
    "server audit", "server migrate", "server protect", "connect", "disconnect", "sync",
    "import mlflow", "import dvc",
]  # fmt: skip


def test_story_pack_list_diff_rollback(tether: Tether, project: Workspace) -> None:
    r = tether("pack", "-t", "demo:v1.0.0,latest")
    assert r.exit_code == 0, r.output
    assert "Packed demo:v1.0.0, demo:latest: sha256:" in r.output
    (project.root / "models" / "model.pkl").write_bytes(b"v2 weights")
    (project.root / "src" / "new.py").write_text("print(2)\n")
    (project.root / "Kitfile").write_text(
        (project.root / "Kitfile").read_text().replace("version: 1.0.0", "version: 2.0.0")
    )
    assert tether("pack", "-t", "demo:v2.0.0").exit_code == 0

    r = tether("list")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "MODEL", "VERSION", "SIZE"]
    assert [line.split()[1] for line in lines[1:]] == ["latest", "v1.0.0", "v2.0.0"]

    r = tether("diff", "demo:v1.0.0", "demo:v2.0.0")
    assert r.exit_code == 0, r.output
    assert "~ package.version: 1.0.0 -> 2.0.0" in r.output
    assert "~ models/model.pkl" in r.output and "+ src/new.py" in r.output
    data = json.loads(tether("diff", "demo:v1.0.0", "demo:v2.0.0", "--json").output)
    assert {f["path"]: f["change"] for f in data["files"]} == {
        "models/model.pkl": "modified",
        "src/new.py": "added",
    }

    r = tether("rollback", "demo:v1.0.0", "--dry-run")
    assert "would restore  models/model.pkl" in r.output
    assert (project.root / "models" / "model.pkl").read_bytes() == b"v2 weights"
    r = tether("rollback", "demo:v1.0.0", "--json")
    report = json.loads(r.output)
    assert sorted(report["replaced"]) == ["Kitfile", "models/model.pkl"]
    assert report["extra"] == ["src/new.py"]
    assert (project.root / "models" / "model.pkl").read_bytes() == b"model-v1" * 1000
    r = tether("rollback", "demo:v1.0.0", "--clean")
    assert "removed  src/new.py" in r.output and not (project.root / "src" / "new.py").exists()
    # The rolled-back project packs to exactly version 1's digest.
    v1 = json.loads(tether("inspect", "demo:v1.0.0", "--json").output)["digest"]
    assert json.loads(tether("pack", "--json").output)["digest"] == v1


def test_inspect_tag_remove_gc_unpack(tether: Tether, project: Workspace, tmp_path: Path) -> None:
    tether("pack", "-t", "demo:v1")
    r = tether("inspect", "demo:v1")
    assert "Digest:     sha256:" in r.output and "models/model.pkl" in r.output
    doc = json.loads(tether("inspect", "demo:v1", "--json").output)
    assert doc["kitfile"]["package"]["name"] == "demo"
    assert doc["manifest"]["artifactType"] == "application/vnd.kitops.modelkit.manifest.v1+json"
    assert tether("tag", "demo:v1", "demo:prod").output.startswith("Tagged demo:prod")
    assert "already points" in tether("tag", "demo:v1", "demo:prod").output
    r = tether("unpack", "demo:prod", "-d", str(tmp_path / "out"), "--filter", "model")
    assert r.exit_code == 0 and (tmp_path / "out" / "models" / "model.pkl").exists()
    assert tether("remove", "demo:prod").exit_code == 0
    assert tether("remove", "demo:v1").exit_code == 0
    r = tether("gc", "--force", "--json")
    assert len(json.loads(r.output)["removed"]) == 6
    assert "no ModelKits" in tether("list").output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["inspect", "nope:v1"], 1, "error: no ModelKit nope:v1 in the local store"),
        (["inspect", "Bad:Ref:x"], 2, "error: invalid"),
        (["pack", "-t", "demo:bad tag"], 2, "error: invalid reference"),
        (["pack", "--compression", "lzma"], 2, "Invalid value"),
        (["unpack", "demo:v1", "--filter", "weights"], 2, "unknown filter type"),
        (["diff", "demo:v1"], 2, "Missing argument"),
        (["rollback", "demo:v9"], 1, "no ModelKit demo:v9"),
    ],
)
def test_errors_are_one_line_with_hint(
    tether: Tether, args: list[str], code: int, message: str
) -> None:
    tether("pack", "-t", "demo:v1")
    r = tether(*args)
    assert r.exit_code == code, r.output
    assert message in r.output
    if message.startswith("error:"):
        assert "hint: " in r.output and "Traceback" not in r.output


def test_bad_kitfile_changes_nothing(tether: Tether, project: Workspace) -> None:
    (project.root / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: ../../etc\n")
    before = sorted(p.name for p in (project.store.blobs_dir).iterdir())
    r = tether("pack", "-t", "demo:v1")
    assert r.exit_code == 1
    assert "error: Kitfile, line 3: model.path '../../etc': paths outside" in r.output
    assert sorted(p.name for p in (project.store.blobs_dir).iterdir()) == before
    assert project.index.entries() == []


def test_version_tag_conflict_via_cli(tether: Tether, project: Workspace) -> None:
    tether("pack", "-t", "demo:v1.0.0")
    (project.root / "models" / "model.pkl").write_bytes(b"other")
    r = tether("pack", "-t", "demo:v1.0.0")
    assert r.exit_code == 1 and "version tag" in r.output and "--force" in r.output
    r = tether("pack", "-t", "demo:v1.0.0", "--force")
    assert r.exit_code == 0 and "moved demo:v1.0.0 (was " in r.output


def test_outside_a_project(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["-C", str(tmp_path), "list"])
    assert r.exit_code == 1
    assert "no tether project" in r.output and "tether init" in r.output


def test_init_proposes_a_kitfile(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    (root / "models").mkdir(parents=True)
    (root / "models" / "big.safetensors").write_bytes(b"x" * 100)
    (root / "models" / "small.onnx").write_bytes(b"x")
    (root / "data").mkdir()
    (root / "data" / "a.csv").write_text("a\n")
    (root / "train").mkdir()
    (root / "train" / "fit.py").write_text("")
    (root / "README.md").write_text("# x")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "junk.py").write_text("")
    r = CliRunner().invoke(cli, ["init", str(root)])
    assert r.exit_code == 0 and "Proposed Kitfile" in r.output
    from tether.manifest.kitfile import Kitfile

    kf, _ = Kitfile.from_yaml((root / "Kitfile").read_bytes())
    assert kf.model and kf.model.path == "models/big.safetensors"
    assert [p.path for p in kf.model.parts or []] == ["models/small.onnx"]
    assert [c.path for c in kf.code or []] == ["train"]
    assert [d.path for d in kf.datasets or []] == ["data"]
    assert [d.path for d in kf.docs or []] == ["README.md"]
    assert ".tether/store/" in (root / ".gitignore").read_text()
    r = CliRunner().invoke(cli, ["init", str(root)])
    assert r.exit_code == 0 and "kept the existing Kitfile" in r.output
    r = CliRunner().invoke(cli, ["-C", str(root), "pack", "-t", "fresh:v1"])
    assert r.exit_code == 0, r.output


def test_the_list_above_is_every_command() -> None:
    import click

    def leaves(group: click.Group, prefix: str = "") -> list[str]:
        out = []
        for name, command in group.commands.items():
            path = f"{prefix} {name}".strip()
            out += leaves(command, path) if isinstance(command, click.Group) else [path]
        return out

    assert sorted(leaves(cli)) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_docs(command: str) -> None:
    r = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert r.exit_code == 0 and len(r.output.splitlines()) > 3
    docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    assert re.search(rf"^## `tether {command}", docs, re.M), f"docs/cli.md lacks {command}"


def test_python_dash_m_and_import_is_light() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tether", "--version"], capture_output=True, text=True, check=True
    )
    assert "tether, version" in r.stdout
    code = (
        "import sys, tether.cli; "
        "heavy = {'pydantic', 'rich', 'yaml', 'sqlite3', 'zstandard', 'starlette', 'uvicorn', "
        "'jinja2', 'httpx'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]", f"tether --help imports {out}"


@pytest.mark.skopeo
def test_skopeo_reads_the_store(tether: Tether, project: Workspace, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        if os.environ.get("CI"):
            pytest.fail("skopeo is missing in CI; .ci/run must install it")
        pytest.skip("skopeo not installed (.ci/run installs it)")
    tether("pack", "-t", "demo:v1.0.0")
    digest = json.loads(tether("inspect", "demo:v1.0.0", "--json").output)["digest"]
    big = tmp_path / "big.bin"  # a chunked blob beside: the layout stays skopeo's to read
    big.write_bytes(os.urandom(9 << 20))
    project.store.put_chunked(big)
    assert (project.dot / "store" / "chunklists" / "sha256").is_dir()
    dest = tmp_path / "copy"
    subprocess.run(
        ["skopeo", "copy", f"oci:{project.dot / 'store'}:demo:v1.0.0", f"oci:{dest}:v1"],
        check=True,
        capture_output=True,
    )
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest, "skopeo keeps the manifest byte-identical"
    for blob in (dest / "blobs" / "sha256").iterdir():
        assert (
            project.dot / "store" / "blobs" / "sha256" / blob.name
        ).read_bytes() == blob.read_bytes()
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{project.dot / 'store'}:demo:v1.0.0"],
        check=True,
        capture_output=True,
    ).stdout
    assert json.loads(raw)["artifactType"] == "application/vnd.kitops.modelkit.manifest.v1+json"
