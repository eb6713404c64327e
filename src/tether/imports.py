"""Running code right after a module's first import: ``after_import(name, fn)`` calls
``fn(module)`` at once when the module is imported, else when its import finishes.

A module not imported yet is caught by a finder at the front of ``sys.meta_path`` that
wraps its loader. A module whose import is running now (XGBoost imports scikit-learn
halfway through its own import) is waited for by wrapping ``__import__`` until it has
finished. Neither ever imports the module itself.
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

Callback = Callable[[ModuleType], None]
_lock = threading.RLock()
_waiting: dict[str, list[Callback]] = {}  # module name → what runs once it is imported


def after_import(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once ``name`` is imported (now, if it already is)."""
    with _lock:
        module = sys.modules.get(name)
        ready = module is not None and not _initializing(module)
        if not ready:
            _waiting.setdefault(name, []).append(callback)
            if module is None:
                _Finder.install()
            else:
                _AfterImport.install()
    if ready:
        callback(module)  # type: ignore[arg-type]


def cancel(name: str, callback: Callback) -> None:
    """Forget a callback that has not run yet."""
    with _lock:
        callbacks = _waiting.get(name, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            _waiting.pop(name, None)


def _initializing(module: ModuleType | None) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _imported(name: str) -> None:
    with _lock:
        callbacks = _waiting.pop(name, [])
    module = sys.modules.get(name)
    for callback in callbacks:
        if module is not None:
            callback(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of a waited-for module, to call back once it has run."""

    _installed: ClassVar[bool] = False

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            sys.meta_path.insert(0, cls())
            cls._installed = True

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in _waiting:
            return None
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
        _imported(self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _AfterImport:
    """``__import__``, wrapped while a waited-for module's import is still running."""

    _original: ClassVar[Any] = None

    @classmethod
    def install(cls) -> None:
        if cls._original is None:
            cls._original = builtins.__import__
            builtins.__import__ = _import


def _import(*args: Any, **kwargs: Any) -> Any:
    module = _AfterImport._original(*args, **kwargs)
    with _lock:
        done = [
            name
            for name in _waiting
            if name in sys.modules and not _initializing(sys.modules[name])
        ]
        running = any(name in sys.modules and name not in done for name in _waiting)
        if not running and builtins.__import__ is _import:
            builtins.__import__ = _AfterImport._original
            _AfterImport._original = None
    for name in done:
        _imported(name)
    return module
