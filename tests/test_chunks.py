"""Big blobs kept as content-defined chunks: an edited version stores only what changed,
and reads back byte for byte under the whole file's digest."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tether.errors import ObjectCorrupted
from tether.hashing import Digest
from tether.store.chunks import AVERAGE, MAX_SIZE
from tether.store.gc import sweep
from tether.store.objects import ContentStore
from tether.workspace import Workspace

MIB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore.create(tmp_path / "store", tmp_path / "tmp")


def _sha256sum(path: Path) -> str:
    done = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return done.stdout.split()[0]


def _read_back(store: ContentStore, digest: Digest, dest: Path) -> bytes:
    dest.unlink(missing_ok=True)
    store.copy_out(digest, dest)
    return dest.read_bytes()


def test_edits_store_only_the_chunks_they_touch(store: ContentStore, tmp_path: Path) -> None:
    rng = random.Random(7)
    original = bytearray(rng.randbytes(64 * MIB))
    path = tmp_path / "data.bin"
    path.write_bytes(original)
    first = store.put_chunked(path)
    assert first.digest.hex == _sha256sum(path)  # the file's identity does not change
    assert first.new_chunks == first.chunks and first.new_bytes == 64 * MIB
    assert 32 <= first.chunks <= 80  # ~1 MiB each (FastCDC's average is avg + min)

    one_byte = bytearray(original)
    one_byte[32 * MIB] ^= 0xFF
    one_mib = bytearray(original)
    one_mib[20 * MIB : 21 * MIB] = rng.randbytes(MIB)
    appended = original + rng.randbytes(3 * MIB)
    truncated = original[: 50 * MIB + 12345]
    inserted = original[: 10 * MIB] + b"x" + original[10 * MIB :]
    for name, version, most_new in (
        ("one byte flipped", one_byte, 2),
        ("1 MiB rewritten", one_mib, 4),
        ("3 MiB appended", appended, 6),
        ("truncated", truncated, 1),
        ("one byte inserted", inserted, 2),
    ):
        path.write_bytes(version)
        added = store.put_chunked(path)
        assert added.digest.hex == _sha256sum(path), name
        assert 1 <= added.new_chunks <= most_new, (name, added)
        assert added.new_bytes <= most_new * MAX_SIZE
        assert _read_back(store, added.digest, tmp_path / "out.bin") == version, name
    # The first version still reads back, untouched by the others.
    assert _read_back(store, first.digest, tmp_path / "out.bin") == original
    assert store.size(first.digest) == 64 * MIB and store.has(first.digest)
    assert not store.has_blob(first.digest)  # kept only as chunks
    with store.open(first.digest) as f:
        f.seek(40 * MIB + 5)
        assert f.read(3 * AVERAGE) == original[40 * MIB + 5 : 40 * MIB + 5 + 3 * AVERAGE]


def test_adding_the_same_file_again_stores_nothing(store: ContentStore, tmp_path: Path) -> None:
    path = tmp_path / "same.bin"
    path.write_bytes(os.urandom(12 * MIB))
    first = store.put_chunked(path)
    again = store.put_chunked(path)
    assert again.digest == first.digest and again.new_chunks == 0 and again.new_bytes == 0


def test_a_damaged_chunk_is_refused_and_named(store: ContentStore, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    data = os.urandom(16 * MIB)
    path.write_bytes(data)
    added = store.put_chunked(path)
    assert store.verify(added.digest)
    chunk, _ = store.chunks.load(added.digest).chunks[3]
    bad = store.path(chunk)
    bad.chmod(0o644)
    with open(bad, "r+b") as f:
        f.seek(100)
        f.write(b"\0rot\0")
    assert not store.verify(added.digest)
    out = tmp_path / "out.bin"
    with pytest.raises(ObjectCorrupted) as caught:
        store.copy_out(added.digest, out)
    assert caught.value.digest == str(added.digest)  # the file, whose list is set aside
    assert str(chunk) in caught.value.message  # and the damaged chunk, by name
    assert not out.exists()  # nothing half-written is left for a user


def test_gc_keeps_the_chunks_of_kept_blobs_only(store: ContentStore, tmp_path: Path) -> None:
    path = tmp_path / "v.bin"
    base = os.urandom(24 * MIB)
    path.write_bytes(base)
    kept = store.put_chunked(path)
    path.write_bytes(base[: 8 * MIB] + os.urandom(2 * MIB) + base[10 * MIB :])
    dropped = store.put_chunked(path)
    report = sweep(store, {kept.digest}, dry_run=False)
    assert dropped.digest in report.removed and kept.digest not in report.removed
    assert len(report.removed) == 1 + dropped.new_chunks  # its list, its own chunks
    assert not store.has(dropped.digest)
    assert _read_back(store, kept.digest, tmp_path / "out.bin") == base


@pytest.mark.slow
def test_kill_9_during_a_chunked_add_leaves_a_store_that_reads_true(
    store: ContentStore, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(512 * MIB))
    script = textwrap.dedent(f"""
        from tether.store.objects import ContentStore
        store = ContentStore({str(store.root)!r}, {str(store.tmp_dir)!r})
        print("started", flush=True)
        store.put_chunked({str(path)!r})
        print("done", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 60
    while not any(store.tmp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)  # killed once chunks are being written
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    whole = Digest(_sha256sum(path))
    assert not store.has(whole)  # no list names chunks that are not all there
    for digest in store:  # every chunk that made it is whole
        assert store.verify(digest)
    added = store.put_chunked(path)  # the add completes, reusing what was committed
    assert added.digest == whole and store.verify(whole)


# -- wired in: tether add, checkout, remotes, run outputs, packs, fsck ---------------------

Tether = Callable[..., Result]


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def _blob_count(ws: Workspace) -> int:
    return sum(1 for _ in ws.store)


def test_tether_add_keeps_a_big_file_in_chunks(
    project: Workspace, tether: Tether, tmp_path: Path
) -> None:
    rng = random.Random(3)
    big = project.root / "data" / "big.bin"
    big.parent.mkdir(exist_ok=True)
    first = rng.randbytes(64 * MIB)
    big.write_bytes(first)
    _ok(tether("add", "data/big.bin"))
    v1 = Digest(_sha256sum(big))
    assert v1 in set(project.store.chunks) and not project.store.has_blob(v1)
    before = _blob_count(project)

    edited = bytearray(first)
    edited[30 * MIB : 31 * MIB] = rng.randbytes(MIB)
    big.write_bytes(edited)
    _ok(tether("add", "data/big.bin"))
    v2 = Digest(_sha256sum(big))
    assert 1 <= _blob_count(project) - before <= 4  # the chunks the edit touched

    big.unlink()
    _ok(tether("checkout", "data/big.bin"))
    assert big.read_bytes() == edited and _sha256sum(big) == v2.hex


# -- remotes move chunks ------------------------------------------------------------------


def _wipe(ws: Workspace) -> None:
    for d in [*ws.store, *ws.store.chunks]:
        ws.store.delete(d)


def _push(tether: Tether) -> dict[str, int]:
    report: dict[str, int] = json.loads(_ok(tether("data", "push", "--json")).output)
    return report


@pytest.mark.parametrize("kind", ["directory", "s3"])
def test_a_remote_gets_only_the_chunks_it_lacks(
    project: Workspace, tether: Tether, tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        url, extra = "s3://tether-data/chunks", ["--endpoint-url", endpoint]
    else:
        url, extra = str(tmp_path / "remote"), []
    _ok(tether("remote", "add", "origin", url, "--default", *extra))
    rng = random.Random(11)
    big = project.root / "data" / "big.bin"
    big.parent.mkdir(exist_ok=True)
    v1_bytes = rng.randbytes(40 * MIB)
    big.write_bytes(v1_bytes)
    _ok(tether("add", "data/big.bin"))
    v1 = project.store.chunks.load(Digest(_sha256sum(big)))
    first = _push(tether)
    assert first["chunked_files"] == 1 and first["chunks"] == len({c for c, _ in v1.chunks})
    assert first["bytes"] == 40 * MIB

    edited = bytearray(v1_bytes)
    edited[17 * MIB : 18 * MIB] = rng.randbytes(MIB)
    big.write_bytes(edited)
    _ok(tether("add", "data/big.bin"))
    v2 = project.store.chunks.load(Digest(_sha256sum(big)))
    new = {c for c, _ in v2.chunks} - {c for c, _ in v1.chunks}
    second = _push(tether)
    assert second["chunks"] == len(new) and 1 <= len(new) <= 4  # counted: only new ones
    assert second["bytes"] == sum(n for c, n in set(v2.chunks) if c in new) < 8 * MIB
    assert _push(tether)["objects"] == 0
    if kind == "directory":
        remote = tmp_path / "remote"
        assert (remote / "chunklists" / "sha256" / v2.digest.hex).is_file()
        assert not list((remote / "blobs" / "sha256").glob("*"))  # no whole copy

    # A fresh store gets the file back from its chunks, verified whole.
    big.unlink()
    _wipe(project)
    pulled = json.loads(_ok(tether("data", "pull", "--json")).output)
    assert pulled["chunks"] == len({c for c, _ in v2.chunks}) and pulled["chunked_files"] == 1
    assert big.read_bytes() == edited and _sha256sum(big) == v2.digest.hex
    assert project.store.chunks.has(v2.digest) and not project.store.has_blob(v2.digest)

    # Going back to the first version fetches only the chunks this store lacks.
    big.write_bytes(v1_bytes)
    _ok(tether("add", "data/big.bin"))
    project.store.delete(v1.digest)
    for c in {c for c, _ in v1.chunks} - {c for c, _ in v2.chunks}:
        project.store.delete(c)
    big.unlink()
    back = json.loads(_ok(tether("data", "pull", "--json")).output)
    assert back["chunks"] == len({c for c, _ in v1.chunks} - {c for c, _ in v2.chunks})
    assert big.read_bytes() == v1_bytes


def test_pull_repairs_a_damaged_chunk_and_refuses_a_lying_list(
    project: Workspace, tether: Tether, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    _ok(tether("remote", "add", "origin", str(remote), "--default"))
    big = project.root / "data" / "big.bin"
    big.parent.mkdir(exist_ok=True)
    data = os.urandom(24 * MIB)
    big.write_bytes(data)
    _ok(tether("add", "data/big.bin"))
    _push(tether)
    listed = project.store.chunks.load(Digest(_sha256sum(big)))

    chunk = project.store.path(listed.chunks[3][0])
    chunk.chmod(0o644)
    with open(chunk, "r+b") as f:
        f.write(b"rot")
    big.unlink()
    repaired = json.loads(_ok(tether("data", "pull", "--json")).output)
    assert repaired["repaired"] == 1 and big.read_bytes() == data
    assert project.store.verify(listed.digest)

    # A list on the remote whose chunks are good but are not the file (two swapped):
    # refused, and nothing is kept.
    doc = json.loads((remote / "chunklists" / "sha256" / listed.digest.hex).read_bytes())
    doc["chunks"][0], doc["chunks"][1] = doc["chunks"][1], doc["chunks"][0]
    lying = remote / "chunklists" / "sha256" / listed.digest.hex
    lying.chmod(0o644)
    lying.write_text(json.dumps(doc))
    big.unlink()
    _wipe(project)
    refused = tether("data", "pull")
    assert refused.exit_code == 1 and "refused" in refused.output, refused.output
    assert not project.store.has(listed.digest) and not big.exists()


@pytest.mark.slow
def test_an_interrupted_chunked_push_resumes_where_it_stopped(
    project: Workspace, tmp_path: Path
) -> None:
    from tests.test_data import _tether_process
    from tether.data.remote import add_remote
    from tether.data.track import add

    big = project.root / "data" / "big.bin"
    big.parent.mkdir(exist_ok=True)
    with open(big, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(8 * MIB))
    add(project, [big])
    listed = project.store.chunks.load(Digest(_sha256sum(big)))
    remote = tmp_path / "remote"
    add_remote(project, "origin", str(remote), default=True)
    proc = _tether_process(project.root, "data", "push", "--jobs", "1")
    packs = remote / "packs"
    while not (packs.is_dir() and list(packs.glob("*.idx"))):
        assert proc.poll() is None, "push finished before it could be interrupted"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (remote / "chunklists" / "sha256" / listed.digest.hex).exists()
    held = {h for idx in packs.glob("*.idx") for h, _, _ in json.loads(idx.read_bytes())["blobs"]}
    assert 0 < len(held) < len(listed.chunks)
    again = _tether_process(project.root, "data", "push", "--json")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    report = json.loads(out)
    assert report["chunks"] == len({c for c, _ in listed.chunks}) - len(held)
    assert report["bytes"] == sum(n for c, n in set(listed.chunks) if c.hex not in held)
    big.unlink()
    _wipe(project)
    from tether.data.transfer import pull

    pull(project)
    assert _sha256sum(big) == listed.digest.hex


def test_a_damaged_chunk_is_found_by_fsck_and_refused_by_checkout(
    project: Workspace, tether: Tether
) -> None:
    big = project.root / "data" / "weights.bin"
    big.parent.mkdir(exist_ok=True)
    big.write_bytes(os.urandom(20 * MIB))
    (project.root / "data" / "set" / "sub").mkdir(parents=True)
    shutil.copy(big, project.root / "data" / "set" / "a.bin")
    shutil.copy(big, project.root / "data" / "set" / "sub" / "b.bin")
    _ok(tether("add", "data/weights.bin", "data/set"))
    whole = Digest(_sha256sum(big))
    chunk, _ = project.store.chunks.load(whole).chunks[5]
    bad = project.store.path(chunk)
    bad.chmod(0o644)
    with open(bad, "r+b") as f:
        f.write(b"rot")
    big.unlink()
    refused = tether("checkout", "data/weights.bin")
    assert refused.exit_code != 0 and chunk.hex[:12] in refused.output
    assert not big.exists()
    report = json.loads(tether("fsck", "--json").output)
    problems = {(p["digest"], p["problem"]) for p in report["problems"]}
    assert (str(chunk), "corrupt") in problems  # the chunk, quarantined
    assert any(d == str(whole) and kind == "missing-chunk" for d, kind in problems)
    assert not project.store.has(whole)  # set aside: 'data pull' would fetch it again
    # Every file that used the chunk is named, inside a tracked folder too.
    files = {p["where"] for p in report["problems"] if p["digest"] == str(whole)}
    assert "file data/weights.bin" in files
    assert "file data/set/a.bin, data/set/sub/b.bin" in files


@pytest.mark.skopeo
@pytest.mark.registry
def test_a_run_output_kept_in_chunks_packs_pushes_unpacks_and_copies(
    project: Workspace, tether: Tether, tmp_path: Path
) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed (.ci/run installs it)")
    (project.root / "make.py").write_text(
        "import random\n"
        "open('models/model.pkl', 'wb').write(random.Random(5).randbytes(12 << 20))\n"
    )
    _ok(tether("run", "--name", "big", "--", sys.executable, "make.py"))
    produced = (project.root / "models" / "model.pkl").read_bytes()
    digest = Digest.of_bytes(produced)
    assert digest in set(project.store.chunks)  # the output was stored in chunks
    (project.root / "models" / "model.pkl").write_bytes(b"changed since")
    _ok(tether("pack", "--from-run", "big", "-t", "demo:v9.0.0"))
    out = tmp_path / "unpacked"
    _ok(tether("unpack", "demo:v9.0.0", "-d", str(out)))
    assert (out / "models" / "model.pkl").read_bytes() == produced
    copy = tmp_path / "copy"
    subprocess.run(
        ["skopeo", "copy", f"oci:{project.dot / 'store'}:demo:v9.0.0", f"oci:{copy}:v9"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert not list(project.store.tmp_dir.glob("assembled-*"))  # temp copies removed

    # To a real registry and back: the layers are whole blobs, as registries expect.
    from tests.registry import start_registry

    registry = start_registry(tmp_path / "registry")
    try:
        ref = f"{registry.host}/team/demo:v9.0.0"
        _ok(tether("push", "demo:v9.0.0", ref, "--plain-http"))
        _ok(tether("remove", "demo:v9.0.0"))
        _ok(tether("pull", ref, "--plain-http"))
        again = tmp_path / "again"
        _ok(tether("unpack", ref, "-d", str(again)))
        assert (again / "models" / "model.pkl").read_bytes() == produced
    finally:
        registry.stop()


def test_data_du_shows_what_deduplication_saves(project: Workspace, tether: Tether) -> None:
    rng = random.Random(11)
    base = rng.randbytes(20 * MIB)
    data = project.root / "data"
    data.mkdir(exist_ok=True)
    (data / "v1.bin").write_bytes(base)
    (data / "v2.bin").write_bytes(base[: 5 * MIB] + rng.randbytes(MIB) + base[6 * MIB :])
    folder = data / "same"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder / name).write_bytes(b"identical\n" * 100)
    _ok(tether("add", "data/v1.bin", "data/v2.bin", "data/same"))
    report = json.loads(_ok(tether("data", "du", "--json")).output)
    by_path = {u["path"]: u for u in report["paths"]}
    assert by_path["data/v1.bin"]["logical_bytes"] == 20 * MIB
    assert by_path["data/v1.bin"]["stored_bytes"] == 20 * MIB  # its chunks, once
    same = by_path["data/same"]
    assert same["files"] == 3 and same["logical_bytes"] == 3000
    assert 1000 < same["stored_bytes"] < 3000  # one blob (and a small tree) for three files
    total = report["total"]
    assert total["logical_bytes"] == 40 * MIB + 3000 and total["missing_files"] == 0
    assert total["stored_bytes"] < 20 * MIB + 6 * MAX_SIZE  # v2 shares all but its edit
    assert total["ratio"] < 0.65 and report["store_bytes"] >= total["stored_bytes"]
    one = json.loads(_ok(tether("data", "du", "data/same", "--json")).output)
    assert [u["path"] for u in one["paths"]] == ["data/same"]
    shown = _ok(tether("data", "du")).output
    assert "data/v2.bin" in shown and "total" in shown
    refused = tether("data", "du", "data/nothing")
    assert refused.exit_code != 0 and "not tracked" in refused.output
