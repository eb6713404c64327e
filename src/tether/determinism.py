"""``seed_everything``: seed every random number generator a training script is likely
to use, optionally switch frameworks to deterministic algorithms, and say what was done.

Frameworks are imported only when already installed (``importlib.util.find_spec``),
never installed or required. The report is attached to the current run, so a reader
of the run knows the script seeded itself, with what, and what it could not seed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any

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

    random.seed(seed)
    seeded.append("random")
    # The running interpreter's hash seed is fixed at start; this covers subprocesses.
    os.environ["PYTHONHASHSEED"] = str(seed)
    settings.append(f"PYTHONHASHSEED={seed} (for child processes)")

    if _installed("numpy"):
        import numpy as np

        np.random.seed(seed)
        seeded.append("numpy.random (legacy global)")

    if _installed("torch"):
        try:
            torch: Any = importlib.import_module("torch")
            torch.manual_seed(seed)  # seeds CPU and every CUDA device
            seeded.append("torch")
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
        except Exception as exc:  # a broken install must not stop training
            skipped.append(f"torch: {type(exc).__name__}: {exc}")

    if _installed("tensorflow"):
        try:
            tf: Any = importlib.import_module("tensorflow")
            tf.random.set_seed(seed)
            seeded.append("tensorflow")
            if deterministic:
                tf.config.experimental.enable_op_determinism()
                settings.append("tf.config.experimental.enable_op_determinism()")
        except Exception as exc:
            skipped.append(f"tensorflow: {type(exc).__name__}: {exc}")

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
