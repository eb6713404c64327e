"""Provenance that travels with a ModelKit: an in-toto Statement with a SLSA v1
provenance predicate, saying which run made the model from which data, code,
environment, command, parameters and seed.

It is stored as an OCI *referrer*, never inside the ModelKit: an image manifest with
``artifactType: application/vnd.in-toto+json``, the empty config, one layer holding the
Statement, and ``subject`` = the ModelKit's manifest. So the ModelKit's bytes and digest
are unchanged (packing stays deterministic; ``kit`` sees nothing new), registries list
the document through the referrers API or the ``sha256-<hex>`` fallback tag, and the
local store keeps it in ``index.json`` beside its subject, as the OCI image layout
does::

    index.json
      {…kit manifest…, "annotations": {"org.opencontainers.image.ref.name": "recs:v1"}}
      {…referrer…, "artifactType": "application/vnd.in-toto+json",
                   "annotations": {"dev.tether.subject": "sha256:<kit>", …}}

Statement layout::

    subject               the ModelKit manifest ("modelkit") and each model file (its path)
    predicate.buildDefinition
      buildType           https://tether.dev/run/v1
      externalParameters  command, seed, params, run name
      internalParameters  environment summary (python, platform)
      resolvedDependencies  code (git commit, or the source snapshot), every data input
                          (its path, sha256, and the run that produced it), environment
    predicate.runDetails  builder (tether and its version), invocationId (the run id),
                          start and end, byproducts (the run's final metrics)
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.errors import ModelKitError
from tether.hashing import Digest
from tether.oci import mediatypes as mt
from tether.oci.layout import IndexEntry
from tether.oci.manifest import Descriptor, ImageManifest
from tether.runs.record import RunRecord
from tether.workspace import Workspace

if TYPE_CHECKING:
    from tether.envcapture.environment import Environment

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://tether.dev/run/v1"
MAX_STATEMENT_BYTES = 4 << 20


@dataclass(frozen=True)
class Material:
    """One thing the run consumed: a data file, the code, or the environment."""

    kind: str  # data | code | environment
    name: str  # path for data; commit or snapshot for code; "environment"
    digest: str  # sha256:<hex>, or the git commit for code in git
    produced_by: str | None = None  # the run that wrote this data, when known
    uri: str | None = None  # the code's remote, credentials stripped


@dataclass(frozen=True)
class Provenance:
    run_id: str
    run_name: str | None
    command: tuple[str, ...]
    seed: int | None
    params: Mapping[str, str]
    started: float | None
    finished: float | None
    builder: str
    subjects: tuple[tuple[str, str], ...]  # (name, sha256:<hex>)
    materials: tuple[Material, ...]
    metrics: Mapping[str, float] = field(default_factory=dict)
    dirty: bool = False
    environment: Mapping[str, str] = field(default_factory=dict)

    def materials_of(self, kind: str) -> list[Material]:
        return [m for m in self.materials if m.kind == kind]

    # -- encoding -------------------------------------------------------------------

    def to_statement(self) -> dict[str, Any]:
        deps: list[dict[str, Any]] = []
        for m in self.materials:
            dep: dict[str, Any] = {"name": m.name}
            if m.kind == "code" and m.uri is not None:
                dep["uri"] = f"git+{m.uri}@{m.digest}"
            if m.kind == "code" and not m.digest.startswith("sha256:"):
                dep["digest"] = {"gitCommit": m.digest}
            else:
                dep["digest"] = {"sha256": Digest.parse(m.digest).hex}
            annotations = {"tether.kind": m.kind}
            if m.produced_by:
                annotations["tether.producedBy"] = m.produced_by
            if m.kind == "code" and self.dirty:
                annotations["tether.dirty"] = "true"
            dep["annotations"] = annotations
            deps.append(dep)
        metadata: dict[str, Any] = {"invocationId": self.run_id}
        if self.started is not None:
            metadata["startedOn"] = _stamp(self.started)
        if self.finished is not None:
            metadata["finishedOn"] = _stamp(self.finished)
        external: dict[str, Any] = {"command": list(self.command), "params": dict(self.params)}
        if self.seed is not None:
            external["seed"] = self.seed
        if self.run_name:
            external["name"] = self.run_name
        return {
            "_type": STATEMENT_TYPE,
            "subject": [
                {"name": name, "digest": {"sha256": Digest.parse(d).hex}}
                for name, d in self.subjects
            ],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": external,
                    "internalParameters": {"environment": dict(self.environment)},
                    "resolvedDependencies": deps,
                },
                "runDetails": {
                    "builder": {"id": self.builder},
                    "metadata": metadata,
                    "byproducts": [{"name": "metrics", "annotations": dict(self.metrics)}]
                    if self.metrics
                    else [],
                },
            },
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_statement(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Provenance:
        """Parse a Statement tether wrote; anything else is refused with a reason."""
        if len(data) > MAX_STATEMENT_BYTES:
            raise _bad(f"{len(data)} bytes, more than {MAX_STATEMENT_BYTES}")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"not JSON ({exc})") from None
        try:
            return cls._from_doc(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _bad(f"unexpected structure ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_doc(cls, doc: Any) -> Provenance:
        if doc.get("_type") != STATEMENT_TYPE or doc.get("predicateType") != PREDICATE_TYPE:
            raise _bad("not an in-toto v1 Statement with a SLSA v1 provenance predicate")
        build = doc["predicate"]["buildDefinition"]
        details = doc["predicate"]["runDetails"]
        if build.get("buildType") != BUILD_TYPE:
            raise _bad(f"buildType {str(build.get('buildType'))[:80]!r} is not a tether run")
        external = build["externalParameters"]
        meta = details.get("metadata", {})
        materials = []
        dirty = False
        for dep in build.get("resolvedDependencies", []):
            ann = dep.get("annotations", {})
            digest = dep["digest"]
            value = (
                str(digest["gitCommit"])
                if "gitCommit" in digest
                else str(Digest.parse("sha256:" + str(digest["sha256"])))
            )
            uri = dep.get("uri")
            if isinstance(uri, str) and uri.startswith("git+"):
                uri = uri[4:].rsplit("@", 1)[0]
            dirty = dirty or ann.get("tether.dirty") == "true"
            materials.append(
                Material(
                    str(ann.get("tether.kind", "data")),
                    str(dep["name"]),
                    value,
                    ann.get("tether.producedBy"),
                    uri if isinstance(uri, str) else None,
                )
            )
        metrics: dict[str, float] = {}
        for product in details.get("byproducts", []):
            if product.get("name") == "metrics":
                metrics.update({str(k): float(v) for k, v in product["annotations"].items()})
        seed = external.get("seed")
        return cls(
            run_id=str(meta["invocationId"]),
            run_name=external.get("name"),
            command=tuple(str(c) for c in external.get("command", [])),
            seed=int(seed) if seed is not None else None,
            params={str(k): str(v) for k, v in external.get("params", {}).items()},
            started=_parse_stamp(meta.get("startedOn")),
            finished=_parse_stamp(meta.get("finishedOn")),
            builder=str(details["builder"]["id"]),
            subjects=tuple(
                (str(s["name"]), str(Digest.parse("sha256:" + str(s["digest"]["sha256"]))))
                for s in doc["subject"]
            ),
            materials=tuple(materials),
            metrics=metrics,
            dirty=dirty,
            environment={
                str(k): str(v)
                for k, v in build.get("internalParameters", {}).get("environment", {}).items()
            },
        )


def from_run(
    ws: Workspace, run: RunRecord, kit_digest: Digest, model_files: Mapping[str, str]
) -> Provenance:
    """The provenance of a ModelKit packed from ``run``; ``model_files`` maps the paths
    of its model files to their digests."""
    from tether import __version__
    from tether.repositories.runs import load_environment

    materials: list[Material] = []
    code = run.code
    if code.commit:
        materials.append(Material("code", str(code.commit), str(code.commit), None, code.remote))
    elif code.snapshot_digest:
        materials.append(Material("code", "source snapshot", str(code.snapshot_digest)))
    for f in run.files_with_role("input"):
        if f.digest:
            materials.append(Material("data", f.path, f.digest, _producer(ws, run, f.digest)))
    environment: dict[str, str] = {}
    if run.env_digest:
        materials.append(Material("environment", "environment", run.env_digest))
        env = load_environment(ws.db, run.env_digest)
        if env is not None:
            environment = _env_summary(env)
    subjects = [("modelkit", str(kit_digest)), *sorted(model_files.items())]
    return Provenance(
        run_id=run.id,
        run_name=run.name,
        command=run.command,
        seed=run.seed,
        params=dict(run.params),
        started=run.started,
        finished=run.ended,
        builder=f"https://pypi.org/project/tether-ml/{__version__}",
        subjects=tuple(subjects),
        materials=tuple(materials),
        metrics={k: m.last for k, m in run.metrics.items() if math.isfinite(m.last)},
        dirty=bool(code.dirty),
        environment=environment,
    )


def _env_summary(env: Environment) -> dict[str, str]:
    """What a reader needs at a glance; the full record is in tether's database under
    the digest listed among the dependencies."""
    system = env.os
    out = {
        "python": env.python.label,
        "packages": str(len(env.packages)),
        "os": " ".join(p for p in (system.system, system.release, system.machine) if p),
    }
    return {k: v for k, v in out.items() if v}


def _producer(ws: Workspace, run: RunRecord, digest: str) -> str | None:
    """The latest run before ``run`` that wrote these bytes (the data's own run)."""
    from tether.repositories.runs import producer

    return producer(ws.db, digest, before=run)


# -- storage as a referrer ---------------------------------------------------------------


def attach(ws: Workspace, subject: Descriptor, provenance: Provenance) -> Digest:
    """Store the Statement as a referrer of ``subject`` (already in the store). The same
    run gives the same bytes, so packing twice adds nothing. The caller holds the
    shared gc lock."""
    statement = provenance.to_bytes()
    manifest = referrer_manifest(ws.store.put_bytes(statement), len(statement), subject)
    return store_referrer(ws, subject.digest, manifest.to_bytes())


def store_referrer(ws: Workspace, subject: Digest, data: bytes) -> Digest:
    """Keep a referrer manifest (its Statement already stored) in the index beside its
    subject, with the empty config it names."""
    ws.store.put_bytes(mt.EMPTY_JSON)
    digest = ws.store.put_bytes(data)
    desc = Descriptor(
        mt.OCI_MANIFEST,
        digest,
        len(data),
        {mt.ANN_TETHER_SUBJECT: str(subject), mt.ANN_PREDICATE_TYPE: PREDICATE_TYPE},
        mt.IN_TOTO,
    )
    with ws.index.transaction() as entries:
        if not any(e.digest == digest for e in entries):
            entries.append(IndexEntry("", None, desc))
    return digest


def referrer_manifest(statement: Digest, size: int, subject: Descriptor) -> ImageManifest:
    empty = Descriptor(mt.EMPTY_CONFIG, Digest.of_bytes(mt.EMPTY_JSON), len(mt.EMPTY_JSON))
    layer = Descriptor(mt.IN_TOTO, statement, size, {mt.ANN_PREDICATE_TYPE: PREDICATE_TYPE})
    plain_subject = Descriptor(subject.media_type, subject.digest, subject.size)
    return ImageManifest(empty, (layer,), mt.IN_TOTO, {}, plain_subject)


def read_local(ws: Workspace, kit: Digest) -> list[Provenance]:
    """Every provenance document the store holds for the ModelKit ``kit``."""
    out = []
    for entry in ws.index.referrers(kit):
        if entry.descriptor.artifact_type != mt.IN_TOTO:
            continue
        out.append(parse_referrer(ws.store.read_bytes(entry.digest, max_size=4 << 20), ws, kit))
    return out


def parse_referrer(
    raw: bytes, ws: Workspace | None, kit: Digest, blob: bytes | None = None
) -> Provenance:
    """Read a referrer manifest (and its Statement from the store, or ``blob``)."""
    manifest = ImageManifest.from_bytes(raw)
    if manifest.subject is None or manifest.subject.digest != kit:
        raise _bad(f"the document is not about {kit.short}")
    layers = [layer for layer in manifest.layers if layer.media_type == mt.IN_TOTO]
    if len(layers) != 1:
        raise _bad("a provenance referrer holds exactly one in-toto layer")
    if blob is None:
        assert ws is not None
        blob = ws.store.read_bytes(layers[0].digest, max_size=MAX_STATEMENT_BYTES)
    elif Digest.of_bytes(blob) != layers[0].digest:
        raise _bad("the Statement does not match its digest")
    provenance = Provenance.from_bytes(blob)
    if ("modelkit", str(kit)) not in provenance.subjects:
        raise _bad(f"the Statement's subjects do not name the ModelKit {kit.short}")
    return provenance


def _bad(why: str) -> ModelKitError:
    return ModelKitError(
        f"invalid provenance document: {why}",
        hint="it was not written by tether, or is damaged; the ModelKit itself is unaffected",
        code="bad-provenance",
    )


def _stamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_stamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return (
            dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
        )
    except ValueError:
        return None
