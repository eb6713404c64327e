"""Packing a context directory and its Kitfile into a ModelKit in the local store.

A ModelKit is an OCI image manifest (artifactType ``…kitops.modelkit.manifest.v1+json``)
whose config blob is the Kitfile as JSON, with ``digest``/``diffId`` on each entry,
and whose layers are tars of the Kitfile's paths, each annotated with
``org.cncf.model.filepath``. Nothing in it depends on where or when it was packed
(``org.opencontainers.image.created`` only with ``SOURCE_DATE_EPOCH``), so the same
files give the same manifest digest everywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tether.errors import KitfileError, UsageError
from tether.hashing import Digest, hash_file
from tether.manifest import KITFILE_NAMES
from tether.manifest.kitfile import Code, Kitfile, LayerSpec, is_within
from tether.manifest.kitignore import IgnoreRules
from tether.modelkit.tags import TagChange, add_untagged, set_tags
from tether.modelkit.tarwrite import FileEntry, LayerSink, collect, write_tar
from tether.oci import mediatypes as mt
from tether.oci.manifest import Descriptor, ImageManifest
from tether.oci.reference import Reference
from tether.reporting import SILENT, Reporter
from tether.runs.record import RunRecord
from tether.workspace import Workspace

ENV_FOLDER = "tether-env"  # the code entry --with-env adds


@dataclass(frozen=True)
class PackResult:
    digest: Digest
    manifest: ImageManifest
    kitfile: Kitfile
    tags: list[TagChange]
    warnings: list[str] = field(default_factory=list)
    content_bytes: int = 0
    run_id: str | None = None  # the run that made it, when known
    run_link: str | None = None  # from-run | detected
    provenance: Digest | None = None  # the referrer holding its provenance Statement

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": str(self.digest),
            "size": self.manifest.total_size,
            "tags": [
                {"ref": c.ref, "action": c.action, "previous": str(c.old) if c.old else None}
                for c in self.tags
            ],
            "warnings": self.warnings,
            "run": self.run_id,
            "run_link": self.run_link,
            "provenance": str(self.provenance) if self.provenance else None,
        }


def find_kitfile(context: Path, kitfile: str | Path | None) -> Path:
    if kitfile is not None:
        path = Path(kitfile)
        if not path.is_file():
            raise UsageError(f"Kitfile {path} does not exist", hint="check the -f path")
        return path
    for name in KITFILE_NAMES:
        if (context / name).is_file():
            return context / name
    raise UsageError(
        f"no Kitfile in {context}", hint="run 'tether init' to propose one, or pass -f KITFILE"
    )


def load_kitfile(path: Path) -> tuple[Kitfile, list[str]]:
    return Kitfile.from_yaml(path.read_bytes(), source=str(path.name))


def pack(
    ws: Workspace,
    context: str | Path | None = None,
    *,
    kitfile: str | Path | None = None,
    tags: list[Reference] | None = None,
    compression: str | None = None,
    force: bool = False,
    report: Reporter = SILENT,
    env: Mapping[str, str] | None = None,
    run: RunRecord | None = None,
    detect_run: bool = True,
    env_formats: Sequence[str] = (),
) -> PackResult:
    """Pack ``context`` (default: the project root) as described by its Kitfile.

    With ``run``, the files that run wrote are packed from its stored outputs (the exact
    bytes it produced, even if the working copy changed since) and its provenance is
    attached. Without, when the model files on disk are the outputs of a recorded run
    (same path and digest), that run is detected and attached the same way.

    ``env_formats`` (with ``run``): the run's environment exported in these formats
    (``envcapture/export.py``) is packed as one more code entry, ``tether-env/``, so
    the ModelKit carries what rebuilds its environment."""
    env = os.environ if env is None else env
    context = Path(context).resolve() if context is not None else ws.root
    if not context.is_dir():
        raise UsageError(f"{context} is not a directory", hint="give the folder to pack")
    compression = compression or ws.settings.pack_compression
    if compression not in mt.COMPRESSIONS:
        raise UsageError(f"unknown compression {compression!r}", hint="use none, gzip or zstd")
    created = _created(env)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        report.warn(message)

    # Temp files live as long as the pack: stored outputs kept in chunks, assembled for
    # the tar writer, and the exported environment.
    with contextlib.ExitStack() as files:
        kf, kf_warnings = load_kitfile(find_kitfile(context, kitfile))
        for w in kf_warnings:
            note(w)
        exported = _exported_env(ws, context, run, env_formats, note, files)
        if exported is not None:
            described = Code(path=ENV_FOLDER, description=exported[1])
            kf = kf.model_copy(update={"code": [*(kf.code or []), described]})
        if kf.model_reference:
            note(f"model.path refers to the ModelKit {kf.model_reference}; no model layer packed")
        rules = IgnoreRules.for_context(context)
        specs = kf.layer_specs()
        plans: list[tuple[LayerSpec, list[FileEntry]]] = []
        for spec in specs:
            inner = [
                o.path
                for o in specs
                if o is not spec and o.path != spec.path and is_within(o.path, spec.path)
            ]
            if spec.base == "mcpb":
                plans.append((spec, _mcpb_entry(context, spec)))
                continue
            where = context
            if exported is not None and spec.section == "code" and spec.path == ENV_FOLDER:
                where = exported[0]  # the folder the environment was exported to
            plans.append((spec, collect(where, spec.path, inner, rules, note, key=spec.key)))

        link = None
        if run is not None or detect_run:
            link = _link_run(ws, context, plans, run, note, files)
        how = _Assembly(compression, created, tags, force, link, report)
        return _assemble(ws, kf, plans, how, warnings)


def _exported_env(
    ws: Workspace,
    context: Path,
    run: RunRecord | None,
    formats: Sequence[str],
    note: Callable[[str], None],
    files: contextlib.ExitStack,
) -> tuple[Path, str] | None:
    """The run's environment written in ``formats`` to a folder made for the pack, and
    the code entry's description; None without formats."""
    if not formats:
        return None
    if run is None:
        raise UsageError(
            "--with-env packs a run's environment", hint="name the run: --from-run RUN"
        )
    if (context / ENV_FOLDER).exists():
        raise UsageError(
            f"{context / ENV_FOLDER} exists: the exported environment would shadow it",
            hint="rename that folder, or pack without --with-env",
        )
    import tempfile

    from tether.envcapture.export import export, subject_of

    subject = subject_of(ws, run)
    folder = Path(files.enter_context(tempfile.TemporaryDirectory(dir=ws.dot / "tmp")))
    names = []
    for fmt in dict.fromkeys(formats):
        result = export(subject, fmt)
        for message in result.notes:
            note(f"environment: {message}")
        for f in result.files:
            target = folder / ENV_FOLDER / f.name
            if target.exists():
                raise UsageError(
                    f"two formats both write {f.name}", hint="choose one of them in --with-env"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.text, encoding="utf-8")
            names.append(f.name)
    description = (
        f"The environment of run {subject.label} ({run.id}) as tether recorded it: "
        + ", ".join(names)
    )
    return folder, description


