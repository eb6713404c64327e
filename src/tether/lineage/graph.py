"""Lineage: the graph of what made what, walked upstream (what made this model) or
downstream (what used this data file or run).

Nodes are runs, data (by digest), code (a commit, or a source snapshot), environments,
ModelKits, model versions and aliases. Edges point the way things flowed::

    data ──used──▶ run ──produced──▶ data        code ──ran──▶ run ◀──ran in── environment
    run ──packed──▶ modelkit ──version──▶ NAME v3 ──alias──▶ NAME:production
    run ──reproduced by──▶ run

Every edge is read from an indexed table (``run_files`` by digest and by run,
``kit_runs`` both ways, ``model_versions`` by digest, ``model_aliases`` by version,
``run_links`` both ways), one query per kind of step and level of the walk, so a
walk costs a few queries per level whatever the number of runs. A ModelKit whose
run is not in this database (pulled from a registry) is read from its provenance
document instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import (
    LineageError,
    ModelKitNotFound,
    ModelNotFound,
    ReferenceFormatError,
    RunNotFound,
    TetherError,
    UsageError,
)
from tether.hashing import Digest, hash_file
from tether.repositories import lineage as read
from tether.repositories import runs as runs_repo
from tether.runs.code import CodeState
from tether.workspace import Workspace

KINDS = ("run", "data", "code", "environment", "modelkit", "version", "alias")
MAX_DEPTH = 1000


@dataclass(frozen=True)
class Node:
    id: str  # kind:key, unique in a graph
    kind: str
    label: str
    attrs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "label": self.label, **self.attrs}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    relation: str  # used | produced | ran | ran-in | packed | version | alias | reproduced-by

    def to_json(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target, "relation": self.relation}


@dataclass(frozen=True)
class Graph:
    roots: tuple[str, ...]
    direction: str  # upstream | downstream
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    truncated: bool = False  # the depth limit stopped the walk

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def of_kind(self, kind: str) -> list[Node]:
        return [n for n in self.nodes if n.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "roots": list(self.roots),
            "direction": self.direction,
            "truncated": self.truncated,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }


def lineage(
    ws: Workspace, subject: str, *, downstream: bool = False, depth: int | None = None
) -> Graph:
    """The lineage of ``subject``: a run (id or name), a ModelKit REF, a model version
    (``NAME@v2``, ``NAME:production``), or a data PATH (``PATH@sha256:…`` for one
    version of it); prefix ``run:``, ``kit:``, ``model:`` or ``path:`` to say which."""
    if depth is not None and not 0 <= depth <= MAX_DEPTH:
        raise UsageError(f"depth {depth} is out of range", hint=f"use 0 to {MAX_DEPTH}")
    walker = _Walker(ws, "downstream" if downstream else "upstream")
    roots = walker.roots(subject)
    walker.walk(roots, MAX_DEPTH if depth is None else depth)
    return walker.graph(roots)


class _Walker:
    def __init__(self, ws: Workspace, direction: str) -> None:
        self.ws = ws
        self.db = ws.db
        self.direction = direction
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str, str], Edge] = {}
        self.truncated = False
        self._kit_tags: dict[str, list[str]] | None = None

    # -- subjects ---------------------------------------------------------------------

    def roots(self, subject: str) -> list[str]:
        kind, sep, rest = subject.partition(":")
        if sep and kind in ("run", "kit", "model", "path"):
            finder: Callable[[str], list[str]] = getattr(self, f"_{kind}_roots")
            return finder(rest)
        for finder in (self._model_roots, self._kit_roots, self._run_roots, self._path_roots):
            try:
                return finder(subject)
            except (ModelNotFound, ModelKitNotFound, RunNotFound, ReferenceFormatError, UsageError):
                continue
        raise LineageError(
            f"{subject[:80]!r} is not a run, a ModelKit, a model version or a data path",
            hint="see 'tether runs list', 'tether list', 'tether model list'; prefix run:, "
            "kit:, model: or path: to say which",
        )

    def _model_roots(self, spec: str) -> list[str]:
        from tether.registry import models

        version = models.resolve(self.ws, spec)
        _, _, alias = models.split_spec(spec)
        node = self._version(version.model, version.version, str(version.digest), version.archived)
        if alias:
            return [self._alias(version.model, alias, version.version)]
        return [node]

    def _kit_roots(self, ref: str) -> list[str]:
        from tether.oci.reference import parse_reference

        entry = self.ws.index.resolve(parse_reference(ref))
        return [self._kit(str(entry.digest))]

    def _run_roots(self, ref: str) -> list[str]:
        from tether.repositories.runs import resolve

        return [self._run_by_id(resolve(self.db, ref))]

    def _path_roots(self, text: str) -> list[str]:
        path_text, at, digest = text.rpartition("@")
        if not at:
            path_text, digest = text, ""
        rel = _project_path(self.ws.root, path_text)
        if digest:
            if not Digest.is_valid(digest):
                raise UsageError(f"{digest[:80]!r} is not a digest", hint="write PATH@sha256:<hex>")
            return [self._data(digest, rel)]
        on_disk = self.ws.root / rel
        files = (
            [on_disk]
            if on_disk.is_file()
            else sorted(p for p in on_disk.rglob("*") if p.is_file())
            if on_disk.is_dir()
            else []
        )
        if files:
            out = []
            for f in files:
                d = str(hash_file(f)[0])
                out.append(self._data(d, f.relative_to(self.ws.root).as_posix()))
            return out
        # Not on disk: every version of it the runs recorded.
        digests = read.digests_recorded_at(self.db, rel, _like_prefix(rel))
        if not digests:
            raise UsageError(
                f"{rel} is not in the project and no run recorded it",
                hint="give a file or folder that exists, or PATH@sha256:<hex>",
            )
        return [self._data(d, rel) for d in digests]

    # -- the walk ---------------------------------------------------------------------

    def walk(self, roots: list[str], depth: int) -> None:
        seen = set(roots)
        frontier = list(roots)
        for _ in range(depth):
            if not frontier:
                return
            found = self._step(frontier)
            frontier = [n for n in found if n not in seen]
            seen.update(frontier)
        if frontier and self._step(frontier, probe=True):
            self.truncated = True

    def _step(self, frontier: list[str], *, probe: bool = False) -> list[str]:
        by_kind: dict[str, list[str]] = {}
        for node_id in frontier:
            kind, _, key = node_id.partition(":")
            by_kind.setdefault(kind, []).append(key)
        before = (dict(self.nodes), dict(self.edges)) if probe else ({}, {})
        found: list[str] = []
        up = self.direction == "upstream"
        for kind, keys in by_kind.items():
            step = getattr(self, f"_{'up' if up else 'down'}_{kind}", None)
            if step is not None:
                found += step(keys)
        if probe:  # only asking whether there was more
            self.nodes, self.edges = before
        return found

    # upstream: what made it

    def _up_alias(self, keys: list[str]) -> list[str]:
        out = []
        for key in keys:
            node = self.nodes[f"alias:{key}"]
            out.append(
                self._link(
                    self._version(
                        node.attrs["model"], node.attrs["version"], node.attrs["digest"], None
                    ),
                    f"alias:{key}",
                    "alias",
                )
            )
        return out

    def _up_version(self, keys: list[str]) -> list[str]:
        return [
            self._link(
                self._kit(self.nodes[f"version:{k}"].attrs["digest"]), f"version:{k}", "version"
            )
            for k in keys
        ]

    def _up_modelkit(self, keys: list[str]) -> list[str]:
        out = []
        linked: set[str] = set()
        made = read.kit_runs_by_kit(self.db, keys)
        self._load_runs(run_id for _, run_id in made)
        for kit, run_id in made:
            linked.add(kit)
            out.append(self._link(self._run_by_id(run_id), f"modelkit:{kit}", "packed"))
        for key in keys:
            if key not in linked:
                out += self._from_provenance(key)
        return out

    def _up_run(self, keys: list[str]) -> list[str]:
        out = []
        runs = {k: self.nodes[f"run:{k}"] for k in keys}
        recorded = [k for k, n in runs.items() if not n.attrs.get("from_provenance")]
        for run_id, path, digest in read.files_of_runs(self.db, "input", recorded):
            out.append(self._link(self._data(digest, path), f"run:{run_id}", "used"))
        for key, node in runs.items():
            if node.attrs.get("code"):
                a = node.attrs
                code = self._code(
                    a["code"], remote=a.get("code_remote"), dirty=a.get("dirty", False)
                )
                out.append(self._link(code, f"run:{key}", "ran"))
            if node.attrs.get("environment"):
                out.append(self._link(self._env(node.attrs["environment"]), f"run:{key}", "ran-in"))
        pairs = read.reproductions(self.db, keys, of=False)
        self._load_runs(target for _, target in pairs)
        for run_id, target in pairs:
            out.append(self._link(self._run_by_id(target), f"run:{run_id}", "reproduced-by"))
        return out

    def _up_data(self, keys: list[str]) -> list[str]:
        out = []
        writers = read.runs_with_files(self.db, "output", keys)
        self._load_runs(run_id for run_id, _ in writers)
        for run_id, digest in writers:
            out.append(self._link(self._run_by_id(run_id), f"data:{digest}", "produced"))
        return out

    # downstream: what used it

    def _down_data(self, keys: list[str]) -> list[str]:
        out = []
        readers = read.runs_with_files(self.db, "input", keys)
        self._load_runs(run_id for run_id, _ in readers)
        for run_id, digest in readers:
            out.append(self._link(f"data:{digest}", self._run_by_id(run_id), "used"))
        return out

    def _down_run(self, keys: list[str]) -> list[str]:
        out = []
        for run_id, path, digest in read.files_of_runs(self.db, "output", keys):
            out.append(self._link(f"run:{run_id}", self._data(digest, path), "produced"))
        for kit, run_id in read.kit_runs_by_run(self.db, keys):
            out.append(self._link(f"run:{run_id}", self._kit(kit), "packed"))
        pairs = read.reproductions(self.db, keys, of=True)
        self._load_runs(run_id for run_id, _ in pairs)
        for run_id, target in pairs:
            out.append(self._link(f"run:{target}", self._run_by_id(run_id), "reproduced-by"))
        return out

    def _down_modelkit(self, keys: list[str]) -> list[str]:
        out = []
        for model, version, digest, archived in read.versions_of_kits(self.db, keys):
            out.append(
                self._link(
                    f"modelkit:{digest}", self._version(model, version, digest, archived), "version"
                )
            )
        return out

    def _down_version(self, keys: list[str]) -> list[str]:
        out = []
        for key in keys:
            node = self.nodes[f"version:{key}"]
            model, version = node.attrs["model"], node.attrs["version"]
            for alias in read.aliases_of(self.db, model, version):
                out.append(
                    self._link(f"version:{key}", self._alias(model, alias, version), "alias")
                )
        return out

    # -- provenance (a ModelKit made elsewhere) ----------------------------------------

    def _from_provenance(self, kit: str) -> list[str]:
        from tether.modelkit import provenance

        try:
            documents = provenance.read_local(self.ws, Digest.parse(kit))
        except TetherError:
            return []
        out = []
        for p in documents:
            if runs_repo.exists(self.db, p.run_id):
                out.append(self._link(self._run_by_id(p.run_id), f"modelkit:{kit}", "packed"))
                continue
            run_id = f"run:{p.run_id}"
            self._add(
                Node(
                    run_id,
                    "run",
                    p.run_name or p.run_id,
                    {
                        "run": p.run_id,
                        "name": p.run_name,
                        "command": list(p.command),
                        "seed": p.seed,
                        "params": dict(p.params),
                        "started": p.started,
                        "from_provenance": True,
                    },
                )
            )
            out.append(self._link(run_id, f"modelkit:{kit}", "packed"))
            for m in p.materials:
                if m.kind == "data":
                    out.append(self._link(self._data(m.digest, m.name), run_id, "used"))
                elif m.kind == "code":
                    code = self._code(m.digest, remote=m.uri, dirty=p.dirty)
                    out.append(self._link(code, run_id, "ran"))
                else:
                    out.append(self._link(self._env(m.digest), run_id, "ran-in"))
        return out

    # -- nodes and edges --------------------------------------------------------------

    def _add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def _link(self, source: str, target: str, relation: str) -> str:
        """Record source → target; returns the node the walk reached (the far end)."""
        self.edges.setdefault((source, target, relation), Edge(source, target, relation))
        return source if self.direction == "upstream" else target

    def _run_by_id(self, run_id: str) -> str:
        node_id = f"run:{run_id}"
        if node_id not in self.nodes:
            self._load_runs([run_id])
        return node_id

    def _load_runs(self, ids: Iterable[str]) -> None:
        """Make nodes for runs not seen yet: a few queries per 500 runs, not per run."""
        missing = [i for i in dict.fromkeys(ids) if f"run:{i}" not in self.nodes]
        if not missing:
            return
        found = read.run_nodes(self.db, missing)
        for run_id in missing:
            node_id = f"run:{run_id}"
            r = found.get(run_id)
            if r is None:
                self._add(Node(node_id, "run", run_id, {"run": run_id, "deleted": True}))
                continue
            code = r.code
            self._add(
                Node(
                    node_id,
                    "run",
                    r.name or run_id,
                    {
                        "run": run_id,
                        "name": r.name,
                        "status": r.status,
                        "started": r.started,
                        "seed": r.seed,
                        "params": r.params,
                        "command": list(r.command),
                        "code": _code_key(code),
                        "code_remote": code.remote,
                        "dirty": code.dirty,
                        "environment": r.env_digest,
                    },
                )
            )

    def _data(self, digest: str, path: str) -> str:
        return self._add(Node(f"data:{digest}", "data", path, {"path": path, "digest": digest}))

    def _code(self, key: str, *, remote: str | None = None, dirty: bool = False) -> str:
        label = key[:12] if not key.startswith("sha256:") else f"snapshot {key[7:19]}"
        if dirty and not key.startswith("sha256:"):
            label += " + uncommitted changes"
        attrs: dict[str, Any] = {"commit" if not key.startswith("sha256:") else "snapshot": key}
        if remote:
            attrs["remote"] = remote
        if dirty:
            attrs["dirty"] = True
        return self._add(Node(f"code:{key}", "code", label, attrs))

    def _env(self, digest: str) -> str:
        attrs: dict[str, Any] = {"digest": digest}
        env = runs_repo.load_environment(self.db, digest)
        if env is not None:
            attrs["python"] = env.python.label
            attrs["packages"] = len(env.packages)
        label = digest[7:19] + (f" ({attrs['python']})" if attrs.get("python") else "")
        return self._add(Node(f"environment:{digest}", "environment", label, attrs))

    def _kit(self, digest: str) -> str:
        if self._kit_tags is None:
            self._kit_tags = {}
            for e in self.ws.index.kits():
                if e.tag:
                    self._kit_tags.setdefault(str(e.digest), []).append(e.ref())
        # Name a kit by a version tag rather than by an alias that may move.
        tags = sorted(
            self._kit_tags.get(digest, []),
            key=lambda t: (not self.ws.settings.is_version_tag(t.rpartition(":")[2]), t),
        )
        label = tags[0] if tags else f"modelkit {digest[7:19]}"
        return self._add(
            Node(f"modelkit:{digest}", "modelkit", label, {"digest": digest, "tags": tags})
        )

    def _version(self, model: str, version: int, digest: str, archived: float | None) -> str:
        key = f"{model}@v{version}"
        label = f"{model} v{version}" + (" (archived)" if archived else "")
        attrs = {"model": model, "version": version, "digest": digest, "archived": archived}
        return self._add(Node(f"version:{key}", "version", label, attrs))

    def _alias(self, model: str, alias: str, version: int) -> str:
        digest = read.version_digest(self.db, model, version)
        attrs = {"model": model, "alias": alias, "version": version, "digest": digest}
        return self._add(Node(f"alias:{model}:{alias}", "alias", f"{model}:{alias}", attrs))

    def graph(self, roots: list[str]) -> Graph:
        return Graph(
            tuple(roots),
            self.direction,
            tuple(self.nodes.values()),
            tuple(self.edges.values()),
            self.truncated,
        )


def _code_key(code: CodeState) -> str | None:
    if code.commit:
        diff = code.diff_digest
        return code.commit + (f"+{diff[7:19]}" if diff else "")
    return code.snapshot_digest


def _project_path(root: Path, text: str) -> str:
    path = Path(text)
    absolute = path if path.is_absolute() else (Path.cwd() / path)
    try:
        return absolute.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        if not path.is_absolute():
            return path.as_posix()  # relative to the project, given from elsewhere
        raise UsageError(
            f"{text} is outside the project {root}", hint="give a path inside it"
        ) from None


def _like_prefix(rel: str) -> str:
    escaped = rel.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.rstrip("/") + "/%"
