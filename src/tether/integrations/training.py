"""Recording a framework's ``train`` function (XGBoost's, LightGBM's): the function is
replaced wherever the framework refers to it, and each outermost call logs its params,
gets a metrics callback added to the user's callbacks, and saves what it returns."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tether.integrations import guarded, recording


@dataclass(frozen=True)
class Training:
    """How one framework's ``train(params, data, num_boost_round, …, callbacks=…)`` is
    recorded: ``params(run, arguments)``, ``callback(run)`` and ``model(run, booster)``."""

    label: str
    params: Callable[[Any, dict[str, Any]], None]
    callback: Callable[[Any], Any]
    model: Callable[[Any, Any], None]


Patched = list[tuple[ModuleType, Callable[..., Any]]]


def patch(modules: Sequence[ModuleType], original: Callable[..., Any], how: Training) -> Patched:
    """Replace ``original`` by its recording wrapper in each module that names it ``train``."""
    wrapped = _wrap(original, how)
    patched: Patched = []
    for module in modules:
        if getattr(module, "train", None) is original:
            patched.append((module, original))
            setattr(module, "train", wrapped)  # noqa: B010 - the function, replaced
    return patched


def restore(patched: Patched) -> None:
    for module, original in patched:
        setattr(module, "train", original)  # noqa: B010
    patched.clear()


def _wrap(train: Callable[..., Any], how: Training) -> Callable[..., Any]:
    signature = inspect.signature(train)

    @functools.wraps(train)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with recording(how.label) as run:
            if run is None:
                return train(*args, **kwargs)
            call = signature.bind(*args, **kwargs)
            call.apply_defaults()
            given = call.arguments
            guarded(f"{how.label} params", lambda: how.params(run, given))
            given["callbacks"] = [*(given["callbacks"] or []), how.callback(run)]
            booster = train(*call.args, **call.kwargs)
            guarded(f"the {how.label} model", lambda: how.model(run, booster))
            return booster

    return wrapper