@dataclass(frozen=True)
class _Assembly:
    compression: str
    created: str | None
    tags: list[Reference] | None
    force: bool
    link: _RunLink | None
    report: Reporter


def _assemble(
    ws: Workspace,
    kf: Kitfile,
    plans: list[tuple[LayerSpec, list[FileEntry]]],
    how: _Assembly,
    warnings: list[str],
) -> PackResult:
    """Write the layers, config and manifest of ``plans`` and index (and tag) the kit."""
    total = sum(e.size for _, entries in plans for e in entries)
    how.report.start(total)
    advance = how.report.advance
    link = how.link

    # Shared gc lock: a concurrent 'tether gc' must not delete blobs we wrote but have
    # not yet referenced from index.json.
    with ws.lock("gc", shared=True):
        layers: list[Descriptor] = []
        info: dict[tuple[str, int], tuple[str, str]] = {}
        for spec, entries in plans:
            desc, diff_id = _write_layer(ws, spec, entries, how.compression, advance)
            layers.append(desc)
            info[(spec.section, spec.index)] = (str(desc.digest), diff_id)
        config_bytes = kf.with_layer_info(info).to_config_json()
        config = Descriptor(mt.KIT_CONFIG, ws.store.put_bytes(config_bytes), len(config_bytes))
        annotations = {mt.ANN_CREATED: how.created} if how.created else {}
        manifest = ImageManifest(config, tuple(layers), mt.KIT_ARTIFACT, annotations)
        data = manifest.to_bytes()
        digest = ws.store.put_bytes(data)
        desc = Descriptor(mt.OCI_MANIFEST, digest, len(data), artifact_type=mt.KIT_ARTIFACT)
        if how.tags:
            changes = set_tags(ws, how.tags, desc, force=how.force)
        else:
            add_untagged(ws, "", desc)
            changes = []
        provenance = None
        if link is not None:
            provenance = _attach_provenance(ws, desc, link)
    return PackResult(
        digest,
        manifest,
        kf,
        changes,
        warnings,
        total,
        link.run.id if link else None,
        link.how if link else None,
        provenance,
    )


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the model's folder
    digest: Digest
    size: int


