"""The peer tools the benchmarks measure against, each in a virtualenv of its own under
bench-work/ (created on first use), so their dependencies never touch tether's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MLFLOW = "mlflow==3.17.2"
VENV = Path("bench-work") / "mlflow-venv"


def mlflow_python(*extra: str) -> Path:
    """The interpreter of the MLflow virtualenv, with MLflow and ``extra`` (pip
    requirement, import name) pairs given as "requirement:module"."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print("creating the MLflow virtualenv (once)…", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    modules = ["mlflow", *(e.split(":", 1)[1] for e in extra)]
    check = f"import {', '.join(modules)}"
    if subprocess.run([str(python), "-c", check], check=False).returncode:
        requirements = [MLFLOW, *(e.split(":", 1)[0] for e in extra)]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    return python
