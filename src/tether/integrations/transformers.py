"""Hugging Face Transformers: a ``TrainerCallback`` that writes into a tether run, and
autologging that adds it to every ``Trainer.train``.

``TetherCallback`` records, on rank zero only:

- params: the ``TrainingArguments`` (tokens already masked by ``to_dict``), and the
  model's config under ``model.`` (``model.hidden_size``);
- every value the trainer logs (``loss``, ``learning_rate``, ``grad_norm``, ``eval_*``,
  the final ``train_runtime``…) at its global step;
- each checkpoint's folder as the tag ``transformers.last_checkpoint``, and the best
  one's as ``transformers.best_checkpoint``. The checkpoint files themselves are the
  run's outputs: the run sees them written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers.trainer import Trainer
from transformers.trainer_callback import TrainerCallback

from tether.integrations import guarded, recording


def _params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out = {f"{prefix}{key}": str(value) for key, value in values.items()}
    return {key: value for key, value in out.items() if len(value) <= 1000}


class TetherCallback(TrainerCallback):  # type: ignore[misc,unused-ignore]
    """``Trainer(callbacks=[TetherCallback()])``: the training logged into a tether run
    (``run``, or the run active when the training starts)."""

    def __init__(self, run: Any = None) -> None:
        self._run = run

    def _target(self, state: Any) -> Any:
        if not state.is_world_process_zero:
            return None
        from tether.runs.api import active_run

        return self._run if self._run is not None else active_run()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self._target(state)
        if run is None:
            return
        params = _params(args.to_dict())
        config = getattr(kwargs.get("model"), "config", None)
        if config is not None and hasattr(config, "to_dict"):
            params.update(_params(config.to_dict(), "model."))
        guarded("transformers params", lambda: run.log_params(params))

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        run = self._target(state)
        if run is None or not logs:
            return
        values = {}
        for key, value in logs.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[key] = float(value)
        step = state.global_step
        guarded("transformers metrics", lambda: run.log_metrics(values, step=step))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self._target(state)
        if run is None:
            return
        tags = {"transformers.last_checkpoint": str(
            Path(args.output_dir) / f"checkpoint-{state.global_step}"
        )}  # fmt: skip
        if state.best_model_checkpoint:
            tags["transformers.best_checkpoint"] = str(state.best_model_checkpoint)
        guarded("transformers checkpoints", lambda: run.set_tags(tags))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self._target(state)
        if run is not None:
            guarded("transformers metrics", run.flush)


_original_train: Callable[..., Any] | None = None


def enable(record: Callable[[Callable[[Any], None], str], None]) -> None:
    """Every ``Trainer.train`` logs through a ``TetherCallback`` (unless the trainer has
    one), into the active run or one made for the training."""
    global _original_train
    if _original_train is not None:
        return
    _original_train = original = Trainer.train

    @functools.wraps(original)
    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        with recording("transformers") as run:
            callbacks = self.callback_handler.callbacks
            if run is None or any(isinstance(c, TetherCallback) for c in callbacks):
                return original(self, *args, **kwargs)
            callback = TetherCallback(run)
            self.add_callback(callback)
            try:
                return original(self, *args, **kwargs)
            finally:
                self.remove_callback(callback)

    setattr(Trainer, "train", train)  # noqa: B010 - the method, replaced


def disable() -> None:
    global _original_train
    if _original_train is not None:
        setattr(Trainer, "train", _original_train)  # noqa: B010
        _original_train = None