def pack_stored(
    ws: Workspace, name: str, folder: str, files: list[StoredFile], *, run: RunRecord | None
) -> PackResult:
    """A ModelKit whose model is ``files`` (blobs of the store, each checked first) under
    ``folder``, with a Kitfile naming it ``name``: how a model logged through MLflow's API,
    which never was a folder of the project, becomes a version. Tied to ``run`` when
    given, with its provenance."""
    import yaml

    folder = "/".join(p for p in folder.split("/") if p) or "model"
    kf, kf_warnings = Kitfile.from_yaml(
        yaml.safe_dump(
            {
                "manifestVersion": "1.0",
                "package": {"name": name},
                "model": {"name": name, "path": folder},
            }
        )
    )
    entries: list[FileEntry] = []
    dirs: set[str] = set()
    with contextlib.ExitStack() as sources:
        for f in sorted(files, key=lambda f: f.path):
            rel = f"{folder}/{f.path}"
            parts = rel.split("/")
            for i in range(1, len(parts)):
                if (d := "/".join(parts[:i])) not in dirs:
                    dirs.add(d)
                    entries.append(FileEntry(d, None, 0, 0o755))
            # Checked first (a kit must never carry rotten bytes), whole or assembled.
            source = sources.enter_context(ws.store.file_of(f.digest))
            entries.append(FileEntry(rel, source, f.size, 0o644))
        (spec,) = kf.layer_specs()
        link = None
        if run is not None:
            link = _RunLink(run, "from-run", {f"{folder}/{f.path}": str(f.digest) for f in files})
        how = _Assembly(
            ws.settings.pack_compression, _created(os.environ), None, False, link, SILENT
        )
        return _assemble(ws, kf, [(spec, entries)], how, list(kf_warnings))


MODEL_BASES = ("model", "modelpart")


@dataclass(frozen=True)
class _RunLink:
    run: RunRecord
    how: Literal["from-run", "detected"]
    model_files: dict[str, str]  # context-relative path -> digest


def _link_run(
    ws: Workspace,
    context: Path,
    plans: list[tuple[LayerSpec, list[FileEntry]]],
    run: RunRecord | None,
    note: Callable[[str], None],
    files: contextlib.ExitStack,
) -> _RunLink | None:
    """Tie the pack to the run that made its model: substitute ``run``'s stored outputs
    for the files on disk, or find the run whose outputs the model files are."""
    if not context.is_relative_to(ws.root):
        if run is not None:
            note("the packed folder is outside the project: files are not matched to the run")
        return _RunLink(run, "from-run", {}) if run is not None else None
    prefix = context.relative_to(ws.root).as_posix()

    def project_path(rel: str) -> str:
        return rel if prefix == "." else f"{prefix}/{rel}"

    if run is None:
        return _detect_run(
            ws,
            [
                (e, project_path(e.rel))
                for spec, entries in plans
                if spec.base in MODEL_BASES
                for e in entries
                if e.source is not None
            ],
        )
    outputs = {f.path: f for f in run.files_with_role("output") if f.digest and f.stored}
    model_files: dict[str, str] = {}
    for spec, entries in plans:
        for i, e in enumerate(entries):
            if e.source is None:
                continue
            out = outputs.get(project_path(e.rel))
            blob = Digest.parse(out.digest) if out is not None and out.digest else None
            if blob is not None and ws.store.has(blob):
                # Checked first (a kit must never carry rotten bytes), whole or assembled.
                source = files.enter_context(ws.store.file_of(blob))
                entries[i] = FileEntry(e.rel, source, ws.store.size(blob), e.mode)
                if spec.base in MODEL_BASES:
                    model_files[e.rel] = str(blob)
            elif spec.base in MODEL_BASES:
                label = run.name or run.id
                note(f"{e.rel} is not an output of run {label}; packing the file on disk")
                model_files[e.rel] = str(hash_file(e.source)[0])
    return _RunLink(run, "from-run", model_files)


