"""``seed_everything``: seed every random number generator a training script is likely
to use, optionally switch frameworks to deterministic algorithms, and say what was done.

Frameworks are never installed, required or imported: one the script has not imported
yet is seeded right after its import. The report is attached to the current run, so a reader
of the run knows the script seeded itself, with what, and what it could not seed.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tether import imports

# Frameworks whose random generators draw from fresh entropy unless the script seeds
# them (by top-level module name), with how a script seeds each: what doctor and explain
# name when a run imported one and the hook saw no seeding call.
GENERATORS = {
    "numpy": "numpy's global generator (np.random.seed(N), or default_rng(N))",
    "sklearn": "scikit-learn estimators without random_state (random_state=N)",
    "torch": "torch's generator (torch.manual_seed(N))",
    "tensorflow": "TensorFlow's generator (tf.random.set_seed(N))",
    "keras": "Keras (keras.utils.set_random_seed(N))",
    "jax": "JAX keys (jax.random.PRNGKey(N))",
    "xgboost": "XGBoost (seed=N)",
    "lightgbm": "LightGBM (seed=N)",
    "catboost": "CatBoost (random_seed=N)",
}


@dataclass(frozen=True)
class SeedReport:
    seed: int
    deterministic: bool
    seeded: tuple[str, ...]  # generators seeded
    settings: tuple[str, ...] = ()  # determinism switches set
    skipped: tuple[str, ...] = ()  # frameworks present but not seeded, with why
    recorded: bool = field(default=False, compare=False)  # attached to a run

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("recorded")
        return data


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def seed_everything(seed: int, deterministic: bool = False) -> SeedReport:
    """Seed ``random``, ``PYTHONHASHSEED`` (for child processes), NumPy, PyTorch (CPU and
    CUDA), TensorFlow and JAX when installed. With ``deterministic=True`` also ask
    PyTorch and TensorFlow for deterministic kernels and set ``CUBLAS_WORKSPACE_CONFIG``.

    Returns what was set; inside a run it is recorded on the run."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2**32 - 1:
        from tether.errors import UsageError

        raise UsageError(f"seed {seed!r} is not an integer in 0..4294967295")
    seeded: list[str] = []
    settings: list[str] = []
    skipped: list[str] = []

    for name, seed_it in (("torch", _seed_torch), ("tensorflow", _seed_tensorflow)):
        if not _installed(name):
            continue
        if name not in sys.modules:
            # Seeded as soon as the script imports it: importing a framework the script
            # may never use would cost seconds (TensorFlow's import takes ~5).
            imports.after_import(name, functools.partial(_quietly, seed_it, seed, deterministic))
            seeded.append(f"{name} (when imported)")
            continue
        try:
            done, set_ = seed_it(sys.modules[name], seed, deterministic)
        except Exception as exc:  # a broken install must not stop training
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        seeded.extend(done)
        settings.extend(set_)

    # Last: importing a framework the first time can draw from these generators.
    random.seed(seed)
    seeded.append("random")
    # The running interpreter's hash seed is fixed at start; this covers subprocesses.
    os.environ["PYTHONHASHSEED"] = str(seed)
    settings.append(f"PYTHONHASHSEED={seed} (for child processes)")

    if _installed("numpy"):
        import numpy as np

        np.random.seed(seed)
        seeded.append("numpy.random (legacy global)")

    if _installed("jax"):
        # JAX has no global RNG: keys are explicit. Nothing to seed, but say so.
        skipped.append("jax: no global generator; create keys with jax.random.key(seed)")

    report = SeedReport(seed, deterministic, tuple(seeded), tuple(settings), tuple(skipped))
    from tether.runs.api import note_on_active_run

    try:
        recorded = note_on_active_run("seed_everything", report.to_json())
    except Exception:  # no project here: seeding still counts
        recorded = False
    return SeedReport(**{**asdict(report), "recorded": recorded})


Seeded = tuple[list[str], list[str]]  # generators seeded, settings set


def _seed_torch(torch: Any, seed: int, deterministic: bool) -> Seeded:
    seeded, settings = ["torch"], []
    torch.manual_seed(seed)  # seeds CPU and every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        seeded.append("torch.cuda")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        settings.append(f"CUBLAS_WORKSPACE_CONFIG={os.environ['CUBLAS_WORKSPACE_CONFIG']}")
        torch.use_deterministic_algorithms(True)
        settings.append("torch.use_deterministic_algorithms(True)")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        settings.append("torch.backends.cudnn.deterministic=True, benchmark=False")
    return seeded, settings


def _seed_tensorflow(tf: Any, seed: int, deterministic: bool) -> Seeded:
    tf.random.set_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
        return ["tensorflow"], ["tf.config.experimental.enable_op_determinism()"]
    return ["tensorflow"], []


def _quietly(
    seed_it: Callable[[Any, int, bool], Seeded], seed: int, deterministic: bool, module: Any
) -> None:
    try:
        seed_it(module, seed, deterministic)
    except Exception as exc:  # at import time, in the script: report, never stop it
        sys.stderr.write(f"tether: could not seed {module.__name__}: {exc}\n")
