"""``tether run -- CMD``: run a command and record everything about it.

Before the command starts: the code (commit, diff, untracked sources) and a ``running``
row, so a crash of tether itself still leaves a record that ``reap_stale`` closes.
While it runs: its output is streamed to the terminal and copied to a log (through a
pseudo-terminal when tether's own output is one, so progress bars and colours behave);
Python processes it starts load ``hook/sitecustomize.py`` and report the files they
open and the seeds they set. SIGTERM and SIGHUP are forwarded to the command; SIGINT
is forwarded only when the terminal did not already deliver it. After it ends: files
are hashed and outputs stored, the interpreter's environment is captured, and the run
is closed as finished, failed or killed — also when recording itself fails.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tether.errors import UsageError
from tether.redaction import Withholder, redact_command
from tether.reporting import SILENT, Reporter
from tether.repositories import runs as runs_repo
from tether.runs import record
from tether.runs.capture import (
    HOOK_DIR,
    AuditLog,
    changed_since,
    classify,
    parse_audit_log,
    record_files,
    relative_to_project,
    scan_start,
)
from tether.runs.code import capture_code, strip_credentials
from tether.workspace import Workspace

if TYPE_CHECKING:
    from tether.envcapture.environment import Environment

LOG_LIMIT = 256 << 20  # bytes of output kept; the terminal still sees everything
_DRAIN_AFTER_EXIT = 1.0  # seconds to keep reading after exit (grandchildren may hold pipes)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PYTHON_NAMES = ("python", "python3", "pypy", "pypy3")


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: record.RunStatus
    exit_code: int | None  # the command's, or 128+N when a signal ended it
    reason: str | None
    files: tuple[record.RunFile, ...]
    env_digest: str | None
    audit_active: bool
    seeds: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    duration: float


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise UsageError(
            f"seed {seed} is out of range",
            hint="use 0 to 4294967295 (PYTHONHASHSEED's range)",
        )


@dataclass(frozen=True)
class RunSpec:
    """What ``tether run`` is asked to run and how to record it."""

    argv: Sequence[str]
    name: str | None = None
    seed: int | None = None
    params: Mapping[str, object] = field(default_factory=dict)
    tags: Mapping[str, object] = field(default_factory=dict)
    outputs: Sequence[str | Path] = ()  # declared outputs, stored even if not seen
    store_inputs: bool = False
    cwd: str | Path | None = None  # default: the current directory
    env: Mapping[str, str | None] | None = None  # changes to the environment (None: unset)
    autoparams: bool = True  # record the parsed command line / Hydra config as params
    metrics: Sequence[str | Path] = ()  # the script's own metrics files, read after it ends
    autolog: bool | None = None  # True: on with no code; False: off; None: on with start_run


def run_command(
    ws: Workspace,
    spec: RunSpec,
    *,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    report: Reporter = SILENT,
) -> RunResult:
    """Run ``spec.argv`` as a recorded run; output goes to ``stdout``/``stderr`` (default:
    this process's) and into the run's log."""
    argv = list(spec.argv)
    name, seed, outputs, cwd, env = spec.name, spec.seed, spec.outputs, spec.cwd, spec.env
    store_inputs = spec.store_inputs
    if not argv:
        raise UsageError("no command to run", hint="tether run [OPTIONS] -- CMD [ARGS...]")
    check_seed(seed)
    record.check_name(name)
    params = dict(spec.params)
    tags = dict(spec.tags)
    for key, value in params.items():
        record.check_key("param", key)
        record.value_text(value)
    for key, value in tags.items():
        record.check_key("tag", key)
        record.value_text(value)
    run_cwd = Path(cwd or os.getcwd()).resolve()
    search_path = (env or {}).get("PATH") or os.environ.get("PATH")
    if shutil.which(argv[0], path=search_path) is None and not (run_cwd / argv[0]).is_file():
        raise UsageError(
            f"command not found: {argv[0]}",
            hint="check the spelling and PATH; put tether's options before '--'",
        )
    out = stdout if stdout is not None else sys.stdout.buffer
    err = stderr if stderr is not None else sys.stderr.buffer

    started = time.time()
    code = capture_code(ws.store, ws.root, runs_repo.output_paths(ws.db))
    # The command runs as given; what is stored has secret flag values withheld.
    shown = redact_command(argv, Withholder.for_project(ws.dot))
    extra = shown.capture
    # SOURCE_DATE_EPOCH: the caller's (or the reproduction's) value, else the run's start,
    # recorded so that a reproduction embeds the same dates.
    epoch = (env or {}).get("SOURCE_DATE_EPOCH", os.environ.get("SOURCE_DATE_EPOCH"))
    if epoch is None and "SOURCE_DATE_EPOCH" not in (env or {}):
        epoch = str(int(started)) if ws.settings.run_source_date_epoch else None
    if epoch is not None:
        extra["source_date_epoch"] = epoch
    if spec.autolog is not None:
        extra["autolog"] = spec.autolog  # a reproduction logs as the run did
    run_id = runs_repo.create_run(
        ws.db,
        record.NewRun(
            name=name,
            command=shown.argv,
            capture=extra or None,
            cwd=relative_to_project(run_cwd, ws.root),
            host=socket.gethostname(),
            user=ws.user,
            pid=os.getpid(),
            seed=seed,
            code=code,
            started=started,
        ),
    )
    work = ws.dot / "tmp" / f"run-{run_id}"
    from tether.team.client import stream_for

    stream = stream_for(ws, run_id)  # the run's status, live on a connected server

    def finish(
        status: record.RunStatus,
        *,
        exit_code: int | None = None,
        reason: str | None = None,
        ended: float | None = None,
    ) -> None:
        ended = time.time() if ended is None else ended
        runs_repo.finish_run(ws.db, run_id, status, exit_code=exit_code, reason=reason, ended=ended)
        if stream is not None:
            from tether.team.sync import StreamEnd

            stream.finish(StreamEnd(status, exit_code, reason, ended))
            stream.close()

    try:
        runs_repo.add_blobs(ws.db, run_id, code.blobs)
        if params:
            runs_repo.log_params(ws.db, run_id, params)
        if tags:
            runs_repo.set_tags(ws.db, run_id, tags)
        work.mkdir(parents=True)
        child_env = _child_env(ws, run_id, seed, work / "audit.log", tty=_isatty(out), base=env)
        if not spec.autoparams:
            child_env["TETHER_AUTOPARAMS"] = "0"
        if spec.autolog is not None:
            child_env["TETHER_AUTOLOG"] = "1" if spec.autolog else "0"
        if epoch is not None:
            child_env["SOURCE_DATE_EPOCH"] = epoch
        # Work that does not depend on the command's outcome overlaps with it.
        pool = ThreadPoolExecutor(max_workers=2)
        prefetch = _Prefetch(ws, argv, child_env, run_cwd, pool)
        scan_since = scan_start()
        try:
            returncode, received = _supervise(
                argv, child_env, run_cwd, work / "output.log", out, err
            )
        finally:
            pool.shutdown(wait=False)
    except BaseException as exc:
        finish("failed", reason=f"tether could not run it: {exc}")
        shutil.rmtree(work, ignore_errors=True)
        raise
    ended = time.time()
    status, exit_code, reason = _verdict(returncode, received)
    try:
        result = _record_after(
            ws, run_id, argv, run_cwd, work, outputs, store_inputs, report, prefetch, scan_since
        )
    except BaseException as exc:
        finish(
            status if status != "finished" else "failed",
            exit_code=exit_code,
            reason=reason or f"recording failed: {exc}",
            ended=ended,
        )
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    files, env_digest, audit, warnings = result
    if spec.metrics:
        warnings = [*warnings, *_metric_files(ws, run_id, run_cwd, spec.metrics, ended)]
    finish(status, exit_code=exit_code, reason=reason, ended=ended)
    return RunResult(
        run_id,
        status,
        exit_code,
        reason,
        tuple(files),
        env_digest,
        audit.active,
        tuple(audit.seeds),
        tuple(warnings),
        ended - started,
    )


def _isatty(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _child_env(
    ws: Workspace,
    run_id: str,
    seed: int | None,
    audit_log: Path,
    *,
    tty: bool,
    base: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """The command's environment: ours, with ``base`` applied (a None value unsets a
    variable), plus the hook's plumbing."""
    env = with_changes(os.environ, base or {})
    previous = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(HOOK_DIR) + (os.pathsep + previous if previous else "")
    env["TETHER_PREVIOUS_PYTHONPATH"] = previous or ""
    env["TETHER_AUDIT_LOG"] = str(audit_log)
    # ws.root may be a rebuilt copy of the project (reproduce); the database is in ws.dot.
    env["TETHER_AUDIT_IGNORE"] = os.pathsep.join(sorted({str(ws.dot), str(ws.root / ".tether")}))
    env["TETHER_RUN_ID"] = run_id
    env["TETHER_PROJECT"] = str(ws.dot.parent)
    if seed is not None:
        env["PYTHONHASHSEED"] = str(seed)
        env["TETHER_SEED"] = str(seed)
    if not tty:
        # Through a pipe Python would buffer its output in blocks; the user watching the
        # terminal expects lines as they come, as without tether.
        env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def with_changes(env: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """A copy of ``env`` with ``changes`` applied; a None value unsets the variable."""
    out = dict(env)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _user_env(env: Mapping[str, str]) -> dict[str, str]:
    """The child's environment as the user set it, without tether's plumbing."""
    clean = {k: v for k, v in env.items() if not k.startswith("TETHER_AUDIT")}
    previous = clean.pop("TETHER_PREVIOUS_PYTHONPATH", "")
    clean.pop("PYTHONPATH", None)
    if previous:
        clean["PYTHONPATH"] = previous
    return clean


def _verdict(returncode: int, received: list[int]) -> tuple[record.RunStatus, int, str | None]:
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        reason = "interrupted (Ctrl-C)" if -returncode == signal.SIGINT else f"killed by {sig}"
        return "killed", 128 - returncode, reason
    if received:
        names = ", ".join(sorted({signal.Signals(s).name for s in received}))
        return "killed", returncode, f"stopped by {names} (command exited with {returncode})"
    if returncode != 0:
        return "failed", returncode, f"exit status {returncode}"
    return "finished", 0, None


def _terminal_delivers_sigint() -> bool:
    # Ctrl-C goes to the terminal's whole foreground process group, the command included;
    # forwarding it again would interrupt the command's own clean-up.
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def _supervise(
    argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, out: BinaryIO, err: BinaryIO
) -> tuple[int, list[int]]:
    received: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc is None or (signum == signal.SIGINT and _terminal_delivers_sigint()):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in _FORWARDED} if in_main else {}
    try:
        with open(log_path, "wb") as log:
            if _isatty(out) and hasattr(os, "openpty"):
                master, slave = os.openpty()
                _copy_window_size(out, slave)
                try:
                    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=slave, stderr=slave)
                finally:
                    os.close(slave)
                streams = {master: out}
            else:
                proc = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
                assert proc.stdout is not None and proc.stderr is not None
                streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
            try:
                _pump(streams, proc, log)
            finally:
                if proc.stdout is not None and proc.stderr is not None:
                    proc.stdout.close()
                    proc.stderr.close()
                else:
                    for fd in streams:
                        with contextlib.suppress(OSError):
                            os.close(fd)
            while True:
                try:
                    return proc.wait(), received
                except KeyboardInterrupt:  # a handler we do not own raised; keep waiting
                    continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _copy_window_size(out: BinaryIO, slave: int) -> None:
    with contextlib.suppress(Exception):
        import fcntl
        import termios

        size = fcntl.ioctl(out.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, size)


