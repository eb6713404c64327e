"""Environment capture and diff: two real virtualenvs, a fake nvidia-smi on PATH (a
process edge), the variable allowlist and lock files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tether.envcapture.diff import diff_environments
from tether.envcapture.environment import (
    Environment,
    build,
    capture,
    gpu_facts,
    relevant_env_vars,
)
from tether.workspace import Workspace


def make_venv(path: Path, packages: dict[str, str]) -> Path:
    """A real venv with distributions installed the way pip leaves them (dist-info)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(path), "platbase": str(path)})
    for name, version in packages.items():
        info = Path(purelib) / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")
    return path / "bin" / "python"


def test_env_diff_between_two_real_venvs(
    project: Workspace, tether: Callable[..., Result], tmp_path: Path
) -> None:
    py_a = make_venv(tmp_path / "venv-a", {"numpy-lite": "1.0", "shared": "2.0", "gone": "0.1"})
    py_b = make_venv(tmp_path / "venv-b", {"numpy-lite": "1.1", "shared": "2.0", "new-pkg": "3"})
    (project.root / "job.py").write_text("print(open('data/ratings.csv').read()[:3])\n")
    assert tether("run", "--name", "a", "--", str(py_a), "job.py").exit_code == 0
    assert tether("run", "--name", "b", "--", str(py_b), "job.py").exit_code == 0

    env_a = json.loads(tether("env", "show", "a", "--json").output)
    assert env_a["packages"] == {"gone": "0.1", "numpy-lite": "1.0", "shared": "2.0"}
    assert env_a["python"]["virtualenv"] is True

    result = tether("env", "diff", "a", "b", "--json")
    assert result.exit_code == 0, result.output
    changes = {(c["section"], c["name"]): (c["kind"], c["a"], c["b"]) for c in
               json.loads(result.output)["changes"]}  # fmt: skip
    assert changes == {
        ("packages", "numpy-lite"): ("changed", "1.0", "1.1"),
        ("packages", "gone"): ("removed", "0.1", None),
        ("packages", "new-pkg"): ("added", None, "3"),
    }
    text = tether("env", "diff", "a", "b").output
    assert "numpy-lite" in text and "changed" in text
    same = tether("env", "diff", "a", "a")
    assert "same environment" in same.output

    compare = tether("runs", "compare", "a", "b")
    assert "numpy-lite" in compare.output and "shared" not in compare.output


def test_same_packages_share_one_environment(
    project: Workspace, tether: Callable[..., Result], tmp_path: Path
) -> None:
    py = make_venv(tmp_path / "v1", {"alpha": "1.0"})
    py2 = make_venv(tmp_path / "v2", {"alpha": "1.0"})  # another path, same content
    (project.root / "job.py").write_text("pass\n")
    tether("run", "--", str(py), "job.py")
    tether("run", "--", str(py2), "job.py")
    assert project.db.query("SELECT count(*) AS n FROM environments")[0]["n"] == 1
    digests = {r["env_digest"] for r in project.db.query("SELECT env_digest FROM runs")}
    assert len(digests) == 1


def test_fake_nvidia_smi_is_probed(tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--query-gpu=name,driver_version,memory.total" ]; then\n'
        '  echo "NVIDIA H100 80GB HBM3, 550.54.15, 81559"; exit 0; fi\n'
        'echo "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |"\n'
    )
    smi.chmod(0o755)
    facts = gpu_facts(str(smi))
    assert facts == {
        "devices": [
            {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory_mib": "81559"}
        ],
        "cuda_driver_api": "12.4",
    }
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    broken.chmod(0o755)
    assert gpu_facts(str(broken)) is None


def test_env_var_allowlist_keeps_secrets_out() -> None:
    env = {
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "2",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "TF_DETERMINISTIC_OPS": "1",
        "AWS_SECRET_ACCESS_KEY": "nope",
        "HF_TOKEN": "nope",
        "TORCH_AUTH_TOKEN": "nope",
        "MKL_LICENSE_KEY": "nope",
        "HOME": "/root",
        "PATH": "/usr/bin",
    }
    assert relevant_env_vars(env) == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "MKL_NUM_THREADS": "2",
        "OMP_NUM_THREADS": "4",
        "PYTHONHASHSEED": "0",
        "TF_DETERMINISTIC_OPS": "1",
    }


def test_lock_files_and_cuda_libraries_are_captured(tmp_path: Path) -> None:
    (tmp_path / "uv.lock").write_text("version = 1\n")
    (tmp_path / "requirements-dev.txt").write_text("pytest==8\n")
    environment = capture(sys.executable, tmp_path, env={"PATH": os.environ["PATH"]})
    assert set(environment.lock_files) == {"requirements-dev.txt", "uv.lock"}
    probe = {"implementation": "cpython", "version": "3.11.7",
             "packages": {"nvidia-cudnn-cu12": "9.1.0.70", "torch": "2.4.0"}}  # fmt: skip
    env = build(probe, env={}, host={"os": {"system": "Linux"}})
    assert env.body["cuda_libraries"] == {"cudnn": "9.1.0.70"}
    other = Environment({**env.body, "packages": {"torch": "2.5.0", "zzz": "1"}})
    names = [c.name for c in diff_environments(env, other).section("packages")]
    assert names[0] == "torch"  # numerical libraries first


def test_broken_interpreter_is_a_clear_error(tmp_path: Path) -> None:
    from tether.envcapture.environment import EnvironmentCaptureError

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'not python' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(EnvironmentCaptureError, match="not python"):
        capture(str(fake), tmp_path)


def test_env_show_current(project: Workspace, tether: Callable[..., Result]) -> None:
    result = tether("env", "show")
    assert result.exit_code == 0
    assert "python      cpython" in result.output and "click==" in result.output


def test_env_show_json_is_the_record_with_its_digest(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    result = tether("env", "show", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    digest = data.pop("digest")
    assert Environment(data).digest == digest
    assert data["packages"]["click"]


def test_typed_facts_read_an_old_record_with_sections_missing() -> None:
    # A record of an older release: no cpu flags, no os distro, no gpu, no sources.
    old = Environment(
        {
            "format": 1,
            "python": {"implementation": "cpython", "version": "3.10.4"},
            "packages": {"numpy": "1.26.4", "torch": "2.1.0"},
            "os": {"system": "Linux", "release": "5.15.0", "machine": "x86_64"},
            "cpu": {"count": 8},
            "package_sources": {"torch": {"vcs": "git", "commit": "abc123"}},
        }
    )
    assert old.python.label == "cpython 3.10.4" and not old.python.virtualenv
    assert old.os.label == "Linux 5.15.0 x86_64"
    assert old.cpu.count == 8 and old.cpu.flags == () and old.cpu.model == ""
    assert old.gpu is None and old.memory_bytes == 0 and dict(old.cuda_libraries) == {}
    assert old.package_sources["torch"].vcs == "git"
    assert not old.package_sources["torch"].editable
    # The typed view never changes what the digest is taken of.
    assert Environment(json.loads(old.canonical)).digest == old.digest
    with_gpu = Environment(
        {
            **old.body,
            "gpu": {
                "devices": [{"name": "H200", "driver": "560.35", "memory_mib": "143771"}],
                "cuda_driver_api": "12.6",
            },
        }
    )
    assert with_gpu.gpu is not None and with_gpu.gpu.devices[0].name == "H200"
    assert with_gpu.gpu.cuda_driver_api == "12.6"
