"""The Ray executor of a fleet (``tether reproduce --executor ray``): each reproduction
is a Ray task; Ray schedules them, tether does not.

A task's ``runtime_env`` carries the recorded environment: with ``--env recreate`` the
recorded package versions (uv installs them on the worker, cached by Ray per
environment); the job sets the recorded variables and seed on the command. A run that
had GPUs asks Ray for as many. The task runs ``remote_job.run_job``: it fetches the inputs by digest
(from this project's store when the worker sees its folder, else from its data
remotes) and returns the new run, which is recorded here and verified here, so the
verdicts and the ``reproduces`` links land in this project's database (or, synced
from it, on the team server).

Ray is optional (``pip install 'tether-ml[ray]'``) and imported only here.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import ReproError, UsageError
from tether.hashing import Digest
from tether.reporting import SILENT, Reporter
from tether.repro.fleet import FleetOptions, Outcome, failed_outcome, label_of, outcome_of
from tether.repro.plan import Plan, Problem, reproduction_env
from tether.repro.remote_job import Job, JobResult, pack_code, run_job
from tether.repro.reproduce import Execution, _is_python, conclude
from tether.workspace import Workspace


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(
            "the Ray executor needs Ray, which is not installed",
            hint="pip install 'tether-ml[ray]', or use --executor local",
        ) from None
    return ray


@dataclass
class Cluster:
    ray: Any
    address: str | None

    def problems(self, plan: Plan) -> Sequence[Problem]:
        """What this executor cannot do that a local reproduction could."""
        found = []
        recorded = plan.environment.python.version if plan.environment else ""
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if plan.env_mode == "recreate" and recorded and not (recorded + ".").startswith(here + "."):
            # Ray runs every worker on the driver's Python; a runtime_env changes
            # packages, not the interpreter.
            found.append(
                Problem(
                    f"the run recorded Python {recorded}; Ray's workers run Python {here}",
                    "reproduce it with --executor local --env recreate, or from a driver "
                    f"and cluster on Python {'.'.join(recorded.split('.')[:2])}",
                )
            )
        if plan.withheld_args:
            found.append(
                Problem(
                    "the run was given secret values on its command line",
                    "reproduce it with --executor local: tether does not send secrets to a cluster",
                )
            )
        return found

    def execute(
        self, ws: Workspace, plans: Sequence[Plan], options: FleetOptions
    ) -> Iterator[tuple[str, Outcome]]:
        ray = self.ray
        task = ray.remote(run_job)
        running: dict[Any, tuple[Plan, float]] = {}
        todo = list(plans)
        limit = options.jobs if options.jobs > 0 else len(plans)
        try:
            while todo or running:
                while todo and len(running) < limit:
                    plan = todo.pop(0)
                    started = time.time()
                    try:
                        job = job_of(ws, plan)
                        ref = task.options(
                            name=f"tether-reproduce-{label_of(plan.run)}",
                            runtime_env=runtime_env(plan),
                            num_cpus=1,
                            num_gpus=gpus(plan),
                            max_retries=0,
                        ).remote(job)
                    except Exception as e:  # one job that cannot be sent stops no other
                        yield plan.run.id, failed_outcome(plan, e, time.time() - started)
                        continue
                    running[ref] = (plan, started)
                if not running:
                    continue
                done, _ = ray.wait(list(running), num_returns=1)
                plan, started = running.pop(done[0])
                yield plan.run.id, self._finish(ws, plan, done[0], options, started)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)

    def _finish(
        self, ws: Workspace, plan: Plan, ref: Any, options: FleetOptions, started: float
    ) -> Outcome:
        try:
            result: JobResult = self.ray.get(ref)
            run_id = record(ws, result)
            execution = Execution(
                run_id,
                None,
                None,
                None,
                (*plan.warnings, f"ran on Ray: {result.node} ({result.interpreter})"),
                measure_drift=True,
            )
            reproduction = conclude(ws, plan, execution, options.reproduce, started)
        except Exception as e:  # the task's failure is its run's outcome, not the fleet's
            return failed_outcome(plan, _cause(e), time.time() - started)
        return outcome_of(label_of(plan.run), reproduction)


def _cause(error: BaseException) -> BaseException:
    """A task's own error (a TetherError with its hint) rather than Ray's wrapper."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def connect(address: str | None, *, report: Reporter = SILENT) -> Cluster:
    """Join the cluster at ``address`` (``ray://HOST:PORT`` or ``HOST:PORT``); without
    one, ``RAY_ADDRESS`` or a Ray started on this machine for this command."""
    ray = _ray()
    if not ray.is_initialized():
        report.note(
            f"connecting to Ray at {address or os.environ.get('RAY_ADDRESS') or 'a local instance'}"
        )
        try:
            ray.init(
                address=address,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
                **({} if address else {"include_dashboard": False}),
            )
        except Exception as e:  # Ray raises many kinds for an address it cannot reach
            raise UsageError(
                f"cannot connect to Ray at {address or 'a local instance'}: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                hint="check --address (ray://HOST:10001 or HOST:6379) and that the head runs",
            ) from None
    return Cluster(ray, address)


def runtime_env(plan: Plan) -> dict[str, Any]:
    """The recorded packages as Ray installs them on a worker (``--env recreate``).
    The recorded variables and the seed are not part of it: the job sets them on the
    command itself, and a runtime_env that differs per run would cost each task a new
    worker process (about a second) where runs of one environment can share one."""
    env: dict[str, Any] = {}
    if plan.env_mode == "recreate" and plan.spec is not None:
        requirements = list(plan.spec.install or plan.spec.requirements)
        if requirements:
            env["uv"] = {"packages": requirements}
    return env


def gpus(plan: Plan) -> int:
    gpu = plan.environment.gpu if plan.environment is not None else None
    return len(gpu.devices) if gpu is not None else 0


def job_of(ws: Workspace, plan: Plan) -> Job:
    """The plan as a job a worker can run without this project: the code rebuilt here
    and packed, the inputs named by digest."""
    from tether.data.remote import list_remotes
    from tether.redaction import restore_command
    from tether.repro.materialize import BY_DIGEST, materialize

    from_server = [i.digest for i in plan.inputs if i.source == "server"]
    if from_server:  # a worker has no session with the team server: fetch them here
        from tether.team.client import fetch_from_server

        fetch_from_server(ws, from_server)
    with tempfile.TemporaryDirectory(prefix="tether-job-") as tmp:
        workdir = Path(tmp)
        project = materialize(ws, plan, workdir, by_digest=False)
        archive = pack_code(workdir)
        inside = os.path.relpath(project, workdir)
    argv = restore_command(plan.command, plan.withheld_args, os.environ)
    return Job(
        original=plan.run.id,
        label=label_of(plan.run),
        archive=archive,
        project=inside,
        argv=tuple(argv),
        python=_is_python(argv[0]),
        cwd=plan.cwd,
        seed=plan.seed,
        env=reproduction_env(plan, os.environ),
        metric_files=tuple(plan.run.capture.metric_files),
        autolog=plan.run.capture.autolog,
        inputs=tuple((i.path, i.digest) for i in plan.inputs if i.source in BY_DIGEST),
        stores=(str(ws.store.root),),
        remotes=tuple((r.name, r.url, r.endpoint_url) for r in list_remotes(ws)),
    )


def record(ws: Workspace, result: JobResult) -> str:
    """Keep the blobs a worker sent back (each checked against its digest) and record
    its run in this project's database; returns the run's id."""
    from tether.team.sync import RunUpload, receive

    for digest, data in result.blobs.items():
        expected = Digest.parse(digest)
        if not ws.store.has(expected) and ws.store.put_bytes(data) != expected:
            raise ReproError(
                f"a worker sent blob {digest[:19]} whose bytes do not match it",
                hint="the transfer was damaged; run the reproduction again",
            )
    upload = RunUpload.from_json(result.upload)
    receive(ws, upload, None)
    return upload.run.id