def _pump(streams: dict[int, BinaryIO], proc: subprocess.Popen[bytes], log: BinaryIO) -> None:
    sel = selectors.DefaultSelector()
    for fd, dest in streams.items():
        sel.register(fd, selectors.EVENT_READ, dest)
    logged = 0
    exited_at: float | None = None
    while sel.get_map():
        for key, _ in sel.select(0.2):
            try:
                data = os.read(key.fd, 1 << 16)
            except OSError:  # EIO: the pty's other side is closed
                data = b""
            if not data:
                sel.unregister(key.fd)
                continue
            with contextlib.suppress(OSError, ValueError):  # a closed pipe must not stop us
                key.data.write(data)
                key.data.flush()
            if logged < LOG_LIMIT:
                log.write(data[: LOG_LIMIT - logged])
                logged += len(data)
                if logged >= LOG_LIMIT:
                    log.write(b"\n[tether: output beyond 256 MiB not kept]\n")
        if proc.poll() is not None:
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > _DRAIN_AFTER_EXIT:
                break
    sel.close()


def _interpreter(audit: AuditLog, argv: list[str], env: Mapping[str, str]) -> tuple[str, str]:
    """The interpreter whose packages describe the run: the first Python process seen,
    else the command itself when it is a Python, else tether's own."""
    if audit.processes:
        return audit.processes[0].executable, "observed"
    name = os.path.basename(argv[0])
    if name.startswith(PYTHON_NAMES):
        found = shutil.which(argv[0], path=env.get("PATH"))
        if found:
            return found, "command"
    return sys.executable, "tether"


