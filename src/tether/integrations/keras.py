"""Keras (3, any backend): a callback that writes into a tether run, and autologging
that adds it to every ``Model.fit``.

A fit records:

- params: ``epochs``, ``batch_size`` (when given), ``steps_per_epoch``, the model's
  ``total_params``, and the optimizer's name and config under ``optimizer.``
  (``optimizer.learning_rate``);
- every value Keras reports at the end of an epoch (``loss``, ``accuracy``,
  ``val_loss``…) at step = epoch;
- the fitted model in Keras' own format (``model.keras``, which ``keras.saving.
  load_model`` reads in safe mode: no arbitrary code). Never a pickle.
"""

from __future__ import annotations

import functools
import inspect
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from tether.integrations import guarded, recording


class TetherCallback(keras.callbacks.Callback):  # type: ignore[misc,unused-ignore]
    """``model.fit(..., callbacks=[TetherCallback()])``: the fit logged into a tether run
    (``run``, or the run active when the fit starts)."""

    def __init__(self, run: Any = None, *, batch_size: int | None = None) -> None:
        super().__init__()
        self._run = run
        self._batch_size = batch_size

    def _target(self) -> Any:
        from tether.runs.api import active_run

        return self._run if self._run is not None else active_run()

    def on_train_begin(self, logs: Any = None) -> None:
        run = self._target()
        if run is not None:
            guarded("keras params", lambda: run.log_params(self._params()))

    def _params(self) -> dict[str, str]:
        given = self.params or {}
        params: dict[str, object] = {"epochs": given.get("epochs")}
        if given.get("steps") is not None:
            params["steps_per_epoch"] = given["steps"]
        if self._batch_size is not None:
            params["batch_size"] = self._batch_size
        params["total_params"] = self.model.count_params()
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            params["optimizer_name"] = type(optimizer).__name__
            for key, value in optimizer.get_config().items():
                if key != "name" and not isinstance(value, dict):
                    params[f"optimizer.{key}"] = value
        texts = {key: str(value) for key, value in params.items()}
        return {key: text for key, text in texts.items() if len(text) <= 1000}

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        run = self._target()
        if run is None or not logs:
            return
        values = {}
        for key, value in logs.items():
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                continue
        guarded("keras metrics", lambda: run.log_metrics(values, step=epoch))


def _save(run: Any, model: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="tether-keras-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        run.log_bytes("model.keras", path.read_bytes())


_original_fit: Callable[..., Any] | None = None


def enable(record: Callable[[Callable[[Any], None], str], None]) -> None:
    """Every ``Model.fit`` logs through a ``TetherCallback`` (unless given one), into the
    active run or one made for the fit, and saves the fitted model."""
    global _original_fit
    if _original_fit is not None:
        return
    _original_fit = original = keras.Model.fit
    signature = inspect.signature(original)

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        with recording("keras") as run:
            if run is None:
                return original(self, *args, **kwargs)
            call = signature.bind(self, *args, **kwargs)
            given = call.arguments
            callbacks = list(given.get("callbacks") or [])
            if not any(isinstance(c, TetherCallback) for c in callbacks):
                callbacks.append(TetherCallback(run, batch_size=given.get("batch_size")))
            given["callbacks"] = callbacks
            history = original(*call.args, **call.kwargs)
            guarded("the keras model", lambda: _save(run, self))
            return history

    setattr(keras.Model, "fit", fit)  # noqa: B010 - the method, replaced


def disable() -> None:
    global _original_fit
    if _original_fit is not None:
        setattr(keras.Model, "fit", _original_fit)  # noqa: B010
        _original_fit = None
