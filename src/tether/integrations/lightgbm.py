"""LightGBM autologging: each outermost ``lightgbm.train`` records what it means.

``LGBMClassifier.fit`` and the other scikit-learn wrappers call ``lightgbm.train`` too,
so one patch covers both APIs (the scikit-learn integration leaves LightGBM's wrappers to
this one). A training records:

- params: the booster's params and ``num_boost_round``;
- every validation set's metrics at every iteration, as ``DATA-METRIC``
  (``valid_0-l2``), step = iteration, from a callback added to the user's callbacks;
- ``best_iteration`` when early stopping chose one;
- the booster in LightGBM's own text format (``model.txt``, loadable with
  ``Booster(model_file=...)``) and the feature importances by gain
  (``feature_importance_gain.json``). Never a pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import lightgbm
import lightgbm.engine
import lightgbm.sklearn

from tether.integrations import guarded, training

_patched: training.Patched = []


class _Metrics:
    """A LightGBM callback: logs each iteration's evaluation results."""

    order = 100  # after LightGBM's own (early stopping is 30)
    before_iteration = False

    def __init__(self, run: Any) -> None:
        self._run = run

    def __call__(self, env: Any) -> None:
        values = {
            f"{result[0]}-{result[1]}": float(result[2])
            for result in env.evaluation_result_list or []
        }
        if values:
            step = env.iteration - env.begin_iteration
            guarded("lightgbm metrics", lambda: self._run.log_metrics(values, step=step))


def enable(record: Callable[[Callable[[Any], None], str], None]) -> None:
    """Wrap ``lightgbm.train`` wherever LightGBM refers to it."""
    if not _patched:
        how = training.Training("lightgbm", _params, _Metrics, _model)
        _patched.extend(
            training.patch(
                [lightgbm, lightgbm.engine, lightgbm.sklearn], lightgbm.engine.train, how
            )
        )


def disable() -> None:
    training.restore(_patched)


def _params(run: Any, given: dict[str, Any]) -> None:
    params = dict(given["params"] or {})
    values = {str(k): str(v) for k, v in params.items() if not callable(v)}
    values["num_boost_round"] = str(given["num_boost_round"])
    run.log_params({k: v for k, v in values.items() if len(v) <= 1000})


def _model(run: Any, booster: Any) -> None:
    if booster.best_iteration > 0:
        run.set_tags({"lightgbm.best_iteration": booster.best_iteration})
    run.log_text("model.txt", booster.model_to_string())
    names = booster.feature_name()
    gains = booster.feature_importance(importance_type="gain")
    importance = {name: float(gain) for name, gain in zip(names, gains, strict=True)}
    run.log_text("feature_importance_gain.json", json.dumps(importance, indent=1, sort_keys=True))
