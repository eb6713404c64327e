"""The Python API of runs: ``tether.start_run()`` and the handle it returns.

Inside ``tether run`` (``TETHER_RUN_ID`` is set) the handle joins the wrapper's run and
leaves closing it to the wrapper. Alone, it creates a run, captures the code and the
running interpreter's environment, watches the files the process opens (an in-process
audit hook) and closes the run when the ``with`` block ends: finished, failed on an
exception, killed on KeyboardInterrupt or SIGTERM.

Metrics are buffered and written in batches (every ``BATCH`` points or
``FLUSH_SECONDS``), so logging costs the training loop about a microsecond per point;
buffers are flushed when the block ends, at interpreter exit and on SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from tether.errors import ParamConflict, RunNotFound, UsageError
from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.runs import record
from tether.runs.capture import AuditLog, classify, expand, record_files, relative_to_project
from tether.workspace import Workspace

if TYPE_CHECKING:
    from tether.runs.code import CodeState
    from tether.team.stream import RunStream

BATCH = 10_000
FLUSH_SECONDS = 2.0
# Points by series key: (steps, times, values), in the order they were logged.
Series = dict[str, tuple[list[int], list[float], list[float]]]

# The runs open in this context (a thread or an asyncio task that started its own),
# innermost last; and every run open in the process, for SIGTERM and for threads that
# log to a run another thread started (a data loader, a framework callback).
_context_runs: ContextVar[tuple[Run, ...]] = ContextVar("tether_runs", default=())
_process_runs: list[Run] = []


class _FileWatch:
    """One process-wide audit hook (hooks cannot be removed) feeding the runs that are
    open; it costs one list check per audited event when no run watches."""

    installed = False
    logs: ClassVar[list[tuple[AuditLog, tuple[str, ...]]]] = []

    @classmethod
    def start(cls, ignore: list[Path]) -> AuditLog:
        log = AuditLog()
        prefixes = {os.path.realpath(p) + os.sep for p in ignore}
        prefixes.update(
            os.path.realpath(p) + os.sep
            for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, "/proc", "/sys", "/dev")
        )
        cls.logs.append((log, tuple(sorted(prefixes))))
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True
        return log

    @classmethod
    def stop(cls, log: AuditLog) -> None:
        cls.logs[:] = [(lg, p) for lg, p in cls.logs if lg is not log]

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if not cls.logs or event not in ("open", "os.rename"):
            return
        try:
            if event == "open":
                path, mode, flags = args
                if isinstance(path, int):
                    return
                full = os.path.abspath(os.fsdecode(os.fspath(path)))
                if mode is None:
                    write = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND))
                else:
                    write = any(c in mode for c in "wax+")
                for log, prefixes in cls.logs:
                    if full.startswith(prefixes) or (not write and full.endswith((".py", ".pyc"))):
                        continue
                    (log.writes if write else log.reads)[full] = None
            else:
                src = os.path.abspath(os.fsdecode(os.fspath(args[0])))
                dst = os.path.abspath(os.fsdecode(os.fspath(args[1])))
                for log, _ in cls.logs:
                    log.writes.pop(src, None)
                    log.reads.pop(src, None)
                    log.writes[dst] = None
        except Exception:
            return


class Run:
    """An open run. Get one from ``tether.start_run()``."""

    def __init__(self, ws: Workspace, run_id: str, *, joined: bool, watch: AuditLog | None) -> None:
        self.workspace = ws
        self.id = run_id
        self.joined = joined
        self._watch = watch
        # Buffered points by series, in columns: the flusher writes them without
        # regrouping point by point (its time holds the GIL the training needs).
        self._buffer: Series = {}
        self._buffered = 0
        # Steps handed over as they are by an integration (log_step), checked and put
        # into columns by the flusher instead of by the training thread.
        self._steps_given: list[tuple[Mapping[str, object], int, float]] = []
        self._steps: dict[str, int] = {}
        self._keys: set[str] = set()
        self._lock = threading.Lock()  # the buffer
        # One writer of points at a time, in order; always taken before _lock.
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._last_flush = time.monotonic()
        self._ended = False
        self._store_inputs = False
        self._stream: RunStream | None = None
        ref = weakref.ref(self)

        def at_exit() -> None:
            run = ref()
            if run is not None:
                run._at_exit()

        atexit.register(at_exit)

    def __repr__(self) -> str:
        return f"<tether.Run {self.id}{' (joined)' if self.joined else ''}>"

    # -- params, tags ------------------------------------------------------------------

    def log_param(self, key: str, value: object) -> None:
        """Record a parameter; params are write-once (another value raises ParamConflict,
        except in a run started by ``tether run``: see ``log_params``)."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, object]) -> None:
        """Record parameters. Inside ``tether run`` a value that conflicts with one given
        on its command line (``-p``) never stops the training: it is reported on stderr
        and kept as the tag ``tether.param_conflict.KEY``; the first value stays."""
        if not self.joined:
            runs_repo.log_params(self.workspace.db, self.id, params)
            return
        conflicts: dict[str, str] = {}
        message = ""
        for key, value in params.items():
            try:
                runs_repo.log_params(self.workspace.db, self.id, {key: value})
            except ParamConflict as exc:
                message = exc.message
                conflicts[f"tether.param_conflict.{key}"] = record.value_text(value)[0]
        if not conflicts:
            return
        runs_repo.set_tags(self.workspace.db, self.id, conflicts)
        if len(conflicts) > 1:  # one line, not one per param (a second fit's whole set)
            names = [key.removeprefix("tether.param_conflict.") for key in conflicts]
            shown = ", ".join(repr(name) for name in names[:5])
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            message = (
                f"params {shown}{more} already have other values in this run; the new "
                "ones are kept as tether.param_conflict.* tags"
            )
        sys.stderr.write(f"tether: warning: {message}; the training goes on\n")

    def set_tag(self, key: str, value: object) -> None:
        runs_repo.set_tags(self.workspace.db, self.id, {key: value})

    def set_tags(self, tags: Mapping[str, object]) -> None:
        runs_repo.set_tags(self.workspace.db, self.id, tags)

    # -- metrics -----------------------------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        """Append a point to the series ``key``. ``step`` defaults to the key's previous
        step + 1 (0 first); ``timestamp`` to now."""
        self.log_metrics({key: value}, step=step, timestamp=timestamp)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: float | None = None
    ) -> None:
        """``log_metric`` for several series at one step and time, under one lock: the
        call a training step makes, so it costs a list append per value."""
        values = []
        for key, value in metrics.items():
            if key not in self._keys:
                record.check_key("metric", key)
                self._keys.add(key)
            try:
                values.append((key, float(value)))
            except (TypeError, ValueError):
                raise UsageError(
                    f"metric {key!r}: {value!r} is not a number",
                    hint="log numbers as metrics; log text as a tag or param",
                ) from None
        if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
            raise UsageError(
                f"metric {next(iter(metrics))!r}: step must be an integer, not {step!r}"
            )
        at = time.time() if timestamp is None else timestamp
        with self._lock:
            buffer = self._buffer
            for key, value in values:
                at_step = self._steps.get(key, -1) + 1 if step is None else step
                self._steps[key] = at_step
                columns = buffer.get(key)
                if columns is None:
                    columns = buffer[key] = ([], [], [])
                columns[0].append(at_step)
                columns[1].append(at)
                columns[2].append(value)
            self._buffered += len(values)
            if self._buffered >= BATCH or self._flusher is None:
                self._kick()

    def log_step(self, metrics: Mapping[str, object], step: int) -> None:
        """A training step's values, as a framework reports them (``{"loss": 0.31}``),
        taken as they are: the flusher converts them and leaves out what is not a number.
        For integrations, whose every step comes here; the dict must not change after."""
        at = time.time()
        with self._lock:
            self._steps_given.append((metrics, step, at))
            self._buffered += len(metrics)
            if self._buffered >= BATCH or self._flusher is None:
                self._kick()

    def flush(self) -> None:
        """Write buffered metrics now."""
        self._flush()

    def _kick(self) -> None:
        """Have the flusher write the buffer soon (started on the first point): the
        training thread never waits on the disk or the network, only on a list append."""
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"tether-run-{self.id[:12]}", daemon=True
            )
            self._flusher.start()
        self._wake.set()

    def _flush_loop(self) -> None:
        while not self._ended:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            if self._ended:
                return
            try:
                self._flush()
            except Exception as exc:  # the points stay buffered; end() writes or raises
                sys.stderr.write(f"tether: writing metrics failed, will retry: {exc}\n")

    def _flush(self) -> None:
        with self._write_lock:
            with self._lock:
                batch = self._take()
            try:
                self._write(batch)
            except BaseException:
                with self._lock:  # kept, in order, before what came since, for the next write
                    for key, (steps, ats, values) in self._buffer.items():
                        kept = batch.setdefault(key, ([], [], []))
                        kept[0].extend(steps)
                        kept[1].extend(ats)
                        kept[2].extend(values)
                    self._buffer = batch
                    self._buffered = sum(len(columns[0]) for columns in batch.values())
                raise

    def _flush_locked(self) -> None:
        """Write the buffer; the caller holds _write_lock and _lock."""
        self._write(self._take())

    def _take(self) -> Series:
        given, self._steps_given = self._steps_given, []
        for metrics, step, at in given:  # after the buffer's points: their steps are given
            for key, value in metrics.items():
                try:
                    number = float(value)  # type: ignore[arg-type]
                    if key not in self._keys:
                        self._keys.add(record.check_key("metric", key))
                except (TypeError, ValueError, UsageError):
                    continue  # a value that is no number, or a key no run can hold
                columns = self._buffer.get(key)
                if columns is None:
                    columns = self._buffer[key] = ([], [], [])
                columns[0].append(step)
                columns[1].append(at)
                columns[2].append(number)
                self._steps[key] = step
        batch, self._buffer, self._buffered = self._buffer, {}, 0
        self._last_flush = time.monotonic()
        return batch

    def _write(self, batch: Series) -> None:
        if batch:
            metrics_repo.insert_series(self.workspace.db, self.id, batch)
            if self._stream is not None:  # after the local write: never instead of it
                self._stream.offer([
                    (key, step, at, value)
                    for key, (steps, ats, values) in batch.items()
                    for step, at, value in zip(steps, ats, values, strict=True)
                ])  # fmt: skip

    # -- files -------------------------------------------------------------------------

    def log_artifact(self, path: str | os.PathLike[str]) -> list[record.RunFile]:
        """Store a file (or every file under a directory) as an artifact of this run."""
        files = self._files(path, "artifact", store=True)
        runs_repo.add_files(self.workspace.db, self.id, files)
        return files

    def log_bytes(self, name: str, data: bytes) -> record.RunFile:
        """Store ``data`` as the artifact ``name`` of this run (a relative path such as
        ``model.skops`` or ``plots/roc.png``); writing a name again replaces it."""
        path = record.artifact_path(name)
        if not path:
            raise UsageError("an artifact needs a name", hint="e.g. run.log_text('notes.md', ...)")
        digest = self.workspace.store.put_bytes(data)
        file = record.RunFile("artifact", path, str(digest), len(data), "api", True)
        runs_repo.add_files(self.workspace.db, self.id, [file])
        return file

    def log_text(self, name: str, text: str) -> record.RunFile:
        """``log_bytes`` for text (UTF-8)."""
        return self.log_bytes(name, text.encode())

    def log_input(
        self, path: str | os.PathLike[str], *, store: bool = False
    ) -> list[record.RunFile]:
        """Record a file (or a directory's files) the run used, by digest; ``store=True``
        also keeps a copy in the store."""
        files = self._files(path, "input", store=store)
        runs_repo.add_files(self.workspace.db, self.id, files)
        return files

    def _files(
        self, path: str | os.PathLike[str], role: record.FileRole, *, store: bool
    ) -> list[record.RunFile]:
        from tether.hashing import hash_file

        target = Path(path)
        found = expand(target.absolute())
        if not found:
            raise UsageError(
                f"{path}: no such file or directory", hint="log files that exist when you log them"
            )
        root = self.workspace.root
        out = []
        for p in found:
            if store:
                digest, size = self.workspace.store.add_file(p)
            else:
                digest, size = hash_file(p)
            out.append(
                record.RunFile(role, relative_to_project(p, root), str(digest), size, "api", store)
            )
        return out

    # -- ending ------------------------------------------------------------------------

    def end(self, status: record.RunStatus = "finished", *, reason: str | None = None) -> None:
        """Flush, record the files watched, and close the run (a joined run is closed
        by ``tether run``, so only flushed)."""
        if self._ended:
            return
        self._ended = True
        with contextlib.suppress(ValueError):
            _process_runs.remove(self)
        _context_runs.set(tuple(r for r in _context_runs.get() if r is not self))
        ws = self.workspace
        files: list[record.RunFile] = []
        if self._watch is not None:
            _FileWatch.stop(self._watch)
            sets = classify(self._watch, exclude=ws.own_paths)
            # Hashed and stored before the transaction: it holds the write lock briefly.
            files = record_files(ws.store, ws.root, sets, store_inputs=self._store_inputs)
        # The last metrics, the files and the end in one commit (one fsync per run). The
        # locks in the flusher's order, so they cannot deadlock; it stops on _ended.
        self._wake.set()
        with self._write_lock, self._lock, ws.db.atomic():
            self._flush_locked()
            if files:
                runs_repo.add_files(ws.db, self.id, files)
            if not self.joined:
                runs_repo.finish_run(ws.db, self.id, status, reason=reason)
        if self._stream is not None:
            from tether.team.sync import StreamEnd

            if not self.joined:  # a joined run's end is streamed by 'tether run'
                self._stream.finish(StreamEnd(status, None, reason, time.time()))
            self._stream.close()

    def _at_exit(self) -> None:
        if not self._ended:
            with contextlib.suppress(Exception):
                self.end("failed", reason="the process exited inside the run without ending it")

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("killed", reason="interrupted (KeyboardInterrupt)")
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            self.end("finished")
        else:
            self.end("failed", reason=f"{exc_type.__name__}: {str(exc)[:300]}")


def active_run() -> Run | None:
    """The innermost run open in this context (thread or task), else in this process."""
    for run in reversed(_context_runs.get()):
        if not run._ended:
            return run
    return _process_runs[-1] if _process_runs else None


def start_run(
    name: str | None = None,
    *,
    params: Mapping[str, object] | None = None,
    tags: Mapping[str, object] | None = None,
    seed: int | None = None,
    project: str | os.PathLike[str] | None = None,
    watch_files: bool = True,
    store_inputs: bool = False,
) -> Run:
    """Start a run, or join the one ``tether run`` started for this process.

    Use as a context manager::

        with tether.start_run(name="svd", params={"k": 50}) as run:
            run.log_metric("rmse", 0.87, step=epoch)
    """
    joined_id = os.environ.get("TETHER_RUN_ID")
    if joined_id and os.environ.get("TETHER_PROJECT"):
        ws = Workspace.open(os.environ["TETHER_PROJECT"])
        if not runs_repo.exists(ws.db, joined_id):
            raise RunNotFound(
                f"TETHER_RUN_ID={joined_id} names no run in {ws.root}",
                hint="unset TETHER_RUN_ID, or start the script with 'tether run'",
            )
        run = Run(ws, joined_id, joined=True, watch=None)
        if name:
            record.check_name(name)
            runs_repo.name_if_unnamed(ws.db, joined_id, name)
        run._store_inputs = store_inputs
        if params:
            run.log_params(params)
        if tags:
            run.set_tags(tags)
        if os.environ.get("TETHER_AUTOLOG") != "0":
            # A script under 'tether run' that opens its run gets autologging.
            from tether.integrations import autolog

            autolog()
    else:
        root = None if project is None else Path(project)
        run = _start_standalone(name, seed, root, watch_files, params or {}, tags or {})
        run._store_inputs = store_inputs
    from tether.team.client import stream_for

    run._stream = stream_for(run.workspace, run.id)
    _process_runs.append(run)
    _context_runs.set((*_context_runs.get(), run))
    _install_sigterm_flush()
    return run


@dataclass
class _ProjectState:
    """What one process shares across the runs it starts in one project: a sweep of
    thousands of runs opens the workspace and captures the code once (the code a process
    runs is what it imported when it began) and saves each environment record once."""

    ws: Workspace
    identity: tuple[int, int] | None  # the database file it opened (device, inode)
    code: CodeState | None = None
    saved_envs: set[str] = field(default_factory=set)

    @classmethod
    def for_start(cls, start: Path) -> _ProjectState:
        state = _PROJECTS.get(start)
        if state is None or state.identity != _identity(state.ws):
            # First run here, or the project was removed and made again: start afresh.
            ws = Workspace.open(start)
            ws.db  # noqa: B018 - opened now, so its file's identity is the one remembered
            state = _PROJECTS[start] = cls(ws, _identity(ws))
        return state


_PROJECTS: dict[Path, _ProjectState] = {}


def _identity(ws: Workspace) -> tuple[int, int] | None:
    """Which database file the workspace's path names now (device, inode)."""
    try:
        st = os.stat(ws.dot / "tether.db")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _start_standalone(
    name: str | None,
    seed: int | None,
    project: Path | None,
    watch: bool,
    params: Mapping[str, object],
    tags: Mapping[str, object],
) -> Run:
    from tether.envcapture.environment import capture_current
    from tether.redaction import Withholder, redact_command
    from tether.runs.code import capture_code
    from tether.runs.launch import check_seed

    check_seed(seed)
    state = _ProjectState.for_start(Path(project or os.getcwd()).resolve())
    ws = state.ws
    if state.code is None:
        state.code = capture_code(ws.store, ws.root, runs_repo.output_paths(ws.db))
    code = state.code
    environment = capture_current(ws.root)
    shown = redact_command([sys.executable, *sys.argv], Withholder.for_project(ws.dot))
    # One transaction (one fsync) for the run, its blobs, params and tags: a sweep pays
    # one commit to start a run, and bad params leave no run behind.
    with ws.db.atomic():
        if environment.digest not in state.saved_envs:
            runs_repo.save_environment(ws.db, environment.digest, environment.canonical)
        run_id = runs_repo.create_run(
            ws.db,
            record.NewRun(
                name=name,
                command=shown.argv,
                cwd=relative_to_project(os.getcwd(), ws.root),
                host=socket.gethostname(),
                user=ws.user,
                pid=os.getpid(),
                seed=seed,
                env_digest=environment.digest,
                code=code,
                capture={"interpreter": {"path": sys.executable, "source": "api"}, **shown.capture},
            ),
        )
        runs_repo.add_blobs(ws.db, run_id, code.blobs)
        if params:
            runs_repo.log_params(ws.db, run_id, params)
        if tags:
            runs_repo.set_tags(ws.db, run_id, tags)
    state.saved_envs.add(environment.digest)  # committed: known from now on
    log = _FileWatch.start([ws.dot]) if watch else None
    return Run(ws, run_id, joined=False, watch=log)


_sigterm_installed = False


def _install_sigterm_flush() -> None:
    """On SIGTERM, flush and close open runs, then die of SIGTERM as before. Only when
    nobody else handles SIGTERM, and only from the main thread (Python's rule)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        for run in reversed(list(_process_runs)):
            with contextlib.suppress(Exception):
                run.end("killed", reason="SIGTERM")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    _sigterm_installed = True


def note_on_active_run(key: str, value: Any) -> bool:
    """Attach a fact to the run this process logs to (used by ``seed_everything``)."""
    run = active_run()
    if run is not None:
        runs_repo.merge_capture(run.workspace.db, run.id, {key: value})
        return True
    joined_id = os.environ.get("TETHER_RUN_ID")
    project = os.environ.get("TETHER_PROJECT")
    if joined_id and project:
        ws = Workspace.open(project)
        try:
            runs_repo.merge_capture(ws.db, joined_id, {key: value})
        finally:
            ws.close()
        return True
    return False
