"""What autologging costs a training step: a Lightning fit of --steps tiny steps with no
logger, with tether's autolog (``tether run --autolog``), and with MLflow's autolog
(``mlflow.pytorch.autolog()``, MLflow 3.17.2 in its own venv), in one run.

    python benchmarks/autolog.py [--steps 10000] [--rounds 5]

The same script in every case: a 4→8→1 MLP, batch 16, ``self.log("loss", …)`` every step
and ``log_every_n_steps=1`` (every point is logged: the worst case for a logger), on one
torch thread (threads on a tiny MLP only add noise). Timed inside the process, around
``trainer.fit`` only.

Each process fits --rounds times without and --rounds times with autologging,
alternated (``tether.autolog(disable=…)``, ``mlflow.pytorch.autolog(disable=…)``): this
machine's speed drifts by ±5% from one process to the next, more than the cost measured,
so the end-to-end cost is the median of each round's on/off ratio within one process,
printed with its spread. The aim is judged on what can be measured this finely: the
time each step spends on its logging path, timed where it runs (``spent``): the whole
path (for tether, Lightning's own hand-off to any logger, then TetherLogger) and
tether's logger alone (MLflow's "alone" column is its ``_log_metrics``, inside its
path). tether's runs under ``tether run --autolog`` in tether's venv, MLflow's in its own
(both torch 2.13.0 CPU). Aim: tether's autolog costs at most 1% of the step time, and
less than MLflow's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import mlflow_python

SCRIPT = r"""
import json, os, sys, time
import lightning as L
import torch

mode, steps, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "mlflow":
    import mlflow
    mlflow.set_tracking_uri(os.environ["BENCH_MLFLOW_URI"])
if mode == "tether":
    import tether
torch.set_num_threads(1)  # a tiny MLP gains nothing from threads; they only add noise

# The logging path of each step, timed where it runs: for tether, Lightning handing the
# step's values to its loggers (their conversion to numbers, then TetherLogger), and
# TetherLogger alone; for MLflow, its callback's on_train_batch_end (it reads the values
# itself).
spent = {"path": 0.0, "own": 0.0}


def timing(cls, name, what):
    original = getattr(cls, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[what] += time.perf_counter() - start

    setattr(cls, name, timed)


if mode == "tether":
    from lightning.pytorch.trainer.connectors.logger_connector import logger_connector
    from tether.integrations.lightning import TetherLogger
    timing(logger_connector._LoggerConnector, "log_metrics", "path")
    timing(TetherLogger, "log_metrics", "own")
elif mode == "mlflow":
    from mlflow.pytorch import _lightning_autolog
    timing(getattr(_lightning_autolog, "__MlflowPLCallback"), "on_train_batch_end", "path")
    timing(getattr(_lightning_autolog, "__MlflowPLCallback"), "_log_metrics", "own")


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters({"lr": 0.01})
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                       torch.nn.Linear(8, 1))

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(logged):
    # Autologging is switched on and off around each fit, in the same process.
    if mode == "tether":
        tether.autolog(disable=not logged)
    elif mode == "mlflow":
        mlflow.pytorch.autolog(disable=not logged, log_every_n_step=1, log_models=False,
                               checkpoint=False)
    L.seed_everything(0)
    data = torch.utils.data.TensorDataset(torch.randn(1600, 4), torch.randn(1600, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", log_every_n_steps=1)
    model = Tiny()
    start = time.perf_counter()
    if mode == "mlflow" and logged:
        with mlflow.start_run():
            trainer.fit(model, loader)
    else:
        trainer.fit(model, loader)
    return time.perf_counter() - start


times = {"off": [], "on": [], "path": [], "own": []}
for i in range(rounds):  # alternated, each first in turn: drift hits both alike
    for logged in ((False, True) if i % 2 == 0 else (True, False)):
        spent.update(path=0.0, own=0.0)
        times["on" if logged else "off"].append(fit(logged))
        if logged:
            times["path"].append(spent["path"])
            times["own"].append(spent["own"])
print(json.dumps(times))
"""


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, list[float]]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{cmd[:4]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def overhead(times: dict[str, list[float]]) -> float:
    """The median of each round's on/off ratio, less one."""
    ratios = [on / off for on, off in zip(times["on"], times["off"], strict=True)]
    return statistics.median(ratios) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    peer = mlflow_python("torch==2.13.0:torch", "lightning>=2.2:lightning").absolute()
    work = Path(tempfile.mkdtemp(prefix="tether-bench-autolog-"))
    script = work / "fit.py"
    script.write_text(SCRIPT)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([sys.executable, "-m", "tether", "init"], cwd=work, check=True,
                   capture_output=True)  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONHASHSEED": "0",
           "BENCH_MLFLOW_URI": f"sqlite:///{work}/mlflow.db"}  # fmt: skip
    what = [str(args.steps), str(args.rounds)]
    ours = timed([sys.executable, "-m", "tether", "run", "--autolog", "--", sys.executable,
                  str(script), "tether", *what], work, env)  # fmt: skip
    theirs = timed([str(peer), str(script), "mlflow", *what], work, env)
    print(f"autolog benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; "
          f"Lightning fit of {args.steps:,} steps, every step logged; {args.rounds} rounds "
          "of one fit without and one with autologging, in one process, alternated")  # fmt: skip
    print(f"{'':44}{'off':>9}{'on':>9}{'on/off':>9}{'spread':>16}{'logging path':>16}"
          f"{'logger alone':>16}")  # fmt: skip
    print(f"{'':44}{'ms/step':>9}{'ms/step':>9}{'median':>9}{'of on/off':>16}"
          f"{'us/step':>9}{'share':>7}{'us/step':>9}{'share':>7}")  # fmt: skip
    shares = {}
    for name, times in (("tether run --autolog (tether's venv)", ours),
                        ("mlflow.pytorch.autolog() (MLflow's venv)", theirs)):  # fmt: skip
        off = statistics.median(times["off"]) / args.steps * 1000
        on = statistics.median(times["on"]) / args.steps * 1000
        ratios = [a / b - 1 for a, b in zip(times["on"], times["off"], strict=True)]
        path = statistics.median(times["path"]) / args.steps * 1e6
        own = statistics.median(times["own"]) / args.steps * 1e6
        shares[name] = (path / 1000 / off, own / 1000 / off)
        print(f"  {name:<42}{off:>9.3f}{on:>9.3f}{overhead(times) * 100:>+8.1f}%"
              f"{min(ratios) * 100:>+7.1f}..{max(ratios) * 100:+.1f}%"
              f"{path:>9.1f}{shares[name][0] * 100:>6.2f}%"
              f"{own:>9.1f}{shares[name][1] * 100:>6.2f}%")  # fmt: skip
    (path_ours, own_ours), (path_theirs, _) = shares.values()
    for what, mine in (("the whole logging path", path_ours), ("tether's logger alone", own_ours)):
        met = mine <= 0.01 and mine < path_theirs
        print(f"aim, {what}: <= 1% of a step and below MLflow's path ({path_theirs * 100:.2f}%):"
              f" {'met' if met else 'MISSED'} ({mine * 100:.2f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
