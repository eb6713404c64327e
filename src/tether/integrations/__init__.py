"""``tether.autolog()``: what a framework's training means, recorded with no logging code.

Each integration lives in its own module, imports its framework lazily, and is switched
on when that framework is imported (at once if it already is): enabling autologging
never imports a framework the script does not use. Under ``tether run`` a script that
opens its run (``tether.start_run()``) gets autologging unless ``TETHER_AUTOLOG=0``.

A record goes to the active run; outside one, a run is started for it and ended after.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from tether import imports

# framework module → the integration that patches it.
INTEGRATIONS: dict[str, str] = {
    "sklearn": "tether.integrations.sklearn",
    "lightning": "tether.integrations.lightning",
    "pytorch_lightning": "tether.integrations.pytorch_lightning",
    "transformers": "tether.integrations.transformers",
    "keras": "tether.integrations.keras",
    "xgboost": "tether.integrations.xgboost",
    "lightgbm": "tether.integrations.lightgbm",
}
# The module whose import switches an integration on, where it is not the framework's
# own: Transformers' trainer imports torch and accelerate, its tokenizers do not.
TRIGGERS: dict[str, str] = {"transformers": "transformers.trainer"}
_lock = threading.Lock()
_enabled: set[str] = set()
_depth = [0]  # trainings in progress in this process
_depth_lock = threading.Lock()


def autolog(*, frameworks: Sequence[str] | None = None, disable: bool = False) -> None:
    """Record what each supported framework's training does (see ``docs/integrations.md``);
    ``frameworks`` limits it (e.g. ``["sklearn"]``); ``disable=True`` turns it off."""
    wanted = list(frameworks) if frameworks is not None else list(INTEGRATIONS)
    unknown = [f for f in wanted if f not in INTEGRATIONS]
    if unknown:
        from tether.errors import UsageError

        raise UsageError(f"no autologging for {unknown[0]!r}",
                         hint=f"supported: {', '.join(INTEGRATIONS)}")  # fmt: skip
    with _lock:
        for name in wanted:
            if disable:
                _enabled.discard(name)
                imports.cancel(TRIGGERS.get(name, name), _enable)
                enabled = sys.modules.get(INTEGRATIONS[name])  # never imports a framework
                if enabled is not None:
                    enabled.disable()
                continue
            if name in _enabled:
                continue
            _enabled.add(name)
            imports.after_import(TRIGGERS.get(name, name), _enable)


def _enable(trigger: ModuleType) -> None:
    name = next((n for n, t in TRIGGERS.items() if t == trigger.__name__), trigger.__name__)
    if name in _enabled:
        importlib.import_module(INTEGRATIONS[name]).enable(record)


def owns(module: str) -> bool:
    """Whether an enabled integration other than scikit-learn's records ``module``'s
    trainings (XGBoost's and LightGBM's scikit-learn wrappers are theirs)."""
    top = module.partition(".")[0]
    return top != "sklearn" and top in _enabled


@contextlib.contextmanager
def outermost() -> Iterator[bool]:
    """Count a training in progress; yields whether it is the outermost one. A fit inside
    a fit (a search's candidates, a pipeline's steps, a wrapper's booster) is not recorded
    again. Process-wide, not per thread: a search fits its candidates on joblib's threads."""
    with _depth_lock:
        depth = _depth[0]
        _depth[0] += 1
    try:
        yield depth == 0
    finally:
        with _depth_lock:
            _depth[0] -= 1


def guarded(what: str, write: Callable[[], None]) -> None:
    """Run one record; a record that fails is reported and the training goes on."""
    try:
        write()
    except Exception as e:
        sys.stderr.write(f"tether: autolog could not record {what}: {e}\n")
        if os.environ.get("TETHER_DEBUG"):
            raise


@contextlib.contextmanager
def recording(label: str) -> Iterator[Any]:
    """The run an outermost training records into: the active run, or one started for
    it (ended after it). ``None`` for a training inside another, or when no run can be
    had (reported): the training itself always goes on."""
    with outermost() as first:
        if not first:
            yield None
            return
        from tether.runs.api import active_run, start_run

        run = active_run()
        if run is not None:
            yield run
            return
        try:
            made = start_run(name=label)
        except Exception as e:
            sys.stderr.write(f"tether: autolog could not start a run for {label}: {e}\n")
            if os.environ.get("TETHER_DEBUG"):
                raise
            made = None
        if made is None:
            yield None
            return
        with made:
            yield made


def record(write: Callable[[Any], None], label: str) -> None:
    """Run ``write(run)`` on the active run, or on a run started for it."""
    from tether.runs.api import active_run, start_run

    run = active_run()
    if run is not None:
        write(run)
        return
    with start_run(name=label) as made:
        write(made)
