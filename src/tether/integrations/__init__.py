"""``tether.autolog()``: what a framework's training means, recorded with no logging code.

Each integration lives in its own module, imports its framework lazily, and is switched
on when that framework is imported (at once if it already is): enabling autologging
never imports a framework the script does not use. Under ``tether run`` a script that
opens its run (``tether.start_run()``) gets autologging unless ``TETHER_AUTOLOG=0``.

A record goes to the active run; outside one, a run is started for it and ended after.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar

# framework module → the integration that patches it.
INTEGRATIONS: dict[str, str] = {
    "sklearn": "tether.integrations.sklearn",
    "lightning": "tether.integrations.lightning",
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
                _Finder._waiting.discard(TRIGGERS.get(name, name))
                _AfterImport._pending.discard(TRIGGERS.get(name, name))
                enabled = sys.modules.get(INTEGRATIONS[name])  # never imports a framework
                if enabled is not None:
                    enabled.disable()
                continue
            if name in _enabled:
                continue
            _enabled.add(name)
            trigger = TRIGGERS.get(name, name)
            if trigger not in sys.modules:
                _Finder.watch(trigger)
            elif _initializing(trigger):
                _AfterImport.wait(trigger)
            else:
                _enable(trigger)


def _enable(trigger: str) -> None:
    name = next((n for n, t in TRIGGERS.items() if t == trigger), trigger)
    module = importlib.import_module(INTEGRATIONS[name])
    module.enable(record)


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


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a framework right after its first import."""

    _waiting: ClassVar[set[str]] = set()
    _installed: ClassVar[bool] = False

    @classmethod
    def watch(cls, name: str) -> None:
        cls._waiting.add(name)
        if not cls._installed:
            sys.meta_path.insert(0, cls())
            cls._installed = True

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self._waiting:
            return None
        self._waiting.discard(name)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, name)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        _enable(self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def _initializing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


class _AfterImport:
    """Patches a framework whose import is still running when autologging is switched on
    (XGBoost imports scikit-learn halfway through its own import, and scikit-learn's
    import switches autologging on): ``__import__`` is wrapped until it has finished."""

    _pending: ClassVar[set[str]] = set()
    _original: ClassVar[Any] = None

    @classmethod
    def wait(cls, name: str) -> None:
        cls._pending.add(name)
        if cls._original is None:
            cls._original = builtins.__import__
            builtins.__import__ = cls._import

    @staticmethod
    def _import(*args: Any, **kwargs: Any) -> Any:
        cls = _AfterImport
        module = cls._original(*args, **kwargs)
        done = [name for name in cls._pending if not _initializing(name)]
        if done:
            cls._pending.difference_update(done)
            if not cls._pending:
                builtins.__import__ = cls._original
                cls._original = None
            for name in done:
                _enable(name)
        return module
