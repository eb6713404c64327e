"""What autologging costs a training step: a Lightning fit of --steps tiny steps with no
logger, with tether's autolog (``tether run --autolog``), and with MLflow's autolog
(``mlflow.pytorch.autolog()``, MLflow 3.17.2 in its own venv), in one run.

    python benchmarks/autolog.py [--steps 10000] [--repeats 3]

The same script in every case: a 4→8→1 MLP, batch 16, ``self.log("loss", …)`` every step
and ``log_every_n_steps=1`` (every point is logged: the worst case for a logger).
Timed inside the process, around ``trainer.fit`` only; the median of --repeats,
interleaved. tether's autolog is measured against the same fit under ``tether run
--no-autolog`` (what recording a run costs otherwise is shown against bare python);
MLflow's against the bare fit in its own venv (both torch 2.13.0 CPU). Aim: tether's
autolog costs at most 1% of the step time, and less than MLflow's.
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

mode, steps = sys.argv[1], int(sys.argv[2])
if mode == "mlflow":
    import mlflow
    mlflow.set_tracking_uri(os.environ["BENCH_MLFLOW_URI"])
    mlflow.pytorch.autolog(log_every_n_step=1, log_models=False, checkpoint=False)
L.seed_everything(0)


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


data = torch.utils.data.TensorDataset(torch.randn(1600, 4), torch.randn(1600, 1))
loader = torch.utils.data.DataLoader(data, batch_size=16)
trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False,
                    accelerator="cpu", log_every_n_steps=1)
start = time.perf_counter()
if mode == "mlflow":
    with mlflow.start_run():
        trainer.fit(Tiny(), loader)
else:
    trainer.fit(Tiny(), loader)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{cmd[:4]} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
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
    steps = str(args.steps)
    run = [sys.executable, "-m", "tether", "run"]
    cases = {
        "bare python (tether's venv)": [sys.executable, str(script), "none", steps],
        "tether run --no-autolog": [*run, "--no-autolog", "--", sys.executable, str(script),
                                    "none", steps],
        "tether run --autolog": [*run, "--autolog", "--", sys.executable, str(script),
                                 "tether", steps],
        "bare python (MLflow's venv)": [str(peer), str(script), "none", steps],
        "mlflow.pytorch.autolog()": [str(peer), str(script), "mlflow", steps],
    }  # fmt: skip
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved: drift of the machine hits every case
        for name, cmd in cases.items():
            results[name].append(timed(cmd, work, env))
    median = {name: statistics.median(times) for name, times in results.items()}
    print(f"autolog benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; "
          f"Lightning fit of {args.steps:,} steps, every step logged, median of "
          f"{args.repeats}")  # fmt: skip
    print(f"{'':32}{'fit (s)':>10}{'per step (ms)':>15}{'overhead':>10}")
    pairs = {"tether run --no-autolog": "bare python (tether's venv)",
             "tether run --autolog": "tether run --no-autolog",
             "mlflow.pytorch.autolog()": "bare python (MLflow's venv)"}  # fmt: skip
    for name, seconds in median.items():
        base = pairs.get(name)
        over = f"{(seconds / median[base] - 1) * 100:+.1f}%" if base else ""
        print(f"  {name:<30}{seconds:>10.2f}{seconds / args.steps * 1000:>15.3f}{over:>10}")
    ours = median["tether run --autolog"] / median["tether run --no-autolog"] - 1
    theirs = median["mlflow.pytorch.autolog()"] / median["bare python (MLflow's venv)"] - 1
    print(
        f"aim: tether <= 1% and below MLflow's ({theirs * 100:+.1f}%): "
        f"{'met' if ours <= 0.01 and ours < theirs else 'MISSED'} ({ours * 100:+.1f}%)"
    )


if __name__ == "__main__":
    main()
