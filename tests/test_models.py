"""The model registry, provenance and lineage against a real project: real runs
(``tether run``), a real store and database, real processes racing for an alias, and
Graphviz rendering the DOT output."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tether.db.connection import Instant
from tether.hashing import Digest, hash_file
from tether.lineage.graph import lineage
from tether.lineage.render import render
from tether.oci import mediatypes as mt
from tether.oci.manifest import ImageManifest
from tether.oci.reference import Reference, parse_reference
from tether.registry import models
from tether.repositories import runs as runs_repo
from tether.workspace import Workspace

from .conftest import train

Tether = Callable[..., Result]


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def test_register_promote_rollback_history(project: Workspace, tether: Tether) -> None:
    train(tether, project, "v1", "alpha")
    ok(tether("pack", "-t", "demo:v1.0.0"))
    assert "recs v1" in ok(tether("model", "register", "recs", "--from", "demo:v1.0.0")).output
    v1_model = (project.root / "models" / "model.pkl").read_text()
    train(tether, project, "v2", "beta")
    # From a run: packed from its outputs, with provenance.
    out = ok(tether("model", "register", "recs", "--from", "v2", "--json")).output
    v2 = json.loads(out)
    assert v2["version"] == 2 and v2["packed"] and v2["run"] == runs_repo.resolve(project.db, "v2")
    # The same ModelKit again is the same version, not v3.
    again = json.loads(
        ok(tether("model", "register", "recs", "--from", "recs:v2", "--json")).output
    )
    assert again["version"] == 2 and not again["created"]

    ok(tether("model", "alias", "recs", "production", "v1", "-m", "first release"))
    ok(tether("model", "alias", "recs", "production", "v2", "-m", "better RMSE"))
    assert models.resolve(project, "recs:production").version == 2
    r = ok(tether("model", "rollback", "recs", "production", "-m", "v2 misbehaves", "--restore"))
    assert "recs:production -> v1 (was v2)" in r.output
    assert (project.root / "models" / "model.pkl").read_text() == v1_model
    # The local tag follows the alias: any ModelKit command can use it.
    assert (
        project.index.resolve(_ref("recs:production")).digest
        == models.resolve(project, "recs@v1").digest
    )

    events = json.loads(ok(tether("model", "history", "recs", "production", "--json")).output)
    assert [(e["action"], e["from"], e["to"], e["reason"]) for e in events] == [
        ("set", None, 1, "first release"),
        ("move", 1, 2, "better RMSE"),
        ("rollback", 2, 1, "v2 misbehaves"),
    ]
    assert all(e["user"] for e in events)
    # Rolling back again goes to where it pointed before: v2.
    ok(tether("model", "rollback", "recs", "production", "--to", "v2"))
    assert models.resolve(project, "recs:production").version == 2
    text = ok(tether("model", "history", "recs")).output
    assert "register" in text and "v2 misbehaves" in text


def test_refused_changes_change_nothing(project: Workspace, tether: Tether) -> None:
    ok(tether("pack", "-t", "demo:v1.0.0"))
    ok(tether("model", "register", "recs", "--from", "demo:v1.0.0"))
    (project.root / "models" / "model.pkl").write_bytes(b"other weights")
    ok(tether("pack", "-t", "demo:v2.0.0"))
    ok(tether("model", "register", "recs", "--from", "demo:v2.0.0"))
    ok(tether("model", "alias", "recs", "production", "v1"))
    before = (project.index.path.read_bytes(), models.history(project, "recs"))

    r = tether("model", "delete", "recs@v1")
    assert r.exit_code == 1
    assert "error: recs v1 is what production points at" in r.output
    assert "hint: move the alias first" in r.output
    for bad, message in [
        (("model", "alias", "recs", "v3", "v1"), "'v3' cannot be an alias"),
        (("model", "alias", "recs", "production", "v9"), "recs has no version v9"),
        (("model", "alias", "nope", "production", "v1"), "no model 'nope'"),
        (("model", "register", "Bad Name", "--from", "demo:v1.0.0"), "is not a model name"),
        (("model", "register", "recs", "--from", "no-such-thing"), "neither a ModelKit"),
        (("model", "rollback", "recs", "production"), "nothing to roll back to"),
        (("model", "show", "recs@v0"), "is not a version"),
        (("model", "push", "recs"), "recs has not been pushed to a registry"),
        (("model", "history", "recs", "--remote"), "recs has not been pushed to a registry"),
    ]:
        r = tether(*bad)
        assert r.exit_code in (1, 2) and message in r.output, (bad, r.output)
        assert "hint:" in r.output, bad
    assert (project.index.path.read_bytes(), models.history(project, "recs")) == before

    # Forced: the alias goes with it (recorded); the version stays resolvable, archived.
    r = ok(tether("model", "delete", "recs@v1", "--force", "-m", "bad labels"))
    assert "removed recs:production" in r.output
    v1 = models.resolve(project, "recs@v1")
    assert v1.archived is not None and v1.aliases == ()
    assert "recs:v1" not in [e.ref() for e in project.index.kits()]
    assert models.resolve(project, "recs").version == 2  # the latest in use
    r = tether("model", "alias", "recs", "staging", "v1")
    assert r.exit_code == 1 and "archived" in r.output
    actions = [(e.alias, e.action) for e in models.history(project, "recs")][-2:]
    assert actions == [("production", "remove"), (None, "archive")]
    versions = json.loads(ok(tether("model", "versions", "recs", "--json")).output)
    assert [(v["version"], v["archived"] is not None) for v in versions] == [(1, True), (2, False)]


def _promote(root: str, version: str, reason: str, start: float) -> None:
    while time.time() < start:
        time.sleep(0.001)
    ws = Workspace.open(Path(root))
    try:
        models.set_alias(ws, "recs", "production", version, reason=reason)
    finally:
        ws.close()


def test_alias_race_between_processes(project: Workspace, tether: Tether) -> None:
    for i in range(1, 4):
        (project.root / "models" / "model.pkl").write_bytes(f"weights {i}".encode())
        ok(tether("pack", "-t", f"demo:v{i}.0.0"))
        ok(tether("model", "register", "recs", "--from", f"demo:v{i}.0.0"))
    ok(tether("model", "alias", "recs", "production", "v1"))
    for _round in range(3):
        start = time.time() + 0.3
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_promote, args=(str(project.root), v, f"by {v}", start))
            for v in ("v2", "v3")
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        moves = [e for e in models.history(project, "recs", "production")][-2:]
        # Both recorded, in the order they committed, each starting where the other left.
        assert {e.reason for e in moves} == {"by v2", "by v3"}
        assert moves[1].old_version == moves[0].new_version
        final = models.resolve(project, "recs:production")
        assert final.version == moves[1].new_version
        # The tag agrees with the record, and the index is intact.
        assert project.index.resolve(_ref("recs:production")).digest == final.digest
        # Next round starts from v1 again.
        models.set_alias(project, "recs", "production", "v1")


def test_pack_from_run_uses_its_outputs_and_attaches_provenance(
    project: Workspace, tether: Tether
) -> None:
    run_id = train(tether, project, "v1", "alpha")
    produced = (project.root / "models" / "model.pkl").read_bytes()
    (project.root / "models" / "model.pkl").write_bytes(b"edited afterwards")
    r = ok(tether("pack", "--from-run", "v1", "-t", "demo:v1.0.0", "--json"))
    packed = json.loads(r.output)
    assert packed["run"] == run_id and packed["run_link"] == "from-run"
    # The ModelKit holds the bytes the run wrote, not the working copy.
    target = project.root.parent / "out"
    ok(tether("unpack", "demo:v1.0.0", "-d", str(target)))
    assert (target / "models" / "model.pkl").read_bytes() == produced

    # KitOps sees an untouched ModelKit: same media types, a Kitfile config, and no
    # layer or annotation of ours; the Statement is a separate referrer.
    kit = Digest.parse(packed["digest"])
    manifest = ImageManifest.from_bytes(project.store.read_bytes(kit))
    assert manifest.artifact_type == mt.KIT_ARTIFACT and manifest.config.media_type == mt.KIT_CONFIG
    assert all(mt.parse_layer_type(layer.media_type) for layer in manifest.layers)
    assert manifest.subject is None and not manifest.annotations
    config = json.loads(project.store.read_bytes(manifest.config.digest))
    assert config["package"]["name"] == "demo" and config["model"]["path"] == "models/model.pkl"
    (referrer,) = project.index.referrers(kit)
    doc = ImageManifest.from_bytes(project.store.read_bytes(referrer.digest))
    assert doc.subject is not None and doc.subject.digest == kit
    assert doc.artifact_type == mt.IN_TOTO and doc.config.media_type == mt.EMPTY_CONFIG
    statement = json.loads(project.store.read_bytes(doc.layers[0].digest))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects["modelkit"] == kit.hex
    assert subjects["models/model.pkl"] == Digest.of_bytes(produced).hex
    build = statement["predicate"]["buildDefinition"]
    assert build["externalParameters"]["seed"] == 42
    assert build["externalParameters"]["command"][-2:] == ["src/train.py", "alpha"]
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    data_digest = hash_file(project.root / "data" / "ratings.csv")[0]
    assert deps["data/ratings.csv"]["digest"]["sha256"] == data_digest.hex
    assert any(d["annotations"]["tether.kind"] == "environment" for d in deps.values())
    assert statement["predicate"]["runDetails"]["metadata"]["invocationId"] == run_id
    # Packing never lists the referrer as a ModelKit of its own.
    assert [e.ref() for e in project.index.kits()] == ["demo:v1.0.0"]
    r = ok(tether("inspect", "--provenance", "demo:v1.0.0"))
    assert f"run          v1 ({run_id})" in r.output and "seed         42" in r.output
    assert "data         data/ratings.csv" in r.output

    # Removing the ModelKit removes its provenance; gc then reclaims both.
    ok(tether("remove", "demo:v1.0.0"))
    assert project.index.entries() == []


def test_pack_detects_the_run_that_made_the_model(project: Workspace, tether: Tether) -> None:
    run_id = train(tether, project, "v1", "alpha")
    packed = json.loads(ok(tether("pack", "-t", "demo:v1.0.0", "--json")).output)
    assert packed["run"] == run_id and packed["run_link"] == "detected"
    # A model file no run wrote gets no provenance.
    (project.root / "models" / "model.pkl").write_bytes(b"hand made")
    packed = json.loads(ok(tether("pack", "-t", "demo:v2.0.0", "--json")).output)
    assert packed["run"] is None and packed["provenance"] is None
    r = tether("inspect", "--provenance", "demo:v2.0.0")
    assert r.exit_code == 1 and "no provenance is attached" in r.output


def test_lineage_story_and_regenerated_data(project: Workspace, tether: Tether) -> None:
    train(tether, project, "v1", "alpha")
    ok(tether("model", "register", "recs", "--from", "v1"))
    train(tether, project, "v2", "beta")
    ok(tether("model", "register", "recs", "--from", "v2"))
    ok(tether("model", "alias", "recs", "production", "v2"))
    old_data = str(hash_file(project.root / "data" / "ratings.csv")[0])

    graph = lineage(project, "data/ratings.csv", downstream=True)
    assert {n.label for n in graph.of_kind("version")} == {"recs v1", "recs v2"}
    assert [n.label for n in graph.of_kind("alias")] == ["recs:production"]
    text = ok(tether("lineage", "--downstream", "data/ratings.csv")).output
    assert "registered as version recs v1" in text and "pointed at by alias recs:production" in text

    (project.root / "data" / "ratings.csv").write_text("user,item,rating\n1,2,5\n3,4,1\n")
    train(tether, project, "v3", "gamma")
    ok(tether("model", "register", "recs", "--from", "v3"))
    new_data = str(hash_file(project.root / "data" / "ratings.csv")[0])
    up3 = {n.attrs["digest"] for n in lineage(project, "recs@v3").of_kind("data")}
    up1 = {n.attrs["digest"] for n in lineage(project, "recs@v1").of_kind("data")}
    assert new_data in up3 and old_data not in up3
    assert old_data in up1 and new_data not in up1
    # The old version of the file, by digest: still leads to v1 and v2 only.
    old = lineage(project, f"data/ratings.csv@{old_data}", downstream=True)
    assert {n.label for n in old.of_kind("version")} == {"recs v1", "recs v2"}

    up = lineage(project, "recs:production")
    run = next(n for n in up.of_kind("run") if n.label == "v2")
    assert run.attrs["seed"] == 42 and up.of_kind("environment") and up.of_kind("code")
    r = tether("lineage", "nothing-like-this")
    assert r.exit_code == 1 and "hint:" in r.output


def test_lineage_from_provenance_when_the_database_lacks_it(
    project: Workspace, tether: Tether, tmp_path: Path
) -> None:
    """A ModelKit whose run this database never saw (as after a pull) tells its story
    from its provenance document."""
    run_id = train(tether, project, "v1", "alpha")
    packed = json.loads(
        ok(tether("pack", "--from-run", "v1", "-t", "demo:v1.0.0", "--json")).output
    )
    # Forget the run and the link: what is left is the ModelKit and its referrer.
    runs_repo.delete_runs(project.db, [run_id])
    with project.db.atomic() as conn:
        conn.execute("DELETE FROM kit_runs")
    graph = lineage(project, "demo:v1.0.0")
    (run,) = graph.of_kind("run")
    assert run.attrs["run"] == run_id and run.attrs["from_provenance"] and run.attrs["seed"] == 42
    data = {n.label for n in graph.of_kind("data")}
    assert "data/ratings.csv" in data
    assert graph.of_kind("environment")
    assert packed["digest"] in {n.attrs["digest"] for n in graph.of_kind("modelkit")}


def _synthetic_runs(ws: Workspace, n: int) -> tuple[str, str]:
    """One data file used by ``n`` runs, each producing a model packed into a kit;
    every tenth kit is a model version."""
    data = str(Digest.of_bytes(b"ratings"))
    t0 = time.time()
    with ws.db.atomic() as conn:
        for i in range(n):
            run_id = f"run{i:05d}"
            conn.execute(
                'INSERT INTO runs (id, name, status, command, cwd, started, host, "user", pid,'
                " seed, code) VALUES (?, ?, 'finished', '[]', '.', ?, 'h', 'u', 1, ?, '{}')",
                (run_id, f"train-{i}", Instant(t0 + i), i),
            )
            model = str(Digest.of_bytes(f"model {i}".encode()))
            kit = str(Digest.of_bytes(f"kit {i}".encode()))
            conn.executemany(
                "INSERT INTO run_files VALUES (?, ?, ?, ?, 1, 'audit', 0)",
                [(run_id, "input", "data/ratings.csv", data), (run_id, "output", "m.pkl", model)],
            )
            conn.execute("INSERT INTO kit_runs VALUES (?, ?, 'from-run')", (kit, run_id))
            if i % 10 == 0:
                conn.execute(
                    'INSERT INTO models (name, created, "user") VALUES (?, ?, ?)'
                    " ON CONFLICT DO NOTHING",
                    ("big", Instant(0), "u"),
                )
                conn.execute(
                    'INSERT INTO model_versions (model, version, digest, source, created, "user")'
                    " VALUES ('big', ?, ?, 'x', ?, 'u')",
                    (i // 10 + 1, kit, Instant(0)),
                )
    return data, str(Digest.of_bytes(b"kit 500"))


def test_lineage_across_a_thousand_runs(project: Workspace) -> None:
    data, kit = _synthetic_runs(project, 1000)
    graph = lineage(project, f"path:data/ratings.csv@{data}", downstream=True)
    assert len(graph.of_kind("run")) == 1000
    assert len(graph.of_kind("modelkit")) == 1000
    assert len(graph.of_kind("version")) == 100
    assert len(graph.edges) == 1000 * 3 + 100
    shallow = lineage(project, f"path:data/ratings.csv@{data}", downstream=True, depth=1)
    assert len(shallow.of_kind("run")) == 1000 and not shallow.of_kind("modelkit")
    assert shallow.truncated
    up = lineage(project, "big@v51")
    assert [n.label for n in up.of_kind("run")] == ["train-500"]
    assert up.of_kind("data")[0].attrs["digest"] == data
    assert kit in {n.attrs["digest"] for n in up.of_kind("modelkit")}


@pytest.mark.skipif(
    shutil.which("dot") is None and not os.environ.get("CI"),
    reason="Graphviz (Debian graphviz) is missing; CI installs it",
)
def test_dot_and_mermaid_render(project: Workspace, tether: Tether, tmp_path: Path) -> None:
    train(tether, project, 'v1 "quoted" \\ run', "alpha")
    run_id = runs_repo.resolve(project.db, 'v1 "quoted" \\ run')
    ok(tether("model", "register", "recs", "--from", run_id))
    ok(tether("model", "alias", "recs", "production", "v1"))
    for direction in (False, True):
        subject = "data/ratings.csv" if direction else "recs:production"
        graph = lineage(project, subject, downstream=direction)
        dot = render(graph, "dot")
        svg = subprocess.run(
            ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True
        ).stdout
        assert svg.startswith("<?xml") and "<svg" in svg
        assert svg.count('class="node"') == len(graph.nodes)
        assert svg.count('class="edge"') == len(graph.edges)
        mermaid = render(graph, "mermaid")
        _check_mermaid(mermaid, len(graph.nodes), len(graph.edges))
    r = ok(tether("lineage", "recs:production", "--format", "json"))
    assert {n["kind"] for n in json.loads(r.output)["nodes"]} >= {"alias", "version", "run"}


def _check_mermaid(text: str, nodes: int, edges: int) -> None:
    """The subset of Mermaid's flowchart grammar we emit, checked line by line: every
    label is one quoted string with no raw quote inside, every edge joins declared ids."""
    import re

    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    declared = set()
    node = re.compile(r'^  (n\d+)(\(|\[/|\[\[|\[|\{\{|>)"([^"]*)"(\)|/\]|\]\]|\]|\}\})$')
    edge = re.compile(r"^  (n\d+) -->\|([^|\"]+)\| (n\d+)$")
    n_edges = 0
    for line in lines[1:]:
        if m := node.match(line):
            declared.add(m.group(1))
        elif m := edge.match(line):
            assert m.group(1) in declared and m.group(3) in declared
            n_edges += 1
        else:
            assert re.match(r"^  style n\d+ fill:#[0-9a-f]{6}$", line), line
    assert len(declared) == nodes and n_edges == edges


def _ref(text: str) -> Reference:
    return parse_reference(text)