def _detect_run(ws: Workspace, candidates: list[tuple[FileEntry, str]]) -> _RunLink | None:
    if not candidates:
        return None
    from tether.repositories.runs import finished_outputs_at, load_runs

    by_path = {p: e for e, p in candidates}
    rows = finished_outputs_at(ws.db, list(by_path))
    if not rows:
        return None  # no run ever wrote these paths: nothing to hash
    found: dict[str, str] = {}
    for path in {r.path for r in rows}:
        source = by_path[path].source
        assert source is not None
        found[path] = str(hash_file(source)[0])
    score: dict[str, tuple[int, float]] = {}
    for r in rows:
        if found.get(r.path) == r.digest:
            n, _ = score.get(r.run_id, (0, 0.0))
            score[r.run_id] = (n + 1, r.started)
    if not score:
        return None
    best = max(score, key=lambda k: score[k])
    (run,) = load_runs(ws.db, [best])
    matched = {
        by_path[r.path].rel: str(r.digest)
        for r in rows
        if r.run_id == best and found.get(r.path) == r.digest
    }
    return _RunLink(run, "detected", matched)


def _attach_provenance(ws: Workspace, desc: Descriptor, link: _RunLink) -> Digest:
    from tether.modelkit import provenance
    from tether.repositories import kits

    kits.link_run(ws.db, str(desc.digest), link.run.id, link.how)
    return provenance.attach(
        ws, desc, provenance.from_run(ws, link.run, desc.digest, link.model_files)
    )


def _write_layer(
    ws: Workspace,
    spec: LayerSpec,
    entries: list[FileEntry],
    compression: str,
    advance: Callable[[int], None] | None,
) -> tuple[Descriptor, str]:
    annotations = {mt.ANN_FILEPATH: spec.path}
    if spec.subtype:
        annotations[mt.ANN_LAYER_SUBTYPE] = spec.subtype
    size_hint = sum(e.size for e in entries)
    if spec.base == "mcpb":
        # Raw layer: the file's bytes verbatim. mtime is fixed at 0 (KitOps records the
        # real one) so that the manifest stays reproducible.
        (entry,) = entries
        assert entry.source is not None
        digest = ws.store.put_file(entry.source)
        annotations[mt.ANN_FILE_METADATA] = json.dumps(
            {
                "name": entry.rel,
                "mode": entry.mode,
                "uid": 0,
                "gid": 0,
                "size": entry.size,
                "mtime": "1970-01-01T00:00:00Z",
                "typeflag": 48,
            },
            separators=(",", ":"),
        )
        if advance is not None:
            advance(entry.size)
        media = mt.LayerType("mcpb", "raw", "none").media_type()
        return Descriptor(media, digest, entry.size, annotations), str(digest)
    with ws.store.writer(size_hint=size_hint) as writer:
        sink = LayerSink(writer, compression)
        write_tar(entries, sink, advance)
        diff_hex = sink.finish()
    assert writer.digest is not None
    media = mt.LayerType(spec.base, "tar", compression).media_type()
    diff_id = f"sha256:{diff_hex}" if diff_hex else str(writer.digest)
    return Descriptor(media, writer.digest, writer.size, annotations), diff_id


def _mcpb_entry(context: Path, spec: LayerSpec) -> list[FileEntry]:
    path = context / spec.path
    if not path.is_file() or path.is_symlink():
        raise KitfileError(
            f"{spec.key}: {spec.path} is not a regular .mcpb file",
            hint="an MCP server entry must point to one .mcpb bundle",
        )
    try:
        with zipfile.ZipFile(path) as zf:
            ok = "manifest.json" in zf.namelist()
    except zipfile.BadZipFile:
        ok = False
    if not ok:
        raise KitfileError(
            f"{spec.key}: {spec.path} is not an MCP bundle",
            hint="a .mcpb file is a ZIP archive with manifest.json at its root",
        )
    return [FileEntry(spec.path, path, path.stat().st_size, 0o644)]


def _created(env: Mapping[str, str]) -> str | None:
    value = env.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        seconds = int(value)
        stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise UsageError(
            f"SOURCE_DATE_EPOCH={value!r} is not a Unix timestamp",
            hint="set it to whole seconds since 1970, e.g. $(git log -1 --format=%ct)",
        ) from None
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
