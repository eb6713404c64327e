"""scikit-learn autologging: each top-level ``fit`` records what it means.

Every estimator class's ``fit`` is wrapped (the classes stay the same objects, so
``isinstance`` and pickling keep working). The outermost ``fit`` of a thread records,
after it returns:

- params: ``get_params(deep=True)``, nested estimators by class name;
- metrics on the training data, when ``y`` was given: the estimator's own ``score``
  (``training_score``), and for a classifier accuracy, precision, recall and F1
  (weighted), for a regressor MSE, RMSE, MAE and R²;
- a search (``GridSearchCV``, ``RandomizedSearchCV``, …): ``best_<param>`` params,
  ``best_cv_score``, every candidate's mean test score as the series
  ``cv_mean_test_score`` (step = candidate), and the whole ``cv_results_`` table as the
  artifact ``cv_results.csv``;
- the fitted model, with skops when it is installed (``model.skops``, loadable without
  running arbitrary code). Never a pickle: without skops, a warning says so and the
  tag ``tether.model_class`` names the class.

Fits inside a fit (a search fitting its candidates, a pipeline its steps) are not
recorded again.
"""

from __future__ import annotations

import functools
import io
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from tether.integrations import guarded, outermost, owns

_state = threading.local()
_patched: dict[type, Callable[..., Any]] = {}
_hooked: dict[type, Any] = {}  # BaseEstimator → its own __init_subclass__ (None: inherited)
_record_to: Callable[[Callable[[Any], None], str], None] | None = None


def enable(record: Callable[[Callable[[Any], None], str], None]) -> None:
    """Wrap every estimator's ``fit``; ``record(write, label)`` runs ``write(run)`` on
    the run a fit belongs to (the active run, or one made for it). The classes imported
    so far are patched now and later ones as they are defined, so enabling never imports
    the rest of scikit-learn."""
    from sklearn.base import BaseEstimator

    global _record_to
    _record_to = record
    pending = [BaseEstimator]
    while pending:
        cls = pending.pop()
        _patch(cls)
        pending.extend(cls.__subclasses__())
    if BaseEstimator not in _hooked:
        original = BaseEstimator.__dict__.get("__init_subclass__")

        def init_subclass(cls: type, /, **kwargs: Any) -> None:
            if original is not None:
                original.__func__(cls, **kwargs)
            else:
                super(BaseEstimator, cls).__init_subclass__(**kwargs)
            _patch(cls)

        _hooked[BaseEstimator] = original
        setattr(BaseEstimator, "__init_subclass__", classmethod(init_subclass))  # noqa: B010


def _patch(cls: type) -> None:
    fit = cls.__dict__.get("fit")
    if fit is None or cls in _patched or not callable(fit) or _record_to is None:
        return
    if cls.__module__.startswith("tether.") or owns(cls.__module__):
        return
    _patched[cls] = fit
    setattr(cls, "fit", _wrap(fit, _record_to))  # noqa: B010 - the method, replaced


def disable() -> None:
    global _record_to
    for cls, fit in _patched.items():
        setattr(cls, "fit", fit)  # noqa: B010
    _patched.clear()
    _record_to = None  # classes defined from now on are left alone


def _wrap(fit: Callable[..., Any], record: Callable[[Callable[[Any], None], str], None]) -> Any:
    @functools.wraps(fit)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with outermost() as first:
            result = fit(self, *args, **kwargs)
            if first:  # still counted: the metrics' own fits are not the user's
                X = args[0] if args else kwargs.get("X")
                y = args[1] if len(args) > 1 else kwargs.get("y")
                name = type(self).__name__
                guarded(name, lambda: record(lambda run: _record(run, self, X, y), name))
        return result

    wrapper.__tether_autolog__ = True  # type: ignore[attr-defined]
    return wrapper


def _text(value: Any) -> str:
    if hasattr(value, "get_params"):
        return type(value).__name__
    return str(value)


def _record(run: Any, estimator: Any, X: Any, y: Any) -> None:
    params = {k: _text(v) for k, v in estimator.get_params(deep=True).items()}
    run.log_params({k: v for k, v in params.items() if len(v) <= 1000})
    kind = type(estimator)
    run.set_tags({"estimator_name": kind.__name__,
                  "estimator_class": f"{kind.__module__}.{kind.__name__}"})  # fmt: skip
    metrics: dict[str, float] = {}
    if hasattr(estimator, "cv_results_"):
        _search(run, estimator, metrics)
    if y is not None and hasattr(estimator, "score"):
        metrics.update(_training_metrics(estimator, X, y))
    if metrics:
        run.log_metrics(metrics, step=0)
    _save(run, estimator)


def _search(run: Any, search: Any, metrics: dict[str, float]) -> None:
    best = getattr(search, "best_params_", None) or {}
    run.log_params({f"best_{k}": _text(v) for k, v in best.items()})
    if getattr(search, "best_score_", None) is not None:
        metrics["best_cv_score"] = float(search.best_score_)
    results = search.cv_results_
    for i, score in enumerate(results.get("mean_test_score", [])):
        run.log_metric("cv_mean_test_score", float(score), step=i)
    columns = sorted(results)
    out = io.StringIO()
    out.write(",".join(columns) + "\n")
    for i in range(len(results[columns[0]]) if columns else 0):
        cells = [str(results[c][i]).replace(",", ";").replace("\n", " ") for c in columns]
        out.write(",".join(cells) + "\n")
    run.log_text("cv_results.csv", out.getvalue())


def _training_metrics(estimator: Any, X: Any, y: Any) -> dict[str, float]:
    from sklearn import metrics as m
    from sklearn.base import is_classifier, is_regressor

    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division and the like: a metric, not a stop
        try:
            out["training_score"] = float(estimator.score(X, y))
            if is_classifier(estimator):
                pred = estimator.predict(X)
                out["training_accuracy"] = float(m.accuracy_score(y, pred))
                for name, fn in (("precision", m.precision_score), ("recall", m.recall_score),
                                 ("f1", m.f1_score)):  # fmt: skip
                    out[f"training_{name}"] = float(fn(y, pred, average="weighted"))
            elif is_regressor(estimator):
                pred = estimator.predict(X)
                mse = float(m.mean_squared_error(y, pred))
                out["training_mse"] = mse
                out["training_rmse"] = mse**0.5
                out["training_mae"] = float(m.mean_absolute_error(y, pred))
                out["training_r2"] = float(m.r2_score(y, pred))
        except Exception:  # an estimator whose score needs more than (X, y): skip it
            pass
    return out


def _save(run: Any, estimator: Any) -> None:
    try:
        import skops.io
    except ImportError:
        run.set_tag("tether.model_class",
                    f"{type(estimator).__module__}.{type(estimator).__name__}")  # fmt: skip
        if not getattr(_state, "warned", False):
            _state.warned = True
            sys.stderr.write("tether: autolog does not save the fitted model: install skops"
                             " for a safe format (tether never pickles implicitly)\n")  # fmt: skip
        return
    run.log_bytes("model.skops", skops.io.dumps(estimator))
