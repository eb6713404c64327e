"""Tracked data on real files: add, status, checkout, data diff, gc, fsck, locking and
crashes (a process really killed with SIGKILL)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.test_runs import git
from tether.data import pointer, tree
from tether.data.checkout import checkout
from tether.data.fsck import fsck
from tether.data.status import status
from tether.data.track import add
from tether.errors import DataError
from tether.hashing import Digest, hash_file
from tether.workspace import Workspace

PAST = time.time() - 3600


def make_files(root: Path, n: int, *, dirs: int = 10, size: int = 64, seed: int = 0) -> None:
    """n files spread over ``dirs`` sub-folders, content unique per (seed, index); mtimes
    an hour old so the stat cache may trust them (fresh files count as racy)."""
    for i in range(n):
        path = root / f"d{i % dirs:02}" / f"f{i:06}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{seed}:{i}:".encode().ljust(size, b"x"))
        os.utime(path, (PAST, PAST))


def age(*paths: Path) -> None:
    for p in paths:
        os.utime(p, (PAST, PAST))


def snapshot(root: Path) -> dict[str, Digest]:
    return {
        p.relative_to(root).as_posix(): hash_file(p)[0]
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def by_path(ws: Workspace, rel: str) -> dict[str, str]:
    [st] = status(ws, [ws.root / rel])
    return {c.path: c.kind for c in st.changes}


def test_add_directory_writes_pointer_gitignore_and_nested_trees(project: Workspace) -> None:
    data = project.root / "data" / "images"
    make_files(data, 300)
    report = add(project, [data])
    [result] = report.results
    ptr = result.pointer
    assert (ptr.path, ptr.type, ptr.files) == ("data/images", "dir", 300)
    assert ptr.size == 300 * 64
    text = (project.root / "data" / "images.tether").read_text()
    assert pointer.parse(text, "data/images.tether") == ptr
    assert "/images" in (project.root / "data" / ".gitignore").read_text().splitlines()
    reader = tree.TreeReader(project.store.read_bytes)
    top = reader.entries(ptr.digest)
    assert [e.name for e in top] == [f"d{i:02}" for i in range(10)]
    assert all(e.type == "dir" and e.files == 30 for e in top)
    files = dict(reader.walk(ptr.digest))
    assert len(files) == 300
    for rel, entry in files.items():
        assert project.store.verify(entry.digest)
        assert hash_file(data / rel)[0] == entry.digest
    # Nothing changed: adding again reads no file (stat cache) and rewrites nothing.
    again = add(project, [data])
    assert again.hashed_files == 0 and not again.results[0].changed


def test_add_single_file_and_relative_paths(project: Workspace) -> None:
    big = project.root / "models" / "weights.bin"
    big.write_bytes(os.urandom(3 << 20))  # above the small-file threshold: streamed
    report = add(project, ["weights.bin"], base=project.root / "models")
    [r] = report.results
    assert r.pointer.type == "file" and r.pointer.digest == hash_file(big)[0]
    assert project.store.has(r.pointer.digest)
    assert (project.root / "models" / "weights.bin.tether").is_file()


def test_status_lists_modified_deleted_added_and_moves(project: Workspace) -> None:
    data = project.root / "data" / "set"
    make_files(data, 2000, dirs=20)
    add(project, [data])
    assert status(project)[0].state == "clean"
    (data / "d03" / "f000003.bin").write_bytes(b"changed")
    (data / "d04" / "f000004.bin").unlink()
    (data / "d05" / "new.bin").write_bytes(b"new")
    (data / "d06" / "f000006.bin").rename(data / "d07" / "moved.bin")
    assert by_path(project, "data/set") == {
        "d03/f000003.bin": "modified",
        "d04/f000004.bin": "deleted",
        "d05/new.bin": "added",
        "d06/f000006.bin": "deleted",
        "d07/moved.bin": "added",
    }
    add(project, [data])
    assert status(project)[0].state == "clean"


def test_stat_cache_trusts_unchanged_stat_and_distrusts_fresh_files(project: Workspace) -> None:
    data = project.root / "data" / "set"
    make_files(data, 20)
    add(project, [data])
    victim = data / "d01" / "f000001.bin"
    st = victim.stat()
    # Same size, same mtime, same inode: by design the cache is trusted, nothing read.
    with open(victim, "r+b") as f:
        f.write(b"Z")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert status(project)[0].state == "clean"
    # A file written just now is "racily clean": never cached, so always re-read.
    fresh = data / "d02" / "fresh.bin"
    fresh.write_bytes(b"one")
    add(project, [data])
    st = fresh.stat()
    with open(fresh, "r+b") as f:
        f.write(b"two")
    os.utime(fresh, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert by_path(project, "data/set") == {"d02/fresh.bin": "modified"}


def test_one_change_in_a_huge_flat_folder_rewrites_one_part(project: Workspace) -> None:
    data = project.root / "flat"
    make_files(data, 12000, dirs=1, size=8)
    first = add(project, [data]).results[0].pointer
    reader = tree.TreeReader(project.store.read_bytes)
    before = set(reader.objects(first.digest))
    assert len(before) > 3, "a folder this big is split into parts"
    (data / "d00" / "f005000.bin").write_bytes(b"other")
    second = add(project, [data]).results[0].pointer
    after = set(reader.objects(second.digest))
    # new: the root, the folder's part list and one part
    assert len(after - before) == 3
    assert {c.path for c in tree.diff(reader, first.digest, second.digest)} == {"d00/f005000.bin"}


def test_checkout_restores_deleted_copy_and_protects_unsaved_changes(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    data = project.root / "data" / "set"
    make_files(data, 200)
    (data / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (data / "run.sh").chmod(0o755)
    add(project, [data])
    expected = snapshot(data)
    subprocess.run(["rm", "-rf", str(data)], check=True)
    assert status(project)[0].state == "missing"
    r = tether("checkout", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["paths"][0]["written"] == 201
    assert snapshot(data) == expected
    assert os.access(data / "run.sh", os.X_OK)
    assert status(project)[0].state == "clean"
    # An edit whose content is not in the store is not overwritten silently.
    (data / "d01" / "f000001.bin").write_bytes(b"my unsaved work")
    r = tether("checkout", "data/set")
    assert r.exit_code == 1 and "not in the store" in r.output
    assert (data / "d01" / "f000001.bin").read_bytes() == b"my unsaved work"
    assert tether("checkout", "--force", "data/set").exit_code == 0
    assert snapshot(data) == expected


def test_checkout_merges_the_stored_tree_with_the_folder_in_tree_order(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    # Names where path order and tree order differ ('a.txt' < 'a/…' as strings, not as
    # trees): the streamed merge must pair each file with its own stored entry.
    data = project.root / "data" / "mix"
    for rel, body in {
        "a.txt": b"1",
        "a/b.bin": b"2",
        "a-b/c": b"3",
        "a/c/d": b"4",
        "b": b"5",
    }.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(body)
    add(project, [data])
    expected = snapshot(data)
    (data / "a.txt").unlink()
    (data / "a" / "b.bin").write_bytes(b"5")  # another tracked file's bytes: no conflict
    (data / "a" / "zz").write_bytes(b"extra")
    r = tether("checkout", "--json", "data/mix")
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)["paths"][0]
    assert (result["written"], result["unchanged"], result["extra"]) == (2, 3, ["a/zz"])
    (data / "a" / "zz").unlink()
    assert snapshot(data) == expected


def test_a_big_checkout_leaves_every_file_known_to_the_stat_cache(project: Workspace) -> None:
    # Files just written are too fresh to cache; a big checkout waits out that second
    # at its end, so the next status does not read 1,200 files again.
    data = project.root / "data" / "many"
    make_files(data, 1200, dirs=3)
    add(project, [data])
    shutil.move(data, project.root / "elsewhere")  # moved, not deleted (see benchmarks)
    checkout(project, [data])
    keys = [f"data/many/{p.relative_to(data)}" for p in data.rglob("*.bin")]
    assert len(keys) == 1200
    assert len(project.stat_cache.lookup_many(keys)) == 1200
    assert status(project, [data])[0].state == "clean"


def test_hardlink_checkout_is_opt_in_and_read_only(project: Workspace) -> None:
    from tether.data.checkout import checkout

    data = project.root / "data" / "set"
    make_files(data, 5)
    add(project, [data])
    subprocess.run(["rm", "-rf", str(data)], check=True)
    cfg = project.dot / "config.toml"
    cfg.write_text(cfg.read_text().replace('link = "reflink,copy"', 'link = "hardlink,copy"'))
    ws = Workspace.open(project.root)
    report = checkout(ws)
    assert report.methods == {"hardlink": 5}
    f = data / "d00" / "f000000.bin"
    assert f.stat().st_nlink == 2 and not f.stat().st_mode & 0o222
    # A hardlinked checkout is clean at once: the stat cache knows those inodes.
    assert status(ws)[0].state == "clean"
    ws.close()


@pytest.mark.parametrize(
    ("make", "target", "message"),
    [
        (lambda r: None, "nope", "does not exist"),
        (lambda r: (r.parent / "outside").write_text("x"), "../outside", "outside the project"),
        (lambda r: None, ".tether/config.toml", "inside .tether/"),
        (lambda r: os.symlink("/etc/passwd", r / "link"), "link", "is a symlink"),
        (lambda r: (r / "d").mkdir() or os.symlink("/etc", r / "d" / "l"), "d", "is a symlink"),
        (lambda r: None, ".", "project root"),
    ],
)
def test_add_refuses_bad_paths_and_changes_nothing(
    project: Workspace,
    tether: Callable[..., Result],
    make: Callable[[Path], object],
    target: str,
    message: str,
) -> None:
    make(project.root)
    before = sorted(p.name for p in project.store)
    r = tether("add", target)
    assert r.exit_code != 0 and message in r.output, r.output
    assert "hint:" in r.output
    assert sorted(p.name for p in project.store) == before
    assert not [p for p in project.root.rglob("*.tether") if p.is_file()]


def test_add_refuses_nested_and_git_tracked_paths(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    make_files(project.root / "data" / "set", 4)
    assert tether("add", "data/set").exit_code == 0
    r = tether("add", "data/set/d00")
    assert r.exit_code == 1 and "inside the tracked folder data/set" in r.output
    r = tether("add", "data")
    assert r.exit_code == 1 and "contains the tracked path" in r.output
    (project.root / "more" / "x").mkdir(parents=True)
    r = tether("add", "more/x", "more")
    assert r.exit_code == 1 and "inside more, which is added too" in r.output
    git(project.root, "init", "-q")
    git(project.root, "add", "src")
    r = tether("add", "src")
    assert r.exit_code == 1 and "tracked by git" in r.output and "git rm -r --cached" in r.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "format: 1\npath: other\ntype: dir\ndigest: sha256:"
            + "a" * 64
            + "\nsize: 1\nfiles: 1\n",
            "expected 'set'",
        ),
        ("format: 9\n", "not supported"),
        ("format: 1\npath: set\ntype: dir\ndigest: md5:abc\nsize: 1\nfiles: 1\n", "not a sha256"),
        ("- [unbalanced\n", "not a valid pointer"),
        ("format: 1\npath: set\ntype: dir\ndigest: !!python/object:os.system x\n", "not a valid"),
    ],
)
def test_bad_pointer_files_are_refused(
    project: Workspace, tether: Callable[..., Result], text: str, message: str
) -> None:
    (project.root / "data" / "set.tether").write_text(text)
    r = tether("status")
    assert r.exit_code == 1 and message in r.output and "hint:" in r.output


def test_hostile_tree_names_are_refused(project: Workspace) -> None:
    digest = "sha256:" + "b" * 64
    for name in ["../evil", "a/b", ".", "", "x\0y"]:
        doc = {
            "format": 1,
            "entries": [{"digest": digest, "files": 1, "name": name, "size": 1, "type": "file"}],
        }
        with pytest.raises(DataError):
            tree.parse(tree.encode(doc), Digest("c" * 64))


def test_data_diff_between_git_revisions(project: Workspace, tether: Callable[..., Result]) -> None:
    git(project.root, "init", "-q")
    data = project.root / "data" / "set"
    make_files(data, 50, dirs=5)
    tether("add", "data/set")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-qm", "v1")
    (data / "d01" / "f000001.bin").write_bytes(b"modified")
    (data / "d02" / "f000002.bin").unlink()
    (data / "d03" / "f000003.bin").rename(data / "d04" / "renamed.bin")
    (data / "d00" / "added.bin").write_bytes(b"added")
    tether("add", "data/set")
    r = tether("data", "diff", "--json")  # HEAD against the working tree's pointers
    changes = {c["path"]: c["change"] for c in json.loads(r.output)}
    assert changes == {
        "data/set/d01/f000001.bin": "modified",
        "data/set/d02/f000002.bin": "deleted",
        "data/set/d04/renamed.bin": "renamed",
        "data/set/d00/added.bin": "added",
    }
    git(project.root, "commit", "-qam", "v2")
    r = tether("data", "diff", "HEAD~1", "HEAD")
    assert "renamed   data/set/d03/f000003.bin -> data/set/d04/renamed.bin" in r.output
    assert tether("data", "diff", "HEAD", "HEAD").output.startswith("no changes")
    r = tether("data", "diff", "no-such-rev")
    assert r.exit_code == 1 and "hint:" in r.output


def test_gc_keeps_pointer_data_at_head_and_named_revisions(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    git(project.root, "init", "-q")
    data = project.root / "data" / "set"
    make_files(data, 10, dirs=2)
    tether("add", "data/set")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-qm", "v1")
    v1_blob = hash_file(data / "d00" / "f000000.bin")[0]
    (data / "d00" / "f000000.bin").write_bytes(b"v2 content")
    tether("add", "data/set")
    git(project.root, "commit", "-qam", "v2")
    git(project.root, "tag", "v2")
    # v1's blob is referenced by no pointer at HEAD: the preview names it, deletes nothing.
    preview = json.loads(tether("gc", "--json").output)
    assert str(v1_blob) in preview["removed"] and project.store.has(v1_blob)
    kept = json.loads(tether("gc", "--force", "--rev", "HEAD~1", "--json").output)
    assert str(v1_blob) not in kept["removed"] and project.store.has(v1_blob)
    assert tether("gc", "--force").exit_code == 0
    assert not project.store.has(v1_blob)
    assert status(project)[0].state == "clean"
    assert fsck(project).ok


def test_fsck_finds_a_flipped_byte_and_quarantines_it(
    project: Workspace, tether: Callable[..., Result]
) -> None:
    data = project.root / "data" / "set"
    make_files(data, 10, dirs=2)
    add(project, [data])
    victim = hash_file(data / "d01" / "f000001.bin")[0]
    path = project.store.path(victim)
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0x01
    path.write_bytes(bytes(raw))
    r = tether("fsck", "--json")
    assert r.exit_code == 1
    report = json.loads(r.output)
    assert {"digest": str(victim), "problem": "corrupt", "where": "store"} in report["problems"]
    named = {"digest": str(victim), "problem": "missing", "where": "file data/set/d01/f000001.bin"}
    assert named in report["problems"]  # the file the user will miss, by its path
    assert (project.dot / "quarantine" / victim.hex).is_file()
    assert not project.store.has(victim)
    # The working copy still has good bytes: re-adding restores the blob.
    add(project, [data])
    assert tether("fsck").exit_code == 0


def _tether_process(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tether", "-C", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def test_two_processes_adding_the_same_files_wait_for_each_other(project: Workspace) -> None:
    data = project.root / "data" / "set"
    make_files(data, 3000, dirs=30, size=4096)
    procs = [_tether_process(project.root, "add", "data/set") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert status(project)[0].state == "clean"
    report = fsck(project)
    assert report.ok and report.checked >= 3000


def test_lock_wait_is_bounded_and_reported_and_dies_with_its_holder(project: Workspace) -> None:
    make_files(project.root / "data" / "set", 3)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tether.workspace import Workspace\n"
            "ws = Workspace.open(sys.argv[1])\n"
            "with ws.lock('data'):\n    print('held', flush=True); time.sleep(60)\n",
            str(project.root),
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    p = _tether_process(project.root, "add", "data/set", env={"TETHER_LOCK_TIMEOUT": "1"})
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert b"waiting for another tether process" in err and b"gave up after 1s" in err
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    # The kernel released the dead holder's lock: no stale lock blocks the next add.
    p = _tether_process(project.root, "add", "data/set", env={"TETHER_LOCK_TIMEOUT": "5"})
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err


def test_kill_9_during_add_leaves_store_and_pointers_consistent(project: Workspace) -> None:
    data = project.root / "data" / "big"
    data.mkdir(parents=True)
    for i in range(24):
        (data / f"part{i:02}.bin").write_bytes(os.urandom(4 << 20))
    proc = _tether_process(project.root, "add", "--jobs", "1", "data/big")
    deadline = time.monotonic() + 60
    while sum(1 for _ in project.store) < 3:  # some blobs are already committed
        assert time.monotonic() < deadline and proc.poll() is None, "add finished too early"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (project.root / "data" / "big.tether").exists(), "no pointer before its data"
    assert fsck(project).ok, "every blob that has a name has the right bytes"
    add(project, [data])
    assert status(project)[0].state == "clean"
    report = fsck(project)
    assert report.ok and not report.quarantined


def test_hand_edited_pointer_in_other_yaml_form_reads_the_same(project: Workspace) -> None:
    make_files(project.root / "data" / "set", 3)
    [r] = add(project, [project.root / "data" / "set"]).results
    p = r.pointer
    edited = (
        f"# reordered by a human\nfiles: {p.files}\nsize: {p.size}  # bytes\n"
        f"digest: '{p.digest}'\ntype: dir\npath: set\nformat: 1\n"
    )
    assert pointer.parse(edited, "data/set.tether") == p
    assert pointer.parse(p.to_yaml(), "data/set.tether") == p


def test_a_folder_fingerprint_changes_with_any_file_and_declines_what_it_cannot_vouch_for(
    project: Workspace,
) -> None:
    from tether.data.worktree import quick_fingerprint

    data = project.root / "data" / "set"
    make_files(data, 300, dirs=7)
    (data / "a-c").write_text("x")
    (data / "a").mkdir()
    (data / "a" / "b").write_text("y")
    age(data / "a-c", data / "a" / "b")
    now = time.time_ns()
    first = quick_fingerprint(data, now)
    assert first is not None and quick_fingerprint(data, now) == first
    (data / "a" / "b").rename(data / "a" / "c")  # a rename keeps the stamp, not the path
    assert quick_fingerprint(data, now) not in (None, first)
    (data / "a" / "c").rename(data / "a" / "b")
    os.utime(data / "a-c", ns=(now - 5 * 10**9, now - 5 * 10**9))  # another mtime
    assert quick_fingerprint(data, time.time_ns()) not in (None, first)
    (data / "fresh").write_text("z")  # too new to trust
    assert quick_fingerprint(data, time.time_ns()) is None
    (data / "fresh").unlink()
    (data / "link").symlink_to(data / "a-c")  # the full walk refuses it, with its reason
    assert quick_fingerprint(data, time.time_ns()) is None
