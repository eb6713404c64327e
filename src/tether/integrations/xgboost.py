"""XGBoost autologging: each outermost ``xgboost.train`` records what it means.

``XGBClassifier.fit`` and the other scikit-learn wrappers call ``xgboost.train`` too, so
one patch covers both APIs (the scikit-learn integration leaves XGBoost's wrappers to
this one). A training records:

- params: the booster's params and ``num_boost_round`` (and ``early_stopping_rounds``);
- every eval metric at every iteration, as ``DATA-METRIC`` (``validation_0-logloss``),
  step = iteration, from a ``TrainingCallback`` added to the user's callbacks;
- ``best_iteration`` and ``best_score`` when early stopping chose one;
- the booster in XGBoost's own binary format (``model.ubj``, loadable with
  ``Booster(model_file=...)``) and the feature importances by gain
  (``feature_importance_gain.json``). Never a pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import xgboost
import xgboost.sklearn
import xgboost.training
from xgboost.callback import TrainingCallback

from tether.integrations import guarded, training

_patched: training.Patched = []


class _Metrics(TrainingCallback):  # type: ignore[misc,unused-ignore]
    """Logs each iteration's eval metrics (the last value of each list)."""

    def __init__(self, run: Any) -> None:
        super().__init__()
        self._run = run

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        values: dict[str, float] = {}
        for data, metrics in evals_log.items():
            for metric, history in metrics.items():
                if history:
                    last = history[-1]  # (mean, std) under xgboost.cv
                    values[f"{data}-{metric}"] = float(last[0] if isinstance(last, tuple) else last)
        if values:
            guarded("xgboost metrics", lambda: self._run.log_metrics(values, step=epoch))
        return False  # never asks the training to stop


def enable(record: Callable[[Callable[[Any], None], str], None]) -> None:
    """Wrap ``xgboost.train`` wherever XGBoost refers to it."""
    if not _patched:
        how = training.Training("xgboost", _params, _Metrics, _model)
        _patched.extend(
            training.patch(
                [xgboost, xgboost.training, xgboost.sklearn], xgboost.training.train, how
            )
        )


def disable() -> None:
    training.restore(_patched)


def _params(run: Any, given: dict[str, Any]) -> None:
    values = {str(k): str(v) for k, v in dict(given["params"] or {}).items()}
    values["num_boost_round"] = str(given["num_boost_round"])
    if given["early_stopping_rounds"] is not None:
        values["early_stopping_rounds"] = str(given["early_stopping_rounds"])
    run.log_params({k: v for k, v in values.items() if len(v) <= 1000})


def _model(run: Any, booster: Any) -> None:
    best = booster.attributes()
    if "best_iteration" in best:
        run.set_tags({"xgboost.best_iteration": best["best_iteration"]})
        if "best_score" in best:
            run.log_metric("best_score", float(best["best_score"]), step=0)
    run.log_bytes("model.ubj", bytes(booster.save_raw(raw_format="ubj")))
    try:
        gain = booster.get_score(importance_type="gain")
    except Exception:  # a linear booster has no tree gains
        return
    run.log_text("feature_importance_gain.json", json.dumps(gain, indent=1, sort_keys=True))