class _Prefetch:
    """Parse the Kitfile and probe the interpreter the command will most likely use
    while the command runs; the probe is reused only if that guess was right."""

    def __init__(
        self,
        ws: Workspace,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        pool: ThreadPoolExecutor,
    ) -> None:
        from tether.envcapture.environment import capture

        self.ws = ws
        self.cwd = cwd
        self.env = _user_env(env)
        self.kitfile = pool.submit(_kitfile_inputs, ws.root)
        self.guess: str | None = None
        self.probe: Future[Environment] | None = None
        if os.path.basename(argv[0]).startswith(PYTHON_NAMES):
            self.guess = shutil.which(argv[0], path=self.env.get("PATH"))
        if self.guess:
            self.probe = pool.submit(capture, self.guess, ws.root, env=self.env, cwd=cwd)

    def environment(self, executable: str) -> Environment:
        from tether.envcapture.environment import capture

        if self.probe is not None and self.guess and _same_file(self.guess, executable):
            return self.probe.result()
        return capture(executable, self.ws.root, env=self.env, cwd=self.cwd)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _kitfile_inputs(root: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """The Kitfile's dataset paths. Read as plain YAML, not validated as a Kitfile: only
    the paths matter here, and the schema's import costs more than a short run."""
    from tether.manifest import KITFILE_NAMES
    from tether.manifest.yamlsafe import YamlProblem, load

    path = next((root / n for n in KITFILE_NAMES if (root / n).is_file()), None)
    if path is None:
        return [], []
    try:
        doc = load(path.read_bytes(), typed=lambda _path: False).value
    except (YamlProblem, OSError) as exc:
        return [], [f"Kitfile datasets not recorded: {exc}"]
    datasets = doc.get("datasets") if isinstance(doc, dict) else None
    found = []
    for ds in datasets if isinstance(datasets, list) else ():
        rel = ds.get("path") if isinstance(ds, dict) else None
        if isinstance(rel, str) and rel and not Path(rel).is_absolute():
            candidate = (root / rel).resolve()
            if candidate.is_relative_to(root):
                found.append((candidate, "kitfile"))
    return found, []


def _metric_files(
    ws: Workspace, run_id: str, cwd: Path, paths: Sequence[str | Path], ended: float
) -> list[str]:
    """Read the metrics files the script wrote (``runs/metric_files.py``) into the run;
    a series the script also logged through tether keeps the script's points. Recorded
    in the run's capture, so a reproduction reads the same files. Returns warnings."""
    from tether.errors import RunError
    from tether.repositories import metrics as metrics_repo
    from tether.runs.metric_files import read_metrics

    (run,) = runs_repo.load_runs(ws.db, [run_id], full=False)
    warnings = []
    points: list[tuple[str, int, float, float]] = []
    for given in paths:
        try:
            found = read_metrics(cwd / given, ended)
        except RunError as e:
            warnings.append(f"metrics not read: {e.message}")
            continue
        kept = [p for p in found if p[0] not in run.metrics]
        for key in sorted({p[0] for p in found} - {p[0] for p in kept}):
            warnings.append(f"{given}: {key} was also logged by the script; its points kept")
        for key in {p[0] for p in kept}:
            try:
                record.check_key("metric", key)
            except UsageError:
                warnings.append(f"{given}: {key[:80]!r} is not a metric name; skipped")
                kept = [p for p in kept if p[0] != key]
        points += kept
    if points:
        metrics_repo.insert_metrics(ws.db, run_id, points)
    runs_repo.merge_capture(ws.db, run_id, {"metric_files": [str(p) for p in paths]})
    return warnings


def _autoparams(ws: Workspace, run_id: str, audit: AuditLog) -> list[str]:
    """The params the script parsed (argparse, click, Hydra), added to the run's own:
    a key the run already has (``-p``, ``start_run(params=…)``) keeps its value, and
    secrets are withheld as the command line's are. Tagged ``tether.autoparams`` with
    where they came from. Returns warnings."""
    from tether.redaction import MASK, is_secret_name, redact_text

    if not audit.params:
        return []
    (run,) = runs_repo.load_runs(ws.db, [run_id], full=False)
    found: dict[str, str] = {}
    sources: set[str] = set()
    skipped = []
    for key, (value, source) in audit.params.items():
        if key in run.params:
            continue
        shown = MASK if is_secret_name(key.rsplit(".", 1)[-1]) else redact_text(value)
        try:
            record.check_key("param", key)
            record.value_text(shown)
        except UsageError:
            skipped.append(key)
            continue
        found[key] = shown
        sources.add(source)
    if found:
        runs_repo.log_params(ws.db, run_id, found)
        runs_repo.set_tags(ws.db, run_id, {"tether.autoparams": ",".join(sorted(sources))})
    if skipped:
        return [f"{len(skipped)} parsed parameter(s) not recorded (name or value tether "
                f"cannot hold), e.g. {skipped[0][:80]}"]  # fmt: skip
    return []


def _record_after(
    ws: Workspace,
    run_id: str,
    argv: list[str],
    cwd: Path,
    work: Path,
    outputs: Sequence[str | Path],
    store_inputs: bool,
    report: Reporter,
    prefetch: _Prefetch,
    scan_since: int,
) -> tuple[list[record.RunFile], str | None, AuditLog, list[str]]:
    from tether.envcapture.environment import EnvironmentCaptureError

    warnings: list[str] = []
    audit = parse_audit_log(work / "audit.log")
    declared_inputs, kit_warnings = prefetch.kitfile.result()
    warnings += kit_warnings
    sets = classify(
        audit,
        declared_outputs=[cwd / o for o in outputs],
        declared_inputs=declared_inputs,
        exclude=[*ws.own_paths, ws.root / ".tether"],
        project_root=ws.root,
        scanned=changed_since(ws.root, scan_since),
    )
    files = record_files(
        ws.store, ws.root, sets, store_inputs=store_inputs, on_progress=report.note
    )
    runs_repo.add_files(ws.db, run_id, files)
    warnings += _autoparams(ws, run_id, audit)

    log_digest, _ = ws.store.add_file(work / "output.log")
    runs_repo.add_blobs(ws.db, run_id, [(str(log_digest), "log")])

    executable, source = _interpreter(audit, argv, prefetch.env)
    env_digest = None
    imported: list[str] | None = None
    try:
        environment = prefetch.environment(executable)
    except EnvironmentCaptureError as exc:
        warnings.append(f"environment not captured: {exc.message}")
    else:
        env_digest = environment.digest
        runs_repo.save_environment(ws.db, env_digest, environment.canonical)
        if audit.active and environment.modules:
            imported = environment.distributions_of(audit.imports)
        lock_blobs = []
        for rel in environment.lock_files:
            path = Path(rel) if Path(rel).is_absolute() else ws.root / rel
            with contextlib.suppress(OSError):
                lock_blobs.append((str(ws.store.add_file(path)[0]), "lock-file"))
        runs_repo.add_blobs(ws.db, run_id, lock_blobs)
    if not audit.active:
        warnings.append(
            "no Python process reported the files it opened (not a Python command, or "
            "python -I/-E ignores PYTHONPATH); declare outputs with -o"
        )
    runs_repo.set_env_and_log(ws.db, run_id, env_digest, str(log_digest))
    runs_repo.merge_capture(
        ws.db,
        run_id,
        {
            "interpreter": {"path": executable, "source": source},
            "audit": {
                "active": audit.active,
                "processes": len(audit.processes),
            },
            "seeding": [{"call": c, "seed": s} for c, s in audit.seeds],
            "urls": [strip_credentials(u) for u in list(audit.urls)[:200]],
            "imports": sorted(audit.imports),
            # What 'reproduce --env recreate --packages imported' installs.
            **({"imported_distributions": imported} if imported is not None else {}),
            "warnings": warnings,
        },
    )
    return files, env_digest, audit, warnings
