from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from tether.errors import ObjectCorrupted, ObjectNotFound, UsageError
from tether.hashing import Digest
from tether.store.objects import ContentStore


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore.create(tmp_path / "store", tmp_path / "tmp")


def test_layout_is_standard_oci(store: ContentStore) -> None:
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["manifests"] == []


def test_put_has_open_verify_iterate(store: ContentStore) -> None:
    digest = store.put_bytes(b"hello")
    assert str(digest) == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert store.has(digest) and store.size(digest) == 5
    with store.open(digest) as f:
        assert f.read() == b"hello"
    assert store.verify(digest)
    assert list(store) == [digest]
    mode = stat.S_IMODE(os.stat(store.path(digest)).st_mode)
    assert mode == 0o444, "blobs are read-only"
    assert store.put_bytes(b"hello") == digest  # idempotent


def test_big_blob_through_the_writer_thread(store: ContentStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(1 << 20) * 70)  # 70 MiB: above the threading threshold
    digest = store.put_file(src)
    assert store.verify(digest)
    assert store.size(digest) == 70 << 20


def test_failed_write_leaves_nothing(store: ContentStore) -> None:
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert list(store) == []
    assert list(store.tmp_dir.iterdir()) == []


def test_expected_digest_mismatch_is_refused(store: ContentStore) -> None:
    wrong = Digest.of_bytes(b"something else")
    with pytest.raises(ObjectCorrupted), store.writer(expected=wrong) as w:
        w.write(b"actual bytes")
    assert list(store) == [] and list(store.tmp_dir.iterdir()) == []


def test_corruption_is_detected(store: ContentStore) -> None:
    digest = store.put_bytes(b"precious model weights")
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"precious model weightz")
    assert not store.verify(digest)
    with pytest.raises(ObjectCorrupted):
        store.read_bytes(digest)


def test_missing_blob(store: ContentStore) -> None:
    with pytest.raises(ObjectNotFound) as exc:
        store.open(Digest.of_bytes(b"nope"))
    assert exc.value.hint


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:../../etc/passwd",
        "sha256:abc",
        "md5:" + "a" * 32,
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 65,
    ],
)
def test_hostile_digests_never_touch_disk(bad: str) -> None:
    with pytest.raises(UsageError):
        Digest.parse(bad)


def _writer(root: str, tmp: str, data: bytes, n: int) -> None:
    store = ContentStore(root, tmp)
    for _ in range(n):
        store.put_bytes(data)


def test_concurrent_writers_of_the_same_blob(store: ContentStore) -> None:
    data = os.urandom(3 << 20)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_writer, args=(str(store.root), str(store.tmp_dir), data, 20))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    (digest,) = list(store)
    assert digest == Digest.of_bytes(data) and store.verify(digest)
    assert list(store.tmp_dir.iterdir()) == []
