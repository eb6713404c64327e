"""What tether's Lightning logger does, apart from the package it plugs into: Lightning
ships as ``lightning`` (``lightning.pytorch``) and as ``pytorch_lightning``, with the same
classes twice. Each package's integration module makes its ``TetherLogger`` from
``LoggerMethods`` and its own ``Logger``, and patches its own ``Trainer.fit``.

``TetherLogger`` records the hyperparameters Lightning reports (``save_hyperparameters``)
as params and every logged metric at its step. Under ``tether.autolog()`` each
``Trainer.fit`` also records ``max_epochs``, the optimizer's name and learning rate, and
the best checkpoint's path and score as tags; the checkpoint files themselves are the
run's outputs (``tether run`` sees them written). Only rank zero writes.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from tether.integrations import guarded, recording


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


class LoggerMethods:
    """The methods of ``TetherLogger``: logging into a tether run (``run``, or the run
    active when a value is logged). Mixed in before the package's ``Logger``."""

    rank_zero_only: ClassVar[Any]  # the package's rank_zero_only: its .rank is this rank

    def __init__(self, run: Any = None) -> None:
        super().__init__()
        self._run = run
        self._epoch: object = None

    def _target(self) -> Any:
        if self.rank_zero_only.rank:
            return None
        if self._run is not None:
            return self._run
        from tether.runs.api import active_run

        return active_run()

    @property
    def name(self) -> str:
        return "tether"

    @property
    def version(self) -> str:
        run = self._target()
        return run.id if run is not None else "none"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        run = self._target()
        if run is None:
            return
        if isinstance(params, argparse.Namespace):
            params = vars(params)
        run.log_params({k: v for k, v in _flat(dict(params)).items() if len(v) <= 1000})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # Every logged step comes here: the values go to the run as they are, and its
        # flusher thread, not the training, converts them.
        run = self._target()
        if run is None:
            return
        epoch = metrics.get("epoch")
        if epoch is not None:  # Lightning adds it to every step: kept where it changes
            if epoch == self._epoch:
                metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            self._epoch = epoch
        if step is None:
            run.log_metrics({k: v for k, v in metrics.items() if _number(v)})
        else:
            run.log_step(dict(metrics), step)  # a copy: other loggers get the same dict

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        run = self._target()
        path = getattr(checkpoint_callback, "best_model_path", "")
        if run is not None and path:
            tags = {"lightning.best_model_path": str(path)}
            score = getattr(checkpoint_callback, "best_model_score", None)
            if score is not None:
                tags["lightning.best_model_score"] = str(float(score))
            run.set_tags(tags)

    def finalize(self, status: str) -> None:
        run = self._target()
        if run is not None:
            run.flush()


class FitPatch:
    """Every ``Trainer.fit`` of one package logs through its ``TetherLogger`` (added when
    the trainer has none), into the active run or one made for the fit."""

    def __init__(self, trainer: type, logger: type, label: str) -> None:
        self._trainer = trainer
        self._logger = logger
        self._label = label
        self._original: Callable[..., Any] | None = None

    def enable(self) -> None:
        if self._original is not None:
            return
        self._original = original = self._trainer.fit  # type: ignore[attr-defined]
        logger, label = self._logger, self._label

        @functools.wraps(original)
        def fit(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            with recording(label) as run:
                if run is None:
                    return original(trainer, *args, **kwargs)
                if not any(isinstance(lg, logger) for lg in trainer.loggers):
                    trainer.loggers = [*trainer.loggers, logger(run)]
                result = original(trainer, *args, **kwargs)
                guarded(f"{label} params", lambda: run.log_params(_fit_params(trainer)))
                return result

        setattr(self._trainer, "fit", fit)  # noqa: B010 - the method, replaced

    def disable(self) -> None:
        if self._original is not None:
            setattr(self._trainer, "fit", self._original)  # noqa: B010
            self._original = None


def _fit_params(trainer: Any) -> dict[str, object]:
    params: dict[str, object] = {"max_epochs": trainer.max_epochs}
    if trainer.optimizers:
        optimizer = trainer.optimizers[0]
        params["optimizer_name"] = type(optimizer).__name__
        params["lr"] = optimizer.param_groups[0].get("lr")
    return params
