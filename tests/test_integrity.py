"""Never a wrong byte, never a secret, never a traceback: every path that hands bytes out
of the store verifies them; secrets stay out of records and output; hostile strings,
archives, pointers and full disks get an error line, not a crash. All on real files,
processes and (where installed) the real registry."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tether.hashing import Digest
from tether.oci import mediatypes as mt
from tether.workspace import Workspace

from .conftest import train
from .kits import entry, make_kit, tar_bytes

Tether = Callable[..., Result]
CORRUPTIONS = ("flip", "truncate", "empty")
CODE_TAR = "application/vnd.kitops.modelkit.code.v1.tar"
CODE_TGZ = CODE_TAR + "+gzip"


def corrupt(ws: Workspace, digest: str | Digest, how: str) -> None:
    digest = digest if isinstance(digest, Digest) else Digest.parse(digest)
    if not ws.store.has_blob(digest):  # kept in chunks: damage the middle one
        listed = ws.store.chunks.load(digest).chunks
        digest = listed[len(listed) // 2][0]
    path = ws.store.path(digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    elif how == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    os.chmod(path, 0o444)


def pointer_digest(ws: Workspace, rel: str) -> str:
    from tether.data.pointer import read

    return str(read(ws.root, rel + ".tether").digest)


def refused(res: Result, digest: str | None = None) -> None:
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    assert "corrupt" in res.output
    if digest is not None:
        assert digest in res.output, res.output


# -- 1. every writer of store bytes verifies them ---------------------------------------


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("size", [300, 9 << 20])  # one chunk, and several 4 MiB chunks
def test_checkout_refuses_corrupt_blob_and_keeps_the_file(
    project: Workspace, tether: Tether, how: str, size: int
) -> None:
    target = project.root / "data" / "blob.bin"
    old = os.urandom(size)
    target.write_bytes(old)
    assert tether("add", "data/blob.bin").exit_code == 0
    old_pointer = (project.root / "data/blob.bin.tether").read_bytes()
    target.write_bytes(os.urandom(size))
    assert tether("add", "data/blob.bin").exit_code == 0
    new = pointer_digest(project, "data/blob.bin")
    # The working file goes back to v1 (in the store, so checkout may replace it).
    (project.root / "data/blob.bin.tether").write_bytes(old_pointer)
    assert tether("checkout", "data/blob.bin").exit_code == 0
    (project.root / "data/blob.bin.tether").write_text(
        (project.root / "data/blob.bin.tether")
        .read_text()
        .replace(pointer_digest(project, "data/blob.bin"), new)
    )
    corrupt(project, new, how)
    res = tether("checkout", "data/blob.bin")
    refused(res, new)
    assert "tether data pull data/blob.bin" in res.output
    assert "tether add" not in res.output  # never suggest keeping rotten bytes
    assert target.read_bytes() == old
    assert not [p for p in target.parent.iterdir() if ".tether-" in p.name]  # no temp left


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_checkout_of_a_folder_and_hardlinks_verify(
    project: Workspace, tether: Tether, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project.root / "data" / "set"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"row {i}\n" * 100)
    assert tether("add", "data/set").exit_code == 0
    shutil.rmtree(folder)
    digest = str(Digest.of_bytes(("row 1\n" * 100).encode()))
    corrupt(project, digest, how)
    for link in ("reflink,copy", "hardlink,copy"):
        monkeypatch.setenv("TETHER_CHECKOUT_LINK", link)
        res = tether("checkout", "data/set")
        refused(res, digest)
        assert not (folder / "1.txt").exists()


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_data_pull_repairs_a_corrupt_local_blob(
    project: Workspace, tether: Tether, tmp_path: Path, how: str
) -> None:
    assert tether("add", "data/ratings.csv").exit_code == 0
    good = (project.root / "data/ratings.csv").read_bytes()
    assert tether("remote", "add", "backup", str(tmp_path / "remote"), "--default").exit_code == 0
    assert tether("data", "push").exit_code == 0
    digest = pointer_digest(project, "data/ratings.csv")
    corrupt(project, digest, how)
    (project.root / "data/ratings.csv").unlink()
    refused(tether("checkout", "data/ratings.csv"), digest)
    res = tether("data", "pull", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["repaired"] == 1
    assert (project.root / "data/ratings.csv").read_bytes() == good
    assert (project.dot / "quarantine" / Digest.parse(digest).hex).exists()


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_reproduce_refuses_a_corrupt_input_before_running(
    project: Workspace, tether: Tether, how: str
) -> None:
    assert tether("add", "data/ratings.csv").exit_code == 0
    run_id = train(tether, project, "v1", "alpha")
    digest = pointer_digest(project, "data/ratings.csv")
    corrupt(project, digest, how)
    res = tether("reproduce", run_id)
    refused(res, digest)
    assert "REPRODUCED" not in res.output and "DIVERGED" not in res.output


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_unpack_rollback_and_pack_from_run_refuse(
    project: Workspace, tether: Tether, tmp_path: Path, how: str
) -> None:
    from tether.oci.manifest import ImageManifest

    train(tether, project, "v1", "alpha")
    assert tether("pack", "-t", "demo:v1").exit_code == 0
    desc = project.index.entries()[0].descriptor
    manifest = ImageManifest.from_bytes(project.store.read_bytes(desc.digest))
    layer = str(manifest.layers[0].digest)
    corrupt(project, layer, how)
    before = {
        p: p.read_bytes()
        for p in project.root.rglob("*")
        if p.is_file() and ".tether" not in p.parts
    }
    refused(tether("unpack", "demo:v1", "-d", str(tmp_path / "out")))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    refused(tether("rollback", "demo:v1"))
    after = {
        p: p.read_bytes()
        for p in project.root.rglob("*")
        if p.is_file() and ".tether" not in p.parts
    }
    assert after == before

    # pack --from-run packs the run's stored outputs: a rotten one is refused.
    from tether.repositories.runs import load_run

    out = load_run(project.db, "v1").files_with_role("output")[0]
    if out.stored and out.digest:
        corrupt(project, out.digest, how)
        refused(tether("pack", "--from-run", "v1", "-t", "demo:v2"), out.digest)


# -- 2, 3. secrets --------------------------------------------------------------------


CANARIES = {
    "OMP_APIKEY": "canary01secret",
    "MKL_DB_PASS": "canary02secret",
    "PYTORCH_S3_PRIVATE": "canary03secret",
    "TORCH_SESSION_ID": "canary04secret",
    "MKL_DB_URL": "postgres://u:canary05secret@db/x",  # a credential inside a value
    "OMP_HEADER": "Bearer canary06secretvalue",
    "TORCH_AWS": "AKIACANARY07SECRET12",
    "JAX_JWT": "eyJhbGciOiJIUzI1NiJ9.eyJjYW5hcnkwOCI6MX0.canary08secretsig",
}
FLAG_CANARIES = ["canary09secret", "canary10secret", "canary11secret"]
GIT_CANARY = "canary12secret"


def test_no_secret_is_stored_or_shown(
    project: Workspace, tether: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project.root
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(
        ["git", "remote", "add", "origin", f"https://ada:{GIT_CANARY}@git.example/r.git"],
        cwd=root,
        check=True,
    )
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    (root / "src" / "train.py").write_text(
        "import pathlib, sys\npathlib.Path('models/model.pkl').write_text('m')\n"
    )
    flags = ["--password", FLAG_CANARIES[0], f"--token={FLAG_CANARIES[1]}"]
    argv = [sys.executable, "src/train.py", *flags, "--api-key", FLAG_CANARIES[2]]
    res = tether("run", "--name", "s1", "--", *argv)
    assert res.exit_code == 0, res.output
    res = tether("run", "--name", "s2", "--", *argv)
    assert res.exit_code == 0, res.output
    secrets = [f"canary{i:02d}secret" for i in range(1, 13) if i != 7] + ["CANARY07SECRET12"]

    outputs = []
    for args in (
        ["runs", "list"], ["runs", "show", "s1"], ["runs", "show", "s1", "--json"],
        ["env", "show", "s1"], ["env", "show", "s1", "--json"], ["env", "diff", "s1", "s2"],
        ["runs", "compare", "s1", "s2"], ["lineage", "run:s1"],
        ["lineage", "run:s1", "--format", "json"], ["explain", "s1", "s2"],
        ["reproduce", "s1", "--dry-run"],
    ):  # fmt: skip
        r = tether(*args)
        assert "Traceback" not in r.output
        outputs.append(r.output)
    stored = b"".join(p.read_bytes() for p in (root / ".tether").rglob("*") if p.is_file())
    for secret in secrets:
        assert secret.encode() not in stored, secret
        for out in outputs:
            assert secret not in out, (secret, out)
    shown = tether("runs", "show", "s1", "--json").output
    run = json.loads(shown)
    assert run["command"][2:] == ["--password", "***", "--token=***", "--api-key", "***"]
    env = json.loads(tether("env", "show", "s1", "--json").output)
    body = env.get("body", env)
    withheld = body["env_vars_withheld"]
    assert {"OMP_APIKEY", "MKL_DB_PASS", "PYTORCH_S3_PRIVATE", "TORCH_SESSION_ID"} <= set(withheld)
    assert body["env_vars"]["MKL_DB_URL"] == "postgres://u:***@db/x"
    assert body["env_vars"]["OMP_HEADER"] == "Bearer ***"


def test_reproduce_takes_withheld_flags_from_the_environment(
    project: Workspace, tether: Tether, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.root / "src" / "train.py").write_text(
        "import pathlib, sys\n"
        "pathlib.Path('models').mkdir(exist_ok=True)\n"
        "pathlib.Path('models/model.pkl').write_text('trained with ' + str(len(sys.argv[2])))\n"
    )
    res = tether(
        "run", "--name", "p", "--", sys.executable, "src/train.py", "--password", "hunter22"
    )
    assert res.exit_code == 0, res.output
    res = tether("reproduce", "p")
    assert res.exit_code != 0 and "TETHER_SECRET_PASSWORD" in res.output, res.output
    monkeypatch.setenv("TETHER_SECRET_PASSWORD", "hunter22")
    res = tether("reproduce", "p")
    assert res.exit_code == 0 and "REPRODUCED" in res.output, res.output


# -- 4. terminal escapes ----------------------------------------------------------------


def test_control_characters_are_refused_and_old_ones_shown_escaped(
    project: Workspace, tether: Tether
) -> None:
    hostile = "x\x1b]0;owned\x07\x1b[2J\u202eevil"
    run = [sys.executable, "-c", "print(1)"]
    res = tether("run", "--name", hostile, "--", *run)
    assert res.exit_code == 2 and "control characters" in res.output
    res = tether("run", "-p", "a=\u202eabc", "--", *run)
    assert res.exit_code == 2 and "control characters" in res.output
    assert json.loads(tether("runs", "list", "--json").output)["runs"] == []
    import tether as api

    with pytest.raises(Exception, match="control characters"):
        api.start_run(name="bell\x07", project=project.root)
    # A record from before the rule (or written by another tool) is shown escaped.
    res = tether("run", "--name", "ok", "--", *run)
    assert res.exit_code == 0
    with project.db.atomic() as conn:
        conn.execute("UPDATE runs SET name = ?", (hostile,))
    run_id = json.loads(tether("runs", "list", "--json").output)["runs"][0]["id"]
    for args in (["runs", "list"], ["runs", "show", run_id]):
        out = tether(*args).output
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "\\x1b]0;owned\\x07" in out and "\\u202eevil" in out


# -- 5, 6. archives, Kitfiles and disks -------------------------------------------------


def test_gzip_bomb_is_refused_before_it_expands(project: Workspace, tmp_path: Path) -> None:
    from tether.errors import UnsafeArchive
    from tether.modelkit.unpack import unpack

    info = entry("model.bin")
    raw = tar_bytes([(info, bytes(100 << 20))])
    bomb = gzip.compress(raw, compresslevel=9)
    assert len(raw) / len(bomb) > 200
    make_kit(project, "bomb:v1", [(CODE_TGZ, bomb, {mt.ANN_FILEPATH: "."})])
    with pytest.raises(UnsafeArchive, match="200:1"):
        unpack(project, "bomb:v1", tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


def test_a_layer_larger_than_the_free_space_is_refused(project: Workspace, tmp_path: Path) -> None:
    from tether.errors import UnsafeArchive
    from tether.modelkit.unpack import unpack

    free = shutil.disk_usage(tmp_path).free
    info = entry("huge.bin")
    info.size = free + (1 << 30)
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    make_kit(project, "huge:v1", [(CODE_TAR, header, {mt.ANN_FILEPATH: "."})])
    with pytest.raises(UnsafeArchive, match="free"):
        unpack(project, "huge:v1", tmp_path / "out")


def test_damaged_archives_and_kitfiles_give_errors_not_tracebacks(
    project: Workspace, tether: Tether, tmp_path: Path
) -> None:
    # A member shorter than its header says, in a blob that matches its digest.
    info = entry("model.bin")
    full = tar_bytes([(info, b"x" * 4000)])
    short = full[: 512 + 100]
    make_kit(project, "short:v1", [(CODE_TAR, short, {mt.ANN_FILEPATH: "."})])
    gz = gzip.compress(full)[:-20]  # a gzip stream cut off before its end
    make_kit(project, "cut:v1", [(CODE_TGZ, gz, {mt.ANN_FILEPATH: "."})])
    import zstandard

    frame = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(full))
    frame[len(frame) // 2] ^= 0xFF  # a broken frame, packed (and hashed) that way
    make_kit(project, "zst:v1", [(CODE_TAR + "+zstd", bytes(frame), {mt.ANN_FILEPATH: "."})])
    for ref in ("short:v1", "cut:v1", "zst:v1"):
        for args in (["unpack", ref, "-d", str(tmp_path / ref)], ["rollback", ref]):
            res = tether(*args)
            assert res.exit_code == 1 and "damaged" in res.output, res.output
    (project.root / "Kitfile").write_text("model: " + "[" * 50000)
    res = tether("pack", "-t", "deep:v1")
    assert res.exit_code != 0 and "deeper" in res.output, res.output


def test_status_on_a_full_disk_degrades_the_cache(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        root = mnt / "p"
        root.mkdir()
        env = {**os.environ, "TETHER_DEBUG": ""}
        cli = [sys.executable, "-m", "tether", "-C", str(root)]
        subprocess.run([*cli, "init"], check=True, capture_output=True, env=env)
        (root / "data.bin").write_bytes(os.urandom(200 << 10))
        assert (
            subprocess.run([*cli, "add", "data.bin"], capture_output=True, env=env).returncode == 0
        )
        shutil.rmtree(root / ".tether" / "cache", ignore_errors=True)
        with open(mnt / "filler", "wb") as f:  # fill the disk
            try:
                while True:
                    f.write(bytes(64 << 10))
                    f.flush()
            except OSError:
                pass
        res = subprocess.run([*cli, "status"], capture_output=True, text=True, env=env)
        assert "Traceback" not in res.stderr and "disk is full" not in res.stderr, res.stderr
        assert res.returncode == 0, res.stderr
        assert "data.bin" in res.stdout or res.stdout.strip() == "" or "up to date" in res.stdout
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- 7. pointers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("size", "-5"),
        ("size", "true"),
        ("size", "9" * 30),
        ("files", "-1"),
        ("files", "2"),
        ("type", "link"),
    ],
)
def test_pointer_fields_are_range_checked(
    project: Workspace, tether: Tether, field: str, value: str
) -> None:
    assert tether("add", "data/ratings.csv").exit_code == 0
    path = project.root / "data/ratings.csv.tether"
    lines = [
        f"{field}: {value}" if ln.startswith(f"{field}:") else ln
        for ln in path.read_text().splitlines()
    ]
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    for args in (["status"], ["checkout", "data/ratings.csv"]):
        res = tether(*args)
        assert (
            res.exit_code != 0 and f"'{field}'" in res.output and "Traceback" not in res.output
        ), res.output
    assert path.read_bytes() == before


# -- 8. remote garbage ---------------------------------------------------------------------


def test_stale_temp_files_on_a_remote_are_cleaned(
    project: Workspace, tether: Tether, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    assert tether("remote", "add", "backup", str(remote), "--default").exit_code == 0
    assert tether("add", "data/ratings.csv").exit_code == 0
    (remote / "blobs" / "sha256").mkdir(parents=True)
    (remote / "packs").mkdir()
    stale = [remote / "blobs/sha256/.tmp-dead1", remote / "packs/.tmp-dead2"]
    fresh = remote / "blobs/sha256/.tmp-live"
    for p in [*stale, fresh]:
        p.write_bytes(b"partial")
    old = time.time() - 3 * 3600
    for p in stale:
        os.utime(p, (old, old))
    assert tether("data", "push").exit_code == 0
    assert not any(p.exists() for p in stale) and fresh.exists()
    os.utime(fresh, (old, old))
    res = tether("gc", "--remote", "backup", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["removed_temp_files"] == ["blobs/sha256/.tmp-live"]
    assert not fresh.exists()


# -- the guard: no traceback from any hostile input --------------------------------------


def test_no_command_prints_a_traceback_on_hostile_input(project: Workspace, tmp_path: Path) -> None:
    root = project.root
    (root / "bad.tether").write_text(
        "format: 1\npath: bad\ntype: file\ndigest: sha256:../../x\nsize: -5\nfiles: 1\n"
    )
    (root / "data" / "deep.tether").write_text("[" * 50000)
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DEBUG"}
    cases = [
        "status", "checkout", "fsck", "inspect sha256:../../etc", f"unpack ../x -d {tmp_path}",
        "runs show \x1b[2J", "lineage path:/etc/passwd", "tag a:b ../../c:d",
        "pull 127.0.0.1:1/x/y:z --plain-http", "data pull -r nope", "reproduce nope",
        "model show x@v9", "env diff a b", "gc --remote nope",
    ]  # fmt: skip
    for case in [*cases, ["runs", "list", "-f", "metrics.rmse <<< 1"]]:
        args = case.split() if isinstance(case, str) else case
        res = subprocess.run(
            [sys.executable, "-m", "tether", "-C", str(root), *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert "Traceback" not in res.stderr + res.stdout, (args, res.stderr)
        assert res.returncode in (1, 2), (args, res.returncode, res.stderr)
        assert (res.stderr + res.stdout).strip(), args  # a message, not silence
