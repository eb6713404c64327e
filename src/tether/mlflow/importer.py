"""``tether import mlflow SOURCE``: an MLflow tracking store's history, brought over.

Experiments (matched by name), runs (keeping MLflow's run ids, so ``runs:/ID/…`` URIs
and ``mlflow.parentRunId`` tags still point right), their params, tags, status, times,
user and every metric point, their artifacts (into the store, by digest), logged
models, registered models with their version numbers, and aliases.

Idempotent and resumable: a run is written in one transaction, after its artifacts are
in the store, so an interrupted import leaves whole runs or none, and the next import
adds only what is missing (runs by id, logged models by id, versions by number, aliases
that point elsewhere). What cannot come over is named with its reason, never dropped in
silence: a version whose files are unreachable, a value tether cannot hold as a param or
tag (kept as a file of the run instead).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import DataError, TetherError, UsageError
from tether.mlflow.source import (
    Artifacts,
    Source,
    SourceExperiment,
    SourceLoggedModel,
    SourceModel,
    SourceRun,
    SourceVersion,
    open_source,
)
from tether.modelkit.pack import StoredFile
from tether.reporting import SILENT, Reporter
from tether.repositories import experiments as exp_repo
from tether.repositories import logged_models as logged_repo
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.runs.record import NewRun, RunFile, RunStatus, check_key, check_name, value_text
from tether.workspace import Workspace

_STATUS: dict[str, RunStatus] = {
    "RUNNING": "running", "SCHEDULED": "running", "FINISHED": "finished",
    "FAILED": "failed", "KILLED": "killed",
}  # fmt: skip
OVERSIZE_FOLDER = "mlflow-values"  # params and tags tether cannot hold, kept as files


@dataclass
class Counts:
    experiments: int = 0
    runs: int = 0
    params: int = 0
    tags: int = 0
    series: int = 0
    points: int = 0
    artifacts: int = 0
    artifact_bytes: int = 0
    logged_models: int = 0
    models: int = 0
    versions: int = 0
    aliases: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ImportOptions:
    source: str
    artifacts_root: Path | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class ImportReport:
    source: str
    dry_run: bool
    found: Counts  # in the source
    added: Counts  # brought over now (with dry_run: what would be)
    skipped: tuple[str, ...] = field(default_factory=tuple)  # what could not, and why

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "found": self.found.to_json(),
            "added": self.added.to_json(),
            "skipped": list(self.skipped),
        }


def import_mlflow(ws: Workspace, options: ImportOptions, report: Reporter = SILENT) -> ImportReport:
    """Bring the MLflow store ``options.source`` names into the project; with ``dry_run``
    count what would come and change nothing. ``report`` hears one ``advance(1)`` per run
    (after ``start(runs to import)``) and a note per stage."""
    source = open_source(options.source, artifacts_root=options.artifacts_root)
    try:
        return _Import(ws, source, options, report).run()
    finally:
        source.close()


class _Import:
    def __init__(self, ws: Workspace, source: Source, options: ImportOptions, report: Reporter):
        self.ws = ws
        self.source = source
        self.options = options
        self.report = report
        self.found = Counts()
        self.added = Counts()
        self.skipped: list[str] = []
        self._new_experiments = 0

    def run(self) -> ImportReport:
        self.report.note(f"reading {self.source.display}")
        experiments = self.source.experiments()
        runs = {e.id: list(self.source.runs(e)) for e in experiments}
        logged = {e.id: self.source.logged_models(e) for e in experiments}
        models = self.source.models()
        every = [r for rs in runs.values() for r in rs]
        have = {r.id for r in runs_repo.load_runs(self.ws.db, [r.id for r in every], full=False)}
        new_runs = [r for r in every if r.id not in have]
        f, a = self.found, self.added
        f.experiments = len(experiments)
        f.runs, a.runs = len(every), len(new_runs)
        f.params, a.params = (sum(len(r.params) for r in rs) for rs in (every, new_runs))
        f.tags, a.tags = (sum(len(r.tags) for r in rs) for rs in (every, new_runs))
        f.series, a.series = (sum(len(r.metric_keys) for r in rs) for rs in (every, new_runs))
        f.logged_models = sum(len(m) for m in logged.values())
        f.models = len(models)
        f.versions = sum(len(m.versions) for m in models)
        f.aliases = sum(len(m.aliases) for m in models)
        if self.options.dry_run:
            known = {e.name for e in exp_repo.listed(self.ws.db, ("active", "deleted"))}
            a.experiments = sum(
                1 for e in experiments if e.name not in known | {exp_repo.DEFAULT_NAME}
            )
            a.logged_models = sum(
                1 for ms in logged.values() for m in ms if logged_repo.get(self.ws.db, m.id) is None
            )
            for model in models:
                held = self._held(model.name)
                a.models += held is None
                a.versions += sum(1 for v in model.versions if v.version not in (held or {}))
                a.aliases += sum(
                    1 for alias, n in model.aliases.items() if alias not in (held or {}).get(n, ())
                )
            return self._report()
        a.runs = a.params = a.tags = a.series = 0  # counted again as they are written
        ids = {e.id: self._experiment(e) for e in experiments}
        a.experiments = self._new_experiments
        self.report.note(f"importing {len(new_runs)} of {len(every)} runs")
        self.report.start(len(new_runs))
        for run in new_runs:
            self._run(run, ids[run.experiment_id])
            self.report.advance(1)
        for e in experiments:
            for m in logged[e.id]:
                self._logged_model(m, ids[e.id])
        for model in models:
            self._registered(model)
        return self._report()

    def _report(self) -> ImportReport:
        return ImportReport(self.source.display, self.options.dry_run, self.found, self.added,
                            tuple(self.skipped))  # fmt: skip

    # -- experiments and runs -----------------------------------------------------------

    def _experiment(self, e: SourceExperiment) -> int:
        db = self.ws.db
        exp_repo.ensure_default(db, at=time.time())
        found = exp_repo.by_name(db, e.name)
        if found is not None:
            return found.id
        made = exp_repo.create(db, e.name, None, dict(e.tags), at=e.created or time.time())
        assert made is not None  # the name was free under the same process
        if e.lifecycle == "deleted":
            exp_repo.set_lifecycle(db, made, "deleted", at=e.created or time.time())
        self._new_experiments += 1
        return made

    def _run(self, run: SourceRun, experiment_id: int) -> None:
        from tether.mlflow import tracking

        ws = self.ws
        params, tags, oversize = self._values(run)
        if experiment_id != 0:
            tags[tracking.EXPERIMENT_TAG] = str(experiment_id)
        if run.lifecycle == "deleted":
            tags[tracking.LIFECYCLE_TAG] = "deleted"
        tags["tether.imported"] = "mlflow"
        name = run.name or run.tags.get(tracking.RUN_NAME_TAG)
        try:
            check_name(name)
        except UsageError:
            name = None  # the mlflow.runName tag keeps it
        try:
            files = self._artifacts(run)
        except DataError as e:
            # Not written without its artifacts: the next import tries the run again.
            self.skipped.append(f"{e.message}; the run is left for the next import")
            return
        series = {}
        points = 0
        for key in run.metric_keys:
            try:
                check_key("metric", key)
            except UsageError:
                self.skipped.append(f"run {run.id}: metric {key[:80]!r} is not a valid name")
                continue
            got = self.source.history(run, key)
            series[key] = (got.steps, got.ats, got.values)
            points += len(got.steps)
        for key, text in oversize.items():
            with ws.store.writer() as w:
                w.write(text.encode())
            assert w.digest is not None
            files.append(RunFile("artifact", f"{OVERSIZE_FOLDER}/{key}", str(w.digest), w.size,
                                 "mlflow", True))  # fmt: skip
        status = _STATUS.get(run.status, "finished")
        with ws.db.atomic(run=run.id):  # the whole run or nothing
            runs_repo.create_run(ws.db, NewRun(
                name=name, command=(), cwd="", host="", user=run.user or "unknown", pid=0,
                started=run.started or run.ended or time.time(), run_id=run.id,
            ))  # fmt: skip
            runs_repo.log_params(ws.db, run.id, params)
            runs_repo.set_tags(ws.db, run.id, tags)
            metrics_repo.insert_series(ws.db, run.id, series)
            runs_repo.add_files(ws.db, run.id, files)
            if status != "running":
                runs_repo.finish_run(ws.db, run.id, status,
                                     ended=run.ended or run.started or time.time())  # fmt: skip
        a = self.added
        a.runs, a.params, a.tags = a.runs + 1, a.params + len(run.params), a.tags + len(run.tags)
        a.series, a.points = a.series + len(series), a.points + points
        a.artifacts += sum(1 for f in files if not f.path.startswith(OVERSIZE_FOLDER + "/"))
        a.artifact_bytes += sum(f.size or 0 for f in files)

    def _values(self, run: SourceRun) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """(params, tags) tether holds as they are, and the rest, to keep as files."""
        kept: tuple[dict[str, str], dict[str, str]] = ({}, {})
        oversize: dict[str, str] = {}
        for kind, values, into in (("param", run.params, kept[0]), ("tag", run.tags, kept[1])):
            for key, value in values.items():
                try:
                    check_key(kind, key)
                    value_text(value)
                except UsageError:
                    from tether.mlflow.artifacts import clean

                    try:
                        oversize[clean(f"{kind}s/{key}")] = value
                    except TetherError:
                        self.skipped.append(f"run {run.id}: {kind} {key[:80]!r} cannot be kept")
                    continue
                into[key] = value
        return kept[0], kept[1], oversize

    def _artifacts(self, run: SourceRun) -> list[RunFile]:
        if not run.artifact_uri:
            return []
        out = []
        for path, digest, size in self._store_tree(run.artifact_uri, f"run {run.id}"):
            out.append(RunFile("artifact", path, digest, size, "mlflow", True))
        return out

    def _store_tree(self, uri: str, owner: str) -> list[tuple[str, str, int]]:
        """Every file under ``uri``, into the store: (path, digest, size)."""
        from tether.mlflow.artifacts import clean

        artifacts: Artifacts = self.source.artifacts
        out = []
        try:
            for entry in list(artifacts.walk(uri)):
                path = clean(entry.path) if entry.path else uri.rstrip("/").rsplit("/", 1)[-1]
                with artifacts.open(uri, entry.path) as f, self.ws.store.writer() as w:
                    while chunk := f.read(1 << 20):
                        w.write(chunk)
                assert w.digest is not None
                out.append((path, str(w.digest), w.size))
        except (TetherError, OSError) as e:
            reason = e.message if isinstance(e, TetherError) else str(e)
            raise DataError(f"{owner}: artifacts at {uri[:120]} not read ({reason})") from None
        return out

    # -- models -------------------------------------------------------------------------

    def _logged_model(self, m: SourceLoggedModel, experiment_id: int) -> None:
        if logged_repo.get(self.ws.db, m.id) is not None:
            return
        try:
            files = self._store_tree(m.artifact_location, f"logged model {m.id}")
        except DataError as e:
            self.skipped.append(e.message)
            return
        with self.ws.db.atomic():  # the record with its files, or neither
            logged_repo.create(self.ws.db, logged_repo.LoggedModel(
                m.id, experiment_id, m.name, m.run_id, m.status, m.model_type, m.created,
                m.updated, self.ws.user, dict(m.tags), dict(m.params),
            ))  # fmt: skip
            for path, digest, size in files:
                logged_repo.add_file(self.ws.db, m.id, logged_repo.ModelFile(path, digest, size))
        self.added.logged_models += 1
        self.added.artifacts += len(files)
        self.added.artifact_bytes += sum(size for _, _, size in files)

    def _has_run(self, run_id: str) -> bool:
        return bool(runs_repo.load_runs(self.ws.db, [run_id], full=False))

    def _model(self, label: str) -> str | None:
        from tether.mlflow import registry

        return registry.model_named(self.ws, label)

    def _held(self, label: str) -> dict[int, tuple[str, ...]] | None:
        """The versions (with their aliases) tether holds of MLflow's model ``label``."""
        from tether.registry import models as tether_registry

        name = self._model(label)
        if name is None:
            return None
        return {v.version: v.aliases for v in tether_registry.versions(self.ws, name)}

    def _registered(self, model: SourceModel) -> None:
        from tether.mlflow import registry
        from tether.mlflow.request import MlflowError
        from tether.registry import models as tether_registry

        name = self._model(model.name)
        if name is None:
            body = {"name": model.name, "description": model.description,
                    "tags": [{"key": k, "value": v} for k, v in model.tags.items()]}  # fmt: skip
            registry.create_registered_model(self.ws, body)
            name = self._model(model.name)
            assert name is not None
            self.added.models += 1
        have = self._held(model.name) or {}
        for version in model.versions:
            if version.version in have:
                continue
            try:
                self._version(name, model.name, version)
            except (TetherError, MlflowError) as e:
                self.skipped.append(f"model {model.name} version {version.version}: {e.message}")
        now = self._held(model.name) or {}
        for alias, number in sorted(model.aliases.items()):
            if number not in now:
                self.skipped.append(f"model {model.name}: alias {alias} (its version "
                                    f"{number} did not come over)")  # fmt: skip
                continue
            if alias in now[number]:
                continue
            tether_registry.set_alias(self.ws, name, alias, str(number), reason="MLflow import")
            self.added.aliases += 1

    def _version(self, name: str, label: str, version: SourceVersion) -> None:
        from tether.hashing import Digest
        from tether.modelkit.pack import pack_stored
        from tether.oci.reference import Reference
        from tether.registry import models as tether_registry
        from tether.repositories import models as models_repo

        where = version.storage_location or version.source
        stored = self._store_tree(where, f"model {label} version {version.version}")
        if not stored:
            raise UsageError(f"no files at {where[:120]}", hint=None)
        folder = "model"
        if version.source.startswith("models:/m-"):
            found = logged_repo.get(self.ws.db, version.source.removeprefix("models:/"))
            folder = found.name if found is not None else folder
        elif "/" in version.source.rstrip("/"):
            folder = version.source.rstrip("/").rsplit("/", 1)[-1] or folder
        files = [StoredFile(p, Digest.parse(d), s) for p, d, s in stored]
        run = None
        if version.run_id and self._has_run(version.run_id):
            run = runs_repo.load_runs(self.ws.db, [version.run_id])[0]
        packed = pack_stored(self.ws, name, folder, files, run=run)
        entry = self.ws.index.resolve(Reference(None, digest=packed.digest))
        made = tether_registry.register_kit(self.ws, name, entry, tether_registry.KitSource(
            version.source, run.id if run else None, version.description,
            number=version.version, created=version.created, user=version.user,
        ))  # fmt: skip
        if version.tags:
            with self.ws.db.atomic() as conn:
                for key, value in version.tags.items():
                    models_repo.set_tag(conn, name, made.version.version, key, value)
        self.added.versions += 1
