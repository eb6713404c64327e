"""The plan of a reproduction, decided before anything runs: which code (commit, diff,
snapshot), which inputs from where (the store, a remote, the project, the code itself),
which environment, seed, variables and command, and every reason it cannot work.

A plan with problems is refused as a whole, so a reproduction never starts half-able:
a blob that no store or remote has, a commit the repository lost, an interpreter this
machine lacks are all named, each with its fix, before a single file is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.envcapture.environment import Environment, relevant_env_vars
from tether.errors import ReproError
from tether.hashing import Digest, hash_file
from tether.redaction import WithheldArg
from tether.repositories.runs import load_environment
from tether.repro import venv
from tether.runs.code import CodeState, git_text
from tether.runs.record import RunRecord
from tether.store.objects import ContentStore
from tether.workspace import Workspace

ENV_MODES = ("current", "recreate")
PYTHON_NAMES = ("python", "python3", "pypy", "pypy3")


@dataclass(frozen=True)
class Problem:
    message: str
    hint: str


@dataclass(frozen=True)
class PlannedInput:
    path: str  # as recorded: project-relative, or absolute
    digest: str
    size: int | None
    source: str  # store | remote | server | project | code | absolute
    remote: str | None = None


@dataclass(frozen=True)
class Plan:
    run: RunRecord
    env_mode: str
    inputs: tuple[PlannedInput, ...]
    outputs: tuple[str, ...]  # project-relative outputs removed before the run
    seed: int | None
    env_vars: Mapping[str, str]  # the recorded result-changing variables
    command: tuple[str, ...]
    cwd: str
    environment: Environment | None
    spec: venv.EnvSpec | None  # recreate only
    interpreter: str | None  # recreate: the base interpreter for the venv
    git_top: Path | None  # the repository the code comes from (git runs)
    withheld_args: tuple[WithheldArg, ...] = ()  # secret values read from TETHER_SECRET_*
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def code(self) -> CodeState:
        return self.run.code

    def check(self) -> None:
        """Refuse a plan that cannot work, naming every problem."""
        if not self.problems:
            return
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        raise ReproError(
            f"cannot reproduce run {self.run.id[:12]}: {first.message}{more}",
            hint=first.hint,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run.id,
            "env_mode": self.env_mode,
            "code": self.code.to_json(),
            "inputs": [
                {
                    "path": i.path,
                    "digest": i.digest,
                    "size": i.size,
                    "source": i.source,
                    "remote": i.remote,
                }
                for i in self.inputs
            ],
            "outputs": list(self.outputs),
            "seed": self.seed,
            "env_vars": dict(self.env_vars),
            "command": list(self.command),
            "cwd": self.cwd,
            "environment": self.run.env_digest,
            "python": self.environment.python.version if self.environment else None,
            "recreate": self.spec.to_json() if self.spec else None,
            "problems": [{"message": p.message, "hint": p.hint} for p in self.problems],
            "warnings": list(self.warnings),
        }


PACKAGES = ("all", "imported")


def make_plan(
    ws: Workspace, run: RunRecord, env_mode: str = "current", packages: str = "all"
) -> Plan:
    if env_mode not in ENV_MODES or packages not in PACKAGES:
        from tether.errors import UsageError

        raise UsageError(
            f"unknown --env {env_mode!r} or --packages {packages!r}",
            hint="--env current|recreate, --packages all|imported",
        )
    problems: list[Problem] = []
    warnings: list[str] = []
    if run.status == "running":
        problems.append(
            Problem(f"run {run.id[:12]} is still running", "wait for it to end, then reproduce it")
        )
    if not run.command:
        problems.append(Problem("the run recorded no command", "it was started from Python"))
    withheld = tuple(WithheldArg.from_json(w) for w in run.capture.withheld_args)
    missing = sorted({w.env for w in withheld if w.env not in os.environ})
    if missing:
        problems.append(
            Problem(
                "the run was given secret values on its command line that tether did not store",
                f"set {', '.join(missing)} to the value(s) the run was given",
            )
        )
    git_top = _check_code(ws, run, problems, warnings)
    inputs = _plan_inputs(ws, run, git_top, problems, warnings)
    outputs = []
    for f in run.files:
        if f.role != "output":
            continue
        if Path(f.path).is_absolute():
            warnings.append(f"the run wrote {f.path} outside its project; the reproduction "
                            "writes there too")  # fmt: skip
        else:
            outputs.append(f.path)
    environment = load_environment(ws.db, run.env_digest)
    spec = interpreter = None
    if environment is None:
        msg = "the run has no recorded environment"
        if env_mode == "recreate":
            problems.append(Problem(msg, "reproduce it with --env current"))
        else:
            warnings.append(msg + "; drift cannot be shown")
    elif env_mode == "recreate":
        only = None
        if packages == "imported":
            only = run.capture.imported_distributions
            if only is None:
                problems.append(
                    Problem(
                        "the run did not record which distributions it imported",
                        "reproduce it with --packages all (recorded by tether run since "
                        "this version)",
                    )
                )
        spec, interpreter = _check_recreate(environment, ws.store, problems, warnings, only)
    env_vars = dict(environment.env_vars) if environment is not None else {}
    if run.seed is not None:
        env_vars.pop("PYTHONHASHSEED", None)  # set from the seed
        env_vars.pop("TETHER_SEED", None)
    return Plan(
        run=run,
        env_mode=env_mode,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        seed=run.seed,
        env_vars=env_vars,
        command=run.command,
        cwd=run.cwd,
        environment=environment,
        spec=spec,
        interpreter=interpreter,
        git_top=git_top,
        withheld_args=withheld,
        problems=tuple(problems),
        warnings=tuple(warnings),
    )


def _check_code(
    ws: Workspace, run: RunRecord, problems: list[Problem], warnings: list[str]
) -> Path | None:
    code = run.code
    kind = code.kind
    missing_blobs = [
        d
        for d in (code.diff_digest, code.snapshot_digest)
        if d and not ws.store.has(Digest.parse(d))
    ]
    if missing_blobs:
        problems.append(
            Problem(
                f"the recorded code ({missing_blobs[0][:19]}) is not in the store",
                "it was removed by hand or the run came from another clone; "
                "reproduce it where it was recorded",
            )
        )
    elif code.snapshot_digest:
        from tether.repro.materialize import snapshot_files

        absent = [
            p for p, d in snapshot_files(ws.store, code.snapshot_digest).items()
            if not ws.store.has(Digest.parse(d))
        ]  # fmt: skip
        if absent:
            problems.append(
                Problem(
                    f"{len(absent)} recorded source file(s) are not in the store, e.g. {absent[0]}",
                    "run 'tether fsck' to see what damaged the store",
                )
            )
    for rel in code.not_stored:
        warnings.append(
            f"{rel} was too big to snapshot; it is copied from the project as it is now"
        )
    if kind != "git":
        if not code.snapshot_digest:
            imported = run.tags.get("tether.imported") or (
                "mlflow" if "mlflow.experiment_id" in run.tags else None
            )
            why = (
                f"it was imported from {imported}, which keeps no code; record it again"
                " with 'tether run -- COMMAND'"
                if imported
                else "it was recorded before code capture existed"
            )
            problems.append(Problem("the run recorded no code", why))
        return None
    top_text = git_text(ws.root, "rev-parse", "--show-toplevel")
    if top_text is None:
        problems.append(
            Problem(
                "the run's code is in git, but the project is no longer a git repository",
                "restore the repository (.git) of the project",
            )
        )
        return None
    top = Path(top_text.strip())
    commit = code.commit
    if commit and git_text(top, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        problems.append(
            Problem(
                f"commit {commit[:12]} is not in the repository",
                f"fetch it (git fetch origin {commit}) or restore the branch that had it",
            )
        )
    return top


def _plan_inputs(
    ws: Workspace,
    run: RunRecord,
    git_top: Path | None,
    problems: list[Problem],
    warnings: list[str],
) -> list[PlannedInput]:
    planned: list[PlannedInput] = []
    pending: list[tuple[str, Digest, int | None]] = []
    for f in run.files:
        if f.role != "input" or not f.digest:
            continue
        digest = Digest.parse(f.digest)
        if Path(f.path).is_absolute():
            if _same_content(Path(f.path), digest):
                planned.append(PlannedInput(f.path, f.digest, f.size, "absolute"))
                warnings.append(f"{f.path} is read from an absolute path: used as it is now "
                                "(unchanged), not rebuilt")  # fmt: skip
            else:
                problems.append(
                    Problem(
                        f"input {f.path} is outside the project and has changed or gone",
                        "restore it, or keep data inside the project and 'tether add' it",
                    )
                )
        elif ws.store.has(digest):
            planned.append(PlannedInput(f.path, f.digest, f.size, "store"))
        elif _same_content(ws.root / f.path, digest):
            planned.append(PlannedInput(f.path, f.digest, f.size, "project"))
        else:
            pending.append((f.path, digest, f.size))
    if not pending:
        return planned
    from tether.data.transfer import locate

    where, unreachable = locate(ws, [d for _, d, _ in pending])
    on_server = _on_server(ws, [str(d) for _, d, _ in pending if d not in where], warnings)
    for path, digest, size in pending:
        if digest in where:
            planned.append(PlannedInput(path, str(digest), size, "remote", where[digest]))
        elif str(digest) in on_server:
            planned.append(PlannedInput(path, str(digest), size, "server"))
        elif _in_code(ws, run, git_top, path):
            planned.append(PlannedInput(path, str(digest), size, "code"))
        else:
            problems.append(
                Problem(
                    f"input {path} ({str(digest)[:19]}) is not in the store, on any remote, "
                    "on the team server, or in the project",
                    "version inputs with 'tether add' and 'tether data push' (or 'tether "
                    "sync'), or record runs with --store-inputs",
                )
            )
    warnings.extend(f"remote not searched: {msg}" for msg in unreachable)
    return sorted(planned, key=lambda i: i.path)


def _on_server(ws: Workspace, digests: list[str], warnings: list[str]) -> dict[str, int]:
    """Those of ``digests`` the connected team server holds (a teammate's sync sent a
    run's inputs there); nothing when this checkout is not connected."""
    from tether.errors import TetherError
    from tether.team import client

    if not digests or not client.connected(ws):
        return {}
    try:
        return client.held_by_server(ws, digests)
    except TetherError as e:
        warnings.append(f"team server not searched: {e.message}")
        return {}


def _same_content(path: Path, digest: Digest) -> bool:
    try:
        return path.is_file() and hash_file(path)[0] == digest
    except OSError:
        return False


def _in_code(ws: Workspace, run: RunRecord, git_top: Path | None, path: str) -> bool:
    """Whether the rebuilt code holds ``path`` (its content is checked once rebuilt)."""
    code = run.code
    in_repo = os.path.normpath(os.path.join(code.project_in_repo, path))
    if code.snapshot_digest:
        from tether.repro.materialize import snapshot_files

        key = in_repo if code.kind == "git" else path
        if key in snapshot_files(ws.store, code.snapshot_digest):
            return True
    if git_top is None or not code.commit:
        return False
    return git_text(git_top, "cat-file", "-e", f"{code.commit}:{in_repo}") is not None


def _check_recreate(
    environment: Environment,
    store: ContentStore,
    problems: list[Problem],
    warnings: list[str],
    only: Sequence[str] | None = None,
) -> tuple[venv.EnvSpec | None, str | None]:
    uv = venv.uv_binary()
    if uv is None:
        problems.append(Problem("uv is not installed", "pip install uv, or use --env current"))
        return None, None
    spec, notes = venv.with_lock(venv.spec_for(environment, only), environment, store, uv)
    warnings.extend(notes)
    for skipped in spec.skipped:
        warnings.append(f"not installed: {skipped}")
    interpreter = venv.find_python(spec, uv)
    if interpreter is None:
        version = spec.python_version or "(unknown)"
        problems.append(
            Problem(
                f"{spec.implementation} {version} is not available on this machine",
                f"install it (uv python install {version}, or pyenv install {version}), "
                "or use --env current",
            )
        )
    return spec, interpreter


def reproduction_env(plan: Plan, current: Mapping[str, str]) -> dict[str, str | None]:
    """Variable changes for the command: the recorded result-changing variables set,
    the ones the run did not have unset, and the run's ``SOURCE_DATE_EPOCH``."""
    changes: dict[str, str | None] = {k: None for k in relevant_env_vars(current)}
    changes.update(plan.env_vars)
    epoch = plan.run.capture.source_date_epoch
    if epoch is not None:
        changes["SOURCE_DATE_EPOCH"] = str(epoch)  # the dates the run embedded
    return changes
