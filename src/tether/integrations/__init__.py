"""``tether.autolog()``: what a framework's training means, recorded with no logging code.

Each integration lives in its own module, imports its framework lazily, and is switched
on when that framework is imported (at once if it already is): enabling autologging
never imports a framework the script does not use. Under ``tether run`` a script that
opens its run (``tether.start_run()``) gets autologging unless ``TETHER_AUTOLOG=0``.

A record goes to the active run; outside one, a run is started for it and ended after.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar

# framework module → the integration that patches it.
INTEGRATIONS: dict[str, str] = {
    "sklearn": "tether.integrations.sklearn",
    "lightning": "tether.integrations.lightning",
}
_lock = threading.Lock()
_enabled: set[str] = set()


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
                if name in _enabled:
                    importlib.import_module(INTEGRATIONS[name]).disable()
                    _enabled.discard(name)
                continue
            if name in _enabled:
                continue
            _enabled.add(name)
            if name in sys.modules:
                _enable(name)
            else:
                _Finder.watch(name)


def _enable(name: str) -> None:
    module = importlib.import_module(INTEGRATIONS[name])
    module.enable(record)


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
