"""Data remotes for real: a directory, and S3 served by moto on 127.0.0.1. Round trips,
only-missing transfers, an interrupted push resumed, corrupt objects refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from tests.test_data import _tether_process, make_files, snapshot
from tether.data.status import status
from tether.workspace import Workspace


def _wipe_local(ws: Workspace, data: Path) -> None:
    """Lose the working copy and every blob: only the pointers (as in a fresh clone)."""
    subprocess.run(["rm", "-rf", str(data)], check=True)
    for d in [*ws.store, *ws.store.chunks]:
        ws.store.delete(d)


def test_directory_remote_round_trip_sends_only_missing(
    project: Workspace, tether: Callable[..., Result], tmp_path: Path
) -> None:
    data = project.root / "data" / "set"
    make_files(data, 1500, dirs=15, size=4096)
    big = project.root / "data" / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    assert tether("add", "data/set", "data/big.bin").exit_code == 0
    r = tether("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    assert r.exit_code == 0
    first = json.loads(tether("data", "push", "--json").output)
    # 1,500 files + 16 trees packed into few objects; the big file travels alone.
    assert first["objects"] == 1500 + 16 + 1
    assert 1 <= first["packs"] <= 8
    assert len(os.listdir(tmp_path / "remote" / "blobs" / "sha256")) == 1
    again = json.loads(tether("data", "push", "--json").output)
    assert again["objects"] == 0 and again["already_there"] == first["objects"]
    # One more file: only it and the trees on its path travel.
    (data / "d00" / "extra.bin").write_bytes(b"extra")
    tether("add", "data/set")
    third = json.loads(tether("data", "push", "--json").output)
    assert third["objects"] == 1 + 2  # the file, its folder's tree, the root tree

    expected = snapshot(project.root / "data")
    _wipe_local(project, data)
    big.unlink()
    r = tether("data", "pull")
    assert r.exit_code == 0, r.output
    assert snapshot(project.root / "data") == expected
    assert {s.state for s in status(project)} == {"clean"}


def test_interrupted_push_resumes(project: Workspace, tmp_path: Path) -> None:
    data = project.root / "data" / "models"
    data.mkdir(parents=True)
    for i in range(12):
        (data / f"shard{i:02}.bin").write_bytes(os.urandom(2 << 20))
    remote = tmp_path / "remote"
    from tether.data.remote import add_remote
    from tether.data.track import add

    add(project, [data])
    add_remote(project, "origin", str(remote), default=True)
    proc = _tether_process(project.root, "data", "push", "--jobs", "1")
    blobs = remote / "blobs" / "sha256"
    while not (blobs.is_dir() and len([n for n in os.listdir(blobs) if len(n) == 64]) >= 2):
        assert proc.poll() is None, "push finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    sent_before = len([n for n in os.listdir(blobs) if len(n) == 64])
    assert 2 <= sent_before < 12
    r = _tether_process(project.root, "data", "push", "--json")
    out, err = r.communicate(timeout=120)
    assert r.returncode == 0, err
    report = json.loads(out)
    assert report["objects"] == 12 + 1 - sent_before  # the rest, plus the tree
    # Nothing half-written is visible: every object on the remote has its right bytes.
    expected = snapshot(data)
    _wipe_local(project, data)
    from tether.data.transfer import pull

    pull(project)
    assert snapshot(data) == expected


def test_corrupt_object_on_remote_is_refused(
    project: Workspace, tether: Callable[..., Result], tmp_path: Path
) -> None:
    data = project.root / "data" / "set"
    make_files(data, 40, dirs=4)
    tether("add", "data/set")
    tether("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    tether("data", "push")
    [pack] = (tmp_path / "remote" / "packs").glob("*.pack")
    pack.chmod(0o644)
    raw = bytearray(pack.read_bytes())
    raw[-10] ^= 0xFF  # inside the last blob of the pack
    pack.write_bytes(bytes(raw))
    _wipe_local(project, data)
    r = tether("data", "pull")
    assert r.exit_code == 1
    assert "did not match their digest and were refused" in r.output and "hint:" in r.output
    for d in project.store:
        assert project.store.verify(d), "nothing unverified entered the store"
    assert not data.exists() or not any(data.rglob("*.bin")), "no checkout of partial data"


def test_remote_configuration_errors(project: Workspace, tether: Callable[..., Result]) -> None:
    r = tether("data", "push")
    assert r.exit_code == 1 and "no remote given" in r.output and "remote add" in r.output
    r = tether("remote", "add", "bad name", "/tmp/x")
    assert r.exit_code == 2 and "not valid" in r.output
    r = tether("remote", "add", "s3", "s3://key:secret@bucket/x")
    assert r.exit_code == 2 and "password" in r.output and "secret" not in r.output
    r = tether("remote", "add", "reg", "oci://registry.example/x")
    assert r.exit_code == 2 and "not supported yet" in r.output
    assert tether("remote", "add", "a", "/tmp/a").exit_code == 0
    r = tether("remote", "add", "a", "/tmp/b")
    assert r.exit_code == 1 and "--force" in r.output
    cfg = project.dot / "config.toml"
    assert "# tether project settings" in cfg.read_text(), "comments survive the edit"
    assert json.loads(tether("remote", "list", "--json").output)[0]["url"] == "/tmp/a"
    assert tether("remote", "remove", "a").exit_code == 0
    assert tether("remote", "remove", "a").exit_code == 1


# -- S3 through moto in server mode on loopback -------------------------------------------


def test_s3_remote_round_trip(
    project: Workspace, tether: Callable[..., Result], s3_endpoint: str
) -> None:
    data = project.root / "data" / "set"
    make_files(data, 600, dirs=6, size=2048)
    big = project.root / "data" / "weights.bin"
    big.write_bytes(os.urandom(2 << 20))
    tether("add", "data/set", "data/weights.bin")
    r = tether(
        "remote",
        "add",
        "s3",
        "s3://tether-data/team/proj",
        "--default",
        "--endpoint-url",
        s3_endpoint,
    )
    assert r.exit_code == 0, r.output
    first = json.loads(tether("data", "push", "--json").output)
    assert first["objects"] == 600 + 7 + 1
    assert json.loads(tether("data", "push", "--json").output)["objects"] == 0
    expected = snapshot(project.root / "data")
    _wipe_local(project, data)
    big.unlink()
    r = tether("data", "pull", "--json")
    assert r.exit_code == 0, r.output
    assert snapshot(project.root / "data") == expected
