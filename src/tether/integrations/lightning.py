"""PyTorch Lightning: a ``Logger`` that writes into a tether run, and autologging that
adds it to every ``Trainer.fit``.

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
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


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


class TetherLogger(Logger):
    """``Trainer(logger=TetherLogger())``: Lightning's logging into a tether run (``run``,
    or the run active when a value is logged)."""

    def __init__(self, run: Any = None) -> None:
        super().__init__()
        self._run = run
        self._epoch: object = None

    def _target(self) -> Any:
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

    @rank_zero_only
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
        if rank_zero_only.rank:  # type: ignore[attr-defined]
            return
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

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        run = self._target()
        path = getattr(checkpoint_callback, "best_model_path", "")
        if run is not None and path:
            tags = {"lightning.best_model_path": str(path)}
            score = getattr(checkpoint_callback, "best_model_score", None)
            if score is not None:
                tags["lightning.best_model_score"] = str(float(score))
            run.set_tags(tags)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        run = self._target()
        if run is not None:
            run.flush()


_original_fit: Callable[..., Any] | None = None


def enable(record: Callable[[Callable[[Any], None], str], None]) -> None:
    """Every ``Trainer.fit`` logs through a ``TetherLogger`` (added when the trainer has
    none), into the active run or one made for the fit."""
    global _original_fit
    from lightning.pytorch import Trainer

    if _original_fit is not None:
        return
    _original_fit = original = Trainer.fit

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        result: list[Any] = []

        def within(run: Any) -> None:
            if not any(isinstance(lg, TetherLogger) for lg in self.loggers):
                self.loggers = [*self.loggers, TetherLogger(run)]
            result.append(original(self, *args, **kwargs))
            params = {"max_epochs": self.max_epochs}
            if self.optimizers:
                optimizer = self.optimizers[0]
                params["optimizer_name"] = type(optimizer).__name__
                params["lr"] = optimizer.param_groups[0].get("lr")
            run.log_params(params)

        record(within, "lightning")
        return result[0] if result else None

    setattr(Trainer, "fit", fit)  # noqa: B010 - the method, replaced


def disable() -> None:
    global _original_fit
    from lightning.pytorch import Trainer

    if _original_fit is not None:
        setattr(Trainer, "fit", _original_fit)  # noqa: B010
        _original_fit = None
