"""``tether import dvc [PATH]``: a DVC project's tracked data and pipeline, brought over.

Every out of the ``.dvc`` files and ``dvc.lock`` is read from the DVC cache (else the
workspace copy, else the remote), checked against the md5 DVC recorded, stored by
sha256 and given a tether pointer; a folder becomes a tether tree. Nothing is written
for an out whose bytes do not match: the import of that path fails and says why. Each
stage of ``dvc.lock`` becomes a finished run (command, params, deps as inputs, outs as
outputs), so ``tether lineage`` shows what produced each path from day one.

The DVC project is only read: its ``.dvc`` files stay for the user to remove once the
pointers are committed. Importing again rewrites nothing that is unchanged and adds a
stage's run only once (its id comes from the stage's ``dvc.lock`` entry).
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tether.data import paths, pointer, tree
from tether.data.pointer import Pointer
from tether.dvc.project import DvcProject, ObjectStore, Out, Stage
from tether.errors import DataError, UsageError
from tether.hashing import Digest
from tether.reporting import SILENT, Reporter
from tether.repositories import runs as runs_repo
from tether.runs.record import FileRole, NewRun, RunFile
from tether.workspace import Workspace

PathStatus = Literal["added", "updated", "unchanged", "would import"]


@dataclass(frozen=True)
class DvcImportOptions:
    path: Path | None = None  # the DVC project; default: the tether project's root
    remote: str | None = None  # default: the DVC project's default remote
    dry_run: bool = False


@dataclass(frozen=True)
class ImportedPath:
    path: str
    type: Literal["file", "dir"]
    files: int
    size: int
    digest: str | None  # None in a dry run
    status: PathStatus


@dataclass(frozen=True)
class DvcImportReport:
    paths: list[ImportedPath]
    runs: list[str]  # stages imported as runs now
    verified_files: int  # files whose md5 was checked
    verified_bytes: int
    dry_run: bool
    failed: list[str] = field(default_factory=list)  # paths not imported, with why

    def to_json(self) -> dict[str, Any]:
        return {
            "paths": [p.__dict__ for p in self.paths],
            "runs": self.runs,
            "verified_files": self.verified_files,
            "verified_bytes": self.verified_bytes,
            "dry_run": self.dry_run,
            "failed": self.failed,
        }


def import_dvc(
    ws: Workspace, options: DvcImportOptions, report: Reporter = SILENT
) -> DvcImportReport:
    root = (options.path or ws.root).resolve()
    if not root.is_relative_to(ws.root.resolve()):
        raise UsageError(
            f"{root} is outside this tether project",
            hint="run it from the tether project that holds the DVC project",
        )
    project = DvcProject(root)
    prefix = root.relative_to(ws.root.resolve()).as_posix()
    run = _Import(ws, project, prefix, options, report)
    return run.run()


class _Import:
    def __init__(
        self,
        ws: Workspace,
        project: DvcProject,
        prefix: str,
        options: DvcImportOptions,
        report: Reporter,
    ) -> None:
        self.ws = ws
        self.project = project
        self.prefix = "" if prefix == "." else prefix + "/"
        self.options = options
        self.report = report
        self.objects = ObjectStore(project, project.remote(options.remote))
        self.files = 0
        self.bytes = 0
        self.failed: list[str] = []
        self.tracked: set[str] = set()
        self.members: dict[str, list[tree.FileRecord]] = {}  # a folder out's files

    def run(self) -> DvcImportReport:
        outs = list({o.path: o for o in self.project.outs()}.values())
        self.tracked = {o.path for o in outs}
        stages = self.project.stages()
        if self.options.dry_run:
            shown = [
                ImportedPath(
                    self.prefix + o.path,
                    "dir" if o.is_dir else "file",
                    0,
                    o.size or 0,
                    None,
                    "would import",
                )
                for o in outs
            ]
            return DvcImportReport(shown, [s.name for s in stages], 0, 0, True)
        self.report.start(sum(o.size or 0 for o in outs))
        done: dict[str, ImportedPath] = {}
        with (
            self.ws.lock("data", on_wait=self.report.waiting),
            self.ws.lock("gc", shared=True, on_wait=self.report.waiting),
        ):
            for out in outs:
                try:
                    done[out.path] = self._out(out)
                except DataError as e:
                    self.failed.append(f"{out.path}: {e.message}")
        runs = [s.name for s in stages if self._stage(s, done)]
        return DvcImportReport(
            list(done.values()), runs, self.files, self.bytes, False, self.failed
        )

    # -- data ---------------------------------------------------------------------------

    def _out(self, out: Out) -> ImportedPath:
        rel = self.prefix + out.path
        paths.check_addable(self.ws.root, rel)
        if out.is_dir:
            records = []
            for relpath, md5 in self.objects.listing(out.md5):
                digest, size = self._blob(
                    md5, False, f"{out.path}/{relpath}", self.project.root / out.path / relpath
                )
                records.append(tree.FileRecord(relpath, digest, size))
            root, size, count = tree.build(records, self.ws.store.put_bytes)
            made = Pointer(rel, "dir", root, size, count)
            self.members[out.path] = records
        else:
            digest, size = self._blob(out.md5, out.legacy, out.path, self.project.root / out.path)
            made = Pointer(rel, "file", digest, size, 1)
        previous = pointer.read_if_any(self.ws.root, made.pointer_path)
        if previous != made:
            pointer.write(self.ws.root, made, self.ws.dot / "tmp")
        paths.ensure_gitignored(self.ws.root, rel, self.ws.dot / "tmp")
        status: PathStatus = (
            "unchanged" if previous == made else "updated" if previous is not None else "added"
        )
        return ImportedPath(rel, made.type, made.files, made.size, str(made.digest), status)

    def _blob(self, md5: str, legacy: bool, label: str, workspace: Path) -> tuple[Digest, int]:
        """Store DVC's object ``md5`` by sha256, refused unless its bytes hash to ``md5``."""
        plain = hashlib.md5()
        unix = hashlib.md5() if legacy else None
        with self.objects.open(md5, workspace) as f, self.ws.store.writer() as w:
            while chunk := f.read(1 << 20):
                plain.update(chunk)
                if unix is not None:
                    unix.update(chunk.replace(b"\r\n", b"\n"))
                w.write(chunk)
                self.report.advance(len(chunk))
            if md5 not in (plain.hexdigest(), unix.hexdigest() if unix else None):
                raise DataError(  # leaving the writer with an error stores nothing
                    f"{label} does not match the md5 DVC recorded ({md5})",
                    hint="the DVC cache or remote holds damaged bytes; 'dvc fetch' it again",
                )
        assert w.digest is not None
        self.files += 1
        self.bytes += w.size
        return w.digest, w.size

    # -- pipeline -----------------------------------------------------------------------

    def _stage(self, stage: Stage, done: dict[str, ImportedPath]) -> bool:
        """Record ``stage`` as a finished run; False when it already was, or an out of it
        did not come over."""
        run_id = f"dvc{stage.lock_md5[:29]}"
        if runs_repo.load_runs(self.ws.db, [run_id], full=False):
            return False
        lost = [p for p in (*(o.path for o in stage.outs), *(d.path for d in stage.deps))
                if p in self.tracked and p not in done]  # fmt: skip
        if lost:
            self.failed.append(f"stage {stage.name}: not recorded ({lost[0]} did not come over)")
            return False
        files = [f for o in stage.outs for f in self._files("output", o.path, done)]
        for dep in stage.deps:
            if dep.path in done:
                files += self._files("input", dep.path, done)
            else:
                files.append(self._input(dep.path, dep.md5))
        try:
            command = shlex.split(stage.cmd)
        except ValueError:
            command = ["sh", "-c", stage.cmd]
        with self.ws.db.atomic(run=run_id):
            runs_repo.create_run(
                self.ws.db,
                NewRun(
                    name=stage.name,
                    command=command,
                    cwd=self.prefix.rstrip("/") or ".",
                    host="",
                    user=self.ws.user,
                    pid=0,
                    run_id=run_id,
                ),
            )
            runs_repo.log_params(self.ws.db, run_id, stage.params)
            runs_repo.set_tags(
                self.ws.db, run_id, {"dvc.stage": stage.name, "tether.imported": "dvc"}
            )
            runs_repo.add_files(self.ws.db, run_id, files)
            runs_repo.finish_run(self.ws.db, run_id, "finished")
        return True

    def _files(self, role: FileRole, path: str, done: dict[str, ImportedPath]) -> list[RunFile]:
        """A tracked path as a run's files: a folder file by file, as 'tether run' records
        what a command reads and writes (lineage follows files)."""
        rel = self.prefix + path
        if path in self.members:
            return [
                RunFile(role, f"{rel}/{r.path}", str(r.digest), r.size, "dvc", True)
                for r in self.members[path]
            ]
        return [RunFile(role, rel, done[path].digest, done[path].size, "dvc", True)]

    def _input(self, path: str, md5: str | None) -> RunFile:
        rel = self.prefix + path
        # A dep DVC does not track (code under git): its digest when the file on disk is
        # still what the stage read.
        full = self.project.root / path
        if md5 and full.is_file():
            data = full.read_bytes()
            if hashlib.md5(data).hexdigest() == md5:
                return RunFile("input", rel, str(Digest.of_bytes(data)), len(data), "dvc", False)
        return RunFile("input", rel, None, None, "dvc", False)
