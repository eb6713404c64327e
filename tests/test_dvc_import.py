"""``tether import dvc``: a DVC project made by the real ``dvc`` (3.67.1, in a
virtualenv of its own), imported from its cache, from a local remote and from S3, every
file checked against DVC's md5; its pipeline stage as a run with lineage."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tether.dvc.importer import DvcImportOptions, import_dvc
from tether.repositories import runs as runs_repo
from tether.workspace import Workspace

DVC = "dvc==3.67.1"
CACHE = Path(__file__).resolve().parent.parent / ".test-cache" / "dvc-3.67.1"
PREPARE = """
import json, pathlib, yaml
seed = yaml.safe_load(open("params.yaml"))["prepare"]["seed"]
rows = open("data/raw.csv").read().splitlines()
out = pathlib.Path("data/prepared")
out.mkdir(parents=True, exist_ok=True)
(out / "train.csv").write_text("\\n".join(rows[: len(rows) // 2]) + "\\n")
(out / "test.csv").write_text("\\n".join(rows[len(rows) // 2 :]) + "\\n")
(out / "meta.json").write_text(json.dumps({"seed": seed}))
"""


@pytest.fixture(scope="session")
def dvc_bin() -> Path:
    """The ``dvc`` command of its own virtualenv, made on first use (uv when there)."""
    python = CACHE / "bin" / "python"
    if subprocess.run([str(python), "-c", "import dvc"], capture_output=True,
                      check=False).returncode if python.exists() else True:  # fmt: skip
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(CACHE)], check=True)
        uv = shutil.which("uv")
        install = ([uv, "pip", "install", "--quiet", "--python", str(python)] if uv
                   else [str(python), "-m", "pip", "install", "--quiet"])  # fmt: skip
        subprocess.run([*install, DVC], check=True, timeout=1200)
    return CACHE / "bin" / "dvc"


@pytest.fixture(scope="session")
def dvc_template(dvc_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DVC project: a tracked file (CRLF lines), a tracked folder with a subfolder,
    a stage with params, its outputs in the cache, everything pushed to a local remote."""
    root = tmp_path_factory.mktemp("dvc") / "project"
    (root / "data" / "images" / "cats").mkdir(parents=True)
    (root / "data" / "raw.csv").write_bytes(
        b"".join(b"%d,%d\r\n" % (i, i * i) for i in range(2000))
    )
    for i in range(5):
        (root / "data" / "images" / f"{i}.bin").write_bytes(bytes([i]) * (1000 + i))
    (root / "data" / "images" / "cats" / "tom.bin").write_bytes(b"meow" * 300_000)
    (root / "prepare.py").write_text(textwrap.dedent(PREPARE))
    (root / "params.yaml").write_text("prepare:\n  seed: 7\n")
    (root / "dvc.yaml").write_text(
        textwrap.dedent("""
        stages:
          prepare:
            cmd: python prepare.py
            deps: [prepare.py, data/raw.csv]
            params: [prepare.seed]
            outs: [data/prepared]
    """)
    )

    def dvc(*args: str) -> None:
        done = subprocess.run([str(dvc_bin), *args], cwd=root, capture_output=True, text=True,
                              env={"PATH": f"{dvc_bin.parent}:/usr/bin:/bin",
                                   "HOME": str(root.parent), "DVC_NO_ANALYTICS": "1"})  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]

    dvc("init", "--no-scm")
    dvc("add", "data/raw.csv")
    dvc("add", "data/images")
    dvc("repro")
    dvc("remote", "add", "-d", "storage", "../remote")
    dvc("push")
    return root


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def dvc_project(dvc_template: Path, project: Workspace) -> Path:
    """The DVC project copied into the tether project (its root is the DVC root)."""
    shutil.copytree(dvc_template, project.root, dirs_exist_ok=True)
    shutil.copytree(dvc_template.parent / "remote", project.root.parent / "remote")
    return project.root


def test_a_dvc_project_imports_verified_with_its_pipeline(
    dvc_project: Path, project: Workspace
) -> None:
    planned = import_dvc(project, DvcImportOptions(dry_run=True))
    assert sorted(p.path for p in planned.paths) == ["data/images", "data/prepared", "data/raw.csv"]
    assert planned.runs == ["prepare"] and not (dvc_project / "data" / "raw.csv.tether").exists()
    done = import_dvc(project, DvcImportOptions())
    assert done.failed == []
    # Every file checked against DVC's md5: 1 + 6 + 3.
    assert done.verified_files == 10
    by_path = {p.path: p for p in done.paths}
    assert by_path["data/raw.csv"].digest == _sha(dvc_project / "data" / "raw.csv")
    assert by_path["data/images"].files == 6 and by_path["data/prepared"].files == 3
    for p in by_path:
        assert (dvc_project / f"{p}.tether").is_file()
    assert (dvc_project / "data" / "raw.csv.dvc").is_file()  # left for the user
    # The stage is a finished run: its deps in, its outs out, its params.
    (run,) = runs_repo.load_runs(project.db, [runs_repo.resolve(project.db, "prepare")])
    assert run.status == "finished" and run.command == ("python", "prepare.py")
    assert run.params == {"prepare.seed": "7"}
    inputs = {f.path: f.digest for f in run.files_with_role("input")}
    assert inputs == {
        "prepare.py": _sha(dvc_project / "prepare.py"),
        "data/raw.csv": by_path["data/raw.csv"].digest,
    }
    outputs = {f.path: f.digest for f in run.files_with_role("output")}
    prepared = dvc_project / "data" / "prepared"
    assert outputs == {f"data/prepared/{p.name}": _sha(p) for p in prepared.iterdir()}
    lineage = subprocess.run(
        [sys.executable, "-m", "tether", "-C", str(dvc_project), "lineage",
         "path:data/prepared/train.csv"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "prepare" in lineage and "data/raw.csv" in lineage
    # Again: nothing changes, the stage is not recorded twice.
    again = import_dvc(project, DvcImportOptions())
    assert {p.status for p in again.paths} == {"unchanged"} and again.runs == []


def test_import_reads_a_remote_when_the_cache_is_gone(
    dvc_project: Path, project: Workspace, tmp_path: Path
) -> None:
    originals = {p.relative_to(dvc_project): p.read_bytes()
                 for p in (dvc_project / "data").rglob("*") if p.is_file()
                 and p.suffix != ".dvc" and p.name != ".gitignore"}  # fmt: skip
    shutil.rmtree(dvc_project / ".dvc" / "cache")
    for name in ("raw.csv", "images", "prepared"):
        target = dvc_project / "data" / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    done = import_dvc(project, DvcImportOptions())
    assert done.failed == [] and done.verified_files == 10
    from tether.data.checkout import checkout

    checkout(project)
    for rel, data in originals.items():
        assert (dvc_project / rel).read_bytes() == data, rel


def test_import_reads_an_s3_remote(dvc_project: Path, project: Workspace, s3_endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    remote = dvc_project.parent / "remote"
    for path in remote.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "tether-data", f"dvc/{path.relative_to(remote).as_posix()}")
    with open(dvc_project / ".dvc" / "config", "a") as f:
        f.write(f"['remote \"s3\"']\n    url = s3://tether-data/dvc\n"
                f"    endpointurl = {s3_endpoint}\n")  # fmt: skip
    shutil.rmtree(dvc_project / ".dvc" / "cache")
    shutil.rmtree(remote)
    for name in ("raw.csv", "images", "prepared"):
        target = dvc_project / "data" / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    done = import_dvc(project, DvcImportOptions(remote="s3"))
    assert done.failed == [] and done.verified_files == 10


def test_damaged_bytes_are_refused_and_no_pointer_is_written(
    dvc_project: Path, project: Workspace
) -> None:
    md5 = hashlib.md5((dvc_project / "data" / "raw.csv").read_bytes()).hexdigest()
    cached = dvc_project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    cached.write_bytes(cached.read_bytes().replace(b"7,49", b"7,50"))
    (dvc_project / "data" / "raw.csv").unlink()  # no good copy in the workspace either
    shutil.rmtree(dvc_project.parent / "remote")
    done = import_dvc(project, DvcImportOptions())
    assert any("data/raw.csv" in f and "md5" in f for f in done.failed)
    assert not (dvc_project / "data" / "raw.csv.tether").exists()
    assert (dvc_project / "data" / "images.tether").is_file()  # the rest came over
    # The stage reads raw.csv, so it is not recorded without it.
    assert "prepare" not in done.runs
