"""``tether reproduce RUN``: plan, rebuild, re-run, verify.

1. **plan** (``plan.py``): everything needed is located, or the reproduction is refused
   with the reasons before anything is written;
2. **materialize** (``materialize.py``): code and inputs in an isolated folder;
3. **environment**: ``current`` shows the drift from the recorded environment and runs
   as things are; ``recreate`` builds (or reuses) a uv virtualenv of the recorded
   interpreter version and package versions (``venv.py``);
4. **run**: the recorded command, seed and result-changing variables, recorded as a
   new run of this project that ``reproduces`` the original;
5. **verify** (``verify.py``): outputs by digest, metrics within tolerances, a verdict.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tether.envcapture.diff import EnvDiff, diff_environments
from tether.errors import ReproError, UsageError
from tether.redaction import restore_command
from tether.reporting import SILENT, Reporter
from tether.repositories import runs as runs_repo
from tether.repro import venv
from tether.repro.materialize import materialize
from tether.repro.plan import PYTHON_NAMES, Plan, make_plan, reproduction_env
from tether.repro.verify import Tolerance, Verification, verify
from tether.workspace import Workspace

EXIT_NOT_REPRODUCED = 3


@dataclass(frozen=True)
class Options:
    env_mode: str = "current"
    workdir: Path | None = None  # kept when given
    keep: bool = False
    tolerances: tuple[Tolerance, ...] = ()
    exact: bool = False
    series: bool = False
    verify_outside: bool = False  # compare side effects (writes outside the project) too
    show_progress: bool = False  # --env recreate: uv's progress on stderr (a terminal)


@dataclass(frozen=True)
class Reproduction:
    plan: Plan
    verification: Verification
    run_id: str  # the new run
    workdir: Path | None  # where the rebuilt project is, when kept
    drift: EnvDiff | None  # the reproduction's environment against the recorded one
    env_cached: bool | None  # recreate: the virtualenv came from the cache
    warnings: tuple[str, ...]
    duration: float

    @property
    def verdict(self) -> str:
        return self.verification.verdict

    @property
    def exit_code(self) -> int:
        return 0 if self.verification.reproduced else EXIT_NOT_REPRODUCED

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "original": self.plan.run.id,
            "reproduction": self.run_id,
            "workdir": None if self.workdir is None else str(self.workdir),
            "env_cached": self.env_cached,
            "duration": self.duration,
            "drift": None
            if self.drift is None
            else [
                {"section": c.section, "name": c.name, "recorded": c.old, "now": c.new}
                for c in self.drift.changes
            ],
            "warnings": list(self.warnings),
            "plan": self.plan.to_json(),
            **self.verification.to_json(),
        }


def prepare(
    ws: Workspace,
    ref: str,
    env_mode: str = "current",
    *,
    packages: str = "all",
    report: Reporter = SILENT,
) -> Plan:
    """Load the run and plan its reproduction (problems are in the plan, not raised).
    ``packages``: with ``--env recreate``, ``all`` recorded distributions (fidelity) or
    only those the run ``imported`` and their dependencies."""
    run = runs_repo.load_run(ws.db, ref, on_ambiguous=report.warn)
    return make_plan(ws, run, env_mode, packages)


def reproduce(
    ws: Workspace,
    plan: Plan,
    options: Options = Options(),
    *,
    report: Reporter = SILENT,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
) -> Reproduction:
    plan.check()
    say = report.note
    started = time.time()
    warnings = list(plan.warnings)
    keep = options.keep or options.workdir is not None
    if options.workdir is not None and options.workdir.resolve().is_relative_to(ws.dot):
        raise UsageError(
            f"--workdir {options.workdir} is inside .tether/",
            hint="tether does not watch files there, so nothing would be recorded; "
            "choose a folder elsewhere",
        )
    workdir = _workdir(plan, options.workdir)
    try:
        changes = reproduction_env(plan, os.environ)
        argv = restore_command(plan.command, plan.withheld_args, os.environ)
        env_cached = None
        drift = None
        if plan.env_mode == "recreate":
            assert plan.spec is not None and plan.interpreter is not None
            uv = venv.uv_binary()
            if uv is None:
                raise ReproError("uv is not installed", hint="pip install uv")
            venv_dir, env_cached = venv.ensure_venv(
                plan.spec,
                interpreter=plan.interpreter,
                uv=uv,
                root=venv.cache_root(os.environ),
                report=report,
                show_progress=options.show_progress,
            )
            say(f"environment: {venv_dir}" + (" (cached)" if env_cached else " (built)"))
            warnings += _install_drift(plan.spec, venv.installed(uv, venv_dir))
            if _is_python(argv[0]):
                argv[0] = str(venv.venv_python(venv_dir))
            changes["VIRTUAL_ENV"] = str(venv_dir)
            changes["PATH"] = str(venv_dir / "bin") + os.pathsep + os.environ.get("PATH", "")
            # Isolation: nothing from the caller's interpreter may leak in.
            changes["PYTHONHOME"] = changes["PYTHONPATH"] = None
        else:
            argv[0] = _present_interpreter(ws, plan, argv[0])
            if plan.environment is not None:
                drift = _current_drift(ws, plan, argv[0], changes)
                if drift is not None:
                    say(_drift_line(drift))
        project = materialize(ws, plan, workdir, report=report)
        cwd = _run_cwd(project, plan.cwd)
        label = plan.run.name or plan.run.id[:12]
        say("running: " + " ".join(argv))
        from tether.runs.launch import RunSpec, run_command

        result = run_command(
            ws.rooted_at(project),
            RunSpec(
                argv,
                name=f"{label}.repro",
                seed=plan.seed,
                cwd=cwd,
                env=changes,
                metrics=plan.run.capture.metric_files,
                autolog=plan.run.capture.autolog,
            ),
            stdout=stdout,
            stderr=stderr,
            report=report,
        )
        execution = Execution(
            result.run_id,
            workdir if keep else None,
            drift,
            env_cached,
            tuple(warnings),
            measure_drift=plan.env_mode == "recreate",
        )
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return conclude(ws, plan, execution, options, started)


@dataclass(frozen=True)
class Execution:
    """What running a plan left, wherever it ran: the new run (already in this
    project's database) and what the executor learnt on the way."""

    run_id: str
    workdir: Path | None
    drift: EnvDiff | None
    env_cached: bool | None
    warnings: tuple[str, ...]
    # The environment was built for the run (recreated, or on another machine): its
    # drift is the new run's recorded environment against the original's.
    measure_drift: bool = False


def conclude(
    ws: Workspace, plan: Plan, execution: Execution, options: Options, started: float
) -> Reproduction:
    """Verify the new run against the original and record the verdict: the
    ``reproduces`` link, tags, and the capture's ``reproduction`` section."""
    new = runs_repo.load_run(ws.db, execution.run_id)
    drift = execution.drift
    if execution.measure_drift and plan.environment is not None:
        rebuilt = runs_repo.load_environment(ws.db, new.env_digest)
        if rebuilt is not None:
            drift = diff_environments(plan.environment, rebuilt)
    verification = verify(
        ws.db,
        plan.run,
        new,
        tolerances=options.tolerances,
        exact=options.exact,
        series=options.series,
        store=ws.store,
        outside=options.verify_outside,
    )
    detail = {
        "verdict": verification.verdict,
        "reason": verification.reason,
        "env_mode": plan.env_mode,
    }
    runs_repo.link_runs(ws.db, new.id, "reproduces", plan.run.id, detail)
    runs_repo.set_tags(
        ws.db,
        new.id,
        {"tether.reproduces": plan.run.id, "tether.verdict": verification.verdict},
    )
    runs_repo.merge_capture(ws.db, new.id, {"reproduction": {"of": plan.run.id, **detail}})
    return Reproduction(
        plan,
        verification,
        new.id,
        execution.workdir,
        drift,
        execution.env_cached,
        execution.warnings,
        time.time() - started,
    )


def _workdir(plan: Plan, given: Path | None) -> Path:
    if given is None:
        return Path(tempfile.mkdtemp(prefix=f"tether-reproduce-{plan.run.id[:12]}-"))
    given = given.resolve()
    if given.exists() and (not given.is_dir() or any(given.iterdir())):
        raise UsageError(
            f"--workdir {given} is not an empty folder",
            hint="name a new or empty folder; the rebuilt project is written there",
        )
    given.mkdir(parents=True, exist_ok=True)
    return given


def _run_cwd(project: Path, cwd: str) -> Path:
    if Path(cwd).is_absolute():
        return Path(cwd)  # the run started outside its project; so does the reproduction
    path = (project / cwd).resolve()
    if not path.is_relative_to(project.resolve()):
        raise ReproError(
            f"the recorded working folder {cwd!r} leaves the project",
            hint="the run record is damaged",
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_python(arg: str) -> bool:
    return os.path.basename(arg).startswith(PYTHON_NAMES)


def _present_interpreter(ws: Workspace, plan: Plan, arg: str) -> str:
    """A command started by a relative path to an interpreter (``.venv/bin/python``)
    means the project's interpreter, which is not part of the rebuilt code: use the
    project's own."""
    if os.sep not in arg or os.path.isabs(arg) or not _is_python(arg):
        return arg
    base = ws.root / plan.cwd if not os.path.isabs(plan.cwd) else Path(plan.cwd)
    candidate = base / arg
    return str(candidate) if candidate.exists() else arg


def _current_drift(
    ws: Workspace, plan: Plan, command: str, changes: dict[str, str | None]
) -> EnvDiff | None:
    """The present environment (the interpreter the command will find) against the
    recorded one, probed with the variables the reproduction will set."""
    import sys

    from tether.envcapture.environment import EnvironmentCaptureError, capture
    from tether.runs.launch import with_changes

    assert plan.environment is not None
    env = with_changes(os.environ, changes)
    if plan.seed is not None:
        env["PYTHONHASHSEED"] = env["TETHER_SEED"] = str(plan.seed)
    executable = sys.executable
    if _is_python(command):
        executable = shutil.which(command, path=env.get("PATH")) or executable
    try:
        now = capture(executable, ws.root, env=env)
    except EnvironmentCaptureError:
        return None
    return diff_environments(plan.environment, now)


def _drift_line(drift: EnvDiff) -> str:
    if drift.same:
        return "environment: the same as recorded"
    shown = [c for c in drift.changes if c.section in ("python", "packages", "env_vars")]
    parts = [f"{c.name} {c.old or '-'} -> {c.new or '-'}" for c in shown[:6]]
    more = len(drift.changes) - len(parts[:6])
    text = "; ".join(parts) if parts else "hardware or lock files"
    return f"environment drift (--env current): {text}" + (f" (+{more} more)" if more > 0 else "")


def _install_drift(spec: venv.EnvSpec, have: dict[str, str]) -> Sequence[str]:
    out = []
    for req in spec.requirements:
        name, _, version = req.partition("==")
        if have.get(name) != version:
            out.append(f"{name}: recorded {version}, installed {have.get(name) or 'nothing'}")
    return out
