from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from tether.data.gc import collect_garbage
from tether.db.connection import Instant
from tether.errors import ModelKitNotFound, TagConflict
from tether.hashing import Digest
from tether.modelkit.pack import pack
from tether.modelkit.tags import history, remove, set_tags
from tether.oci.reference import parse_reference, parse_tag_list
from tether.workspace import Workspace


def _change_model(ws: Workspace, text: bytes) -> None:
    (ws.root / "models" / "model.pkl").write_bytes(text)


def test_version_tags_are_immutable(project: Workspace) -> None:
    v1 = pack(project, tags=parse_tag_list("demo:v1.0.0,latest"))
    _change_model(project, b"v2 weights")
    with pytest.raises(TagConflict, match=r"demo:v1\.0\.0 is a version tag") as exc:
        pack(project, tags=parse_tag_list("demo:v1.0.0"))
    assert "--force" in (exc.value.hint or "")
    assert project.index.resolve(parse_reference("demo:v1.0.0")).digest == v1.digest
    v2 = pack(project, tags=parse_tag_list("demo:latest"))  # non-version tags move freely
    assert v2.tags[0].action == "move" and v2.tags[0].old == v1.digest
    forced = pack(project, tags=parse_tag_list("demo:v1.0.0"), force=True)
    assert forced.tags[0].action == "move" and forced.tags[0].old == v1.digest
    events = history(project, "demo", "v1.0.0")
    assert [e.action for e in events] == ["set", "move"]
    assert events[1].old_digest == str(v1.digest) and events[1].new_digest == str(v2.digest)


def test_removed_version_tag_cannot_silently_come_back(project: Workspace) -> None:
    v1 = pack(project, tags=parse_tag_list("demo:v1"))
    remove(project, parse_reference("demo:v1"))
    _change_model(project, b"other")
    with pytest.raises(TagConflict, match="published before"):
        pack(project, tags=parse_tag_list("demo:v1"))
    again = pack(project, tags=parse_tag_list("demo:v1.1"))
    set_tags(
        project,
        [parse_reference("demo:v1")],
        project.index.resolve(parse_reference("demo:v1.1")).descriptor,
        force=True,
    )
    assert again.digest != v1.digest


def test_remove_by_tag_and_by_digest(project: Workspace) -> None:
    v1 = pack(project, tags=parse_tag_list("demo:v1,latest,prod"))
    remove(project, parse_reference("demo:prod"))
    assert {e.tag for e in project.index.entries()} == {"v1", "latest"}
    changes = remove(project, parse_reference(f"demo@{v1.digest}"))
    assert len(changes) == 2 and project.index.entries() == []
    with pytest.raises(ModelKitNotFound):
        remove(project, parse_reference("demo:v1"))


def test_gc_frees_only_unreferenced_blobs(project: Workspace) -> None:
    v1 = pack(project, tags=parse_tag_list("demo:v1"))
    _change_model(project, b"v2 weights" * 100)
    v2 = pack(project, tags=parse_tag_list("demo:v2"))
    before = set(project.store)
    assert collect_garbage(project, dry_run=False).sweep.removed == []
    remove(project, parse_reference("demo:v1"))
    dry = collect_garbage(project).sweep
    assert set(project.store) == before, "dry run (the default) deletes nothing"
    # v1's manifest, config and model layer go; layers shared with v2 stay.
    assert set(dry.removed) == {v1.digest, v1.manifest.config.digest, v1.manifest.layers[0].digest}
    report = collect_garbage(project, dry_run=False).sweep
    assert set(report.removed) == set(dry.removed) and report.freed_bytes > 0
    for digest in [v2.digest, *(layer.digest for layer in v2.manifest.layers)]:
        assert project.store.has(digest) and project.store.verify(digest)


def _tagger(root: str, tag: str, n: int) -> None:
    ws = Workspace.open(root)
    entry = ws.index.resolve(parse_reference("demo:base"))
    for i in range(n):
        set_tags(ws, [parse_reference(f"demo:{tag}-{i}")], entry.descriptor)


def test_concurrent_tagging_loses_nothing(project: Workspace) -> None:
    pack(project, tags=parse_tag_list("demo:base"))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_tagger, args=(str(project.root), f"p{i}", 15)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    tags = {e.tag for e in project.index.entries()}
    assert len(tags) == 1 + 3 * 15
    rows = project.db.query("SELECT COUNT(*) AS n FROM tag_events")
    assert rows[0]["n"] == 1 + 3 * 15


def test_digest_reference_without_repository(project: Workspace) -> None:
    v1 = pack(project)
    assert project.index.entries()[0].tag is None
    entry = project.index.resolve(parse_reference(str(v1.digest)))
    assert entry.digest == v1.digest
    with pytest.raises(ModelKitNotFound):
        project.index.resolve(parse_reference(str(Digest.of_bytes(b"x"))))


def test_init_is_idempotent_and_migrations_recorded(project: Workspace, tmp_path: Path) -> None:
    from tether.workspace import init_workspace

    kitfile_before = (project.root / "Kitfile").read_text()
    gitignore_before = (project.root / ".gitignore").read_text()
    report = init_workspace(project.root)
    assert not report.created and report.gitignore_added == () and report.migrations == ()
    assert report.kitfile is None and report.kitfile_existing is not None
    assert (project.root / "Kitfile").read_text() == kitfile_before
    assert (project.root / ".gitignore").read_text() == gitignore_before
    names = [r["name"] for r in project.db.query("SELECT name FROM _tether_migrations")]
    assert names[-1] == "0011_mlflow_models"
    if project.db.dialect.name == "sqlite":
        assert len(names) == 11  # PostgreSQL starts at the schema the first 7 build
        assert project.db.query("PRAGMA journal_mode")[0][0] == "wal"


def test_database_from_the_future_is_refused(project: Workspace) -> None:
    from tether.errors import DatabaseError

    with project.db.atomic() as conn:
        conn.execute("INSERT INTO _tether_migrations VALUES ('9999_future', ?)", (Instant(0),))
    with pytest.raises(DatabaseError, match="9999_future"):
        _ = Workspace.open(project.root).db
