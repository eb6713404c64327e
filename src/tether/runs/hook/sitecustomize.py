"""Loaded by every Python process that ``tether run`` starts (PYTHONPATH points here).

It records, without touching the user's script:

- which files the process opens for reading and writing (``sys.addaudithook``, the
  ``open`` and ``os.rename`` events), each path once per process;
- which seeding functions it calls (``random.seed``, ``numpy.random.seed``,
  ``numpy.random.default_rng`` with a seed, ``torch.manual_seed``), wrapped right after
  their module is first imported. Classes are left alone: a subclass would break
  ``isinstance`` checks such as scikit-learn's on ``RandomState``;
- where model savers that write below Python put their files (``torch.save``,
  ``torch.jit.save``, ``h5py.File`` opened for writing, ``tf.saved_model.save``), wrapped
  the same way;
- which modules outside the standard library it imports (the ``import`` event,
  top-level names only);
- which URLs it requests through urllib (the ``urllib.Request`` event): data from the
  network is an input nothing versions;
- the interpreter (``sys.executable``) of each process.

Records go to ``$TETHER_AUDIT_LOG`` as they happen (one ``os.write`` each, O_APPEND),
so a crash or a kill loses nothing already seen. A record is ``KIND\\0FIELD…\\0\\n``:
paths never contain NUL, so ``\\0\\n`` only ends records. Then the sitecustomize this
one shadows, if any, is loaded. Runs on Python >= 3.8; imports nothing from tether.
"""

import contextlib
import os
import sys


def _install():
    log_path = os.environ.get("TETHER_AUDIT_LOG")
    if not log_path or not hasattr(sys, "addaudithook"):
        return
    here = os.path.dirname(os.path.abspath(__file__))
    # Leave sys.path as the script would see it without tether.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return

    def emit(*fields):
        record = b"\0".join(os.fsencode(f) if isinstance(f, str) else f for f in fields)
        with contextlib.suppress(OSError, ValueError, TypeError):
            os.write(fd, record + b"\0\n")

    emit("P", str(os.getpid()), sys.executable or "", os.getcwd())
    ignore = {os.path.realpath(p) + os.sep for p in (
        sys.prefix, sys.base_prefix, sys.exec_prefix, getattr(sys, "base_exec_prefix", sys.prefix),
        here, "/proc", "/sys", "/dev",
    )}  # fmt: skip
    for extra in os.environ.get("TETHER_AUDIT_IGNORE", "").split(os.pathsep):
        if extra:
            ignore.add(os.path.realpath(extra) + os.sep)
    ignore_prefixes = tuple(sorted(ignore))
    code_suffixes = (".py", ".pyc", ".pyo", ".pyi", ".pth", ".so", ".pyd", ".dylib")
    seen = set()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    fspath = os.fspath
    abspath = os.path.abspath

    # Standard-library modules are not distributions anyone installs (3.10+ knows them).
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            try:
                path = fspath(path)
                if isinstance(path, bytes):
                    path = os.fsdecode(path)
                if mode is None:
                    kind = "W" if flags & write_flags else "R"
                else:
                    kind = "W" if any(c in mode for c in "wax+") else "R"
                key = (kind, path, os.getcwd() if not path.startswith("/") else "")
                if key in seen:
                    return
                seen.add(key)
                full = abspath(path)
                if full.startswith(ignore_prefixes) or (
                    kind == "R" and full.endswith(code_suffixes)
                ):
                    return
                emit(kind, full)
            except Exception:
                return
        elif event == "import":
            # Which top-level modules the run imported (first import of each only): the
            # frameworks it used, and what '--packages imported' reinstalls.
            try:
                top = args[0].partition(".")[0]
                if top and top not in stdlib and not top.startswith("_") and top not in seen:
                    seen.add(top)
                    emit("I", top)
            except Exception:
                return
        elif event == "urllib.Request":
            # Data fetched over the network is an input nobody versioned.
            try:
                url = str(args[0])
                if url not in seen:
                    seen.add(url)
                    emit("U", url)
            except Exception:
                return
        elif event == "os.rename":
            try:
                src, dst = fspath(args[0]), fspath(args[1])
                if isinstance(src, bytes):
                    src, dst = os.fsdecode(src), os.fsdecode(dst)
                emit("M", abspath(src), abspath(dst))
            except Exception:
                return

    sys.addaudithook(hook)
    params = {} if os.environ.get("TETHER_AUTOPARAMS") == "0" else _params(emit, ignore_prefixes)
    if os.environ.get("TETHER_AUTOLOG") == "1":
        params.update(_autolog())
    _watch_seeding(emit, ignore_prefixes, params)


def _autolog():
    """``tether run --autolog``: tether's integrations switched on when a framework is
    imported, with no change to the script, if tether is importable by this interpreter
    (a run in another environment without tether simply gets none)."""

    # Only the run's first Python process records: worker processes of a search or a
    # data loader (which inherit the variable) would record each candidate's fit.
    owner = os.environ.setdefault("TETHER_AUTOLOG_OWNER", str(os.getpid()))
    if owner != str(os.getpid()):
        return {}

    def enable(_module):
        try:
            import tether.integrations

            tether.integrations.autolog()
        except Exception as exc:
            sys.stderr.write(f"tether: autolog is off in this process ({exc})\n")

    frameworks = (
        "sklearn",
        "lightning",
        "pytorch_lightning",
        "transformers",
        "keras",
        "xgboost",
        "lightgbm",
    )
    return dict.fromkeys(frameworks, enable)


def _params(emit, ignore_prefixes):
    """Patches that record a script's parameters as it parses them: argparse's result
    (the outermost parse called from the user's code), a click command's parsed params
    (each command the user wrote), and the config Hydra composed (flattened with dots,
    without Hydra's own node). A record is ``A, source, key, value``."""
    import json

    def text(value):
        if isinstance(value, (list, tuple, dict)):
            try:
                return json.dumps(value, default=str, sort_keys=True)
            except Exception:
                return str(value)
        return str(value)

    def user_code(filename):
        return not os.path.abspath(filename).startswith(ignore_prefixes)

    def patch_argparse(mod):
        original = mod.ArgumentParser.parse_known_args
        here = os.path.abspath(mod.__file__)
        depth = [0]

        def parse_known_args(self, args=None, namespace=None):
            depth[0] += 1
            try:
                result = original(self, args, namespace)
            finally:
                depth[0] -= 1
            try:
                frame = sys._getframe(1)
                while frame is not None and os.path.abspath(frame.f_code.co_filename) == here:
                    frame = frame.f_back  # parse_args calls us: look past argparse
                if depth[0] == 0 and frame is not None and user_code(frame.f_code.co_filename):
                    for key, value in sorted(vars(result[0]).items()):
                        emit("A", "argparse", str(key), text(value))
            except Exception:
                pass
            return result

        mod.ArgumentParser.parse_known_args = parse_known_args

    def patch_click(mod):
        original = mod.Command.invoke

        def invoke(self, ctx):
            try:
                callback = getattr(self.callback, "__code__", None)
                if callback is not None and user_code(callback.co_filename):
                    for key, value in sorted(ctx.params.items()):
                        emit("A", "click", str(key), text(value))
            except Exception:
                pass
            return original(self, ctx)

        mod.Command.invoke = invoke

    def patch_hydra(mod):
        original = mod.run_job

        def recorded(task_function):
            # Wrapped where Hydra calls the task: its config is composed, without the
            # hydra node, and Hydra's own resolvers work.
            def task(cfg):
                try:
                    from omegaconf import OmegaConf

                    stack = [("", OmegaConf.to_container(cfg, resolve=True))]
                    while stack:
                        prefix, node = stack.pop()
                        for key, value in node.items():
                            if isinstance(value, dict) and value:
                                stack.append((f"{prefix}{key}.", value))
                            else:
                                emit("A", "hydra", f"{prefix}{key}", text(value))
                except Exception:
                    pass
                return task_function(cfg)

            return task

        def run_job(*args, **kwargs):
            if "task_function" in kwargs:
                kwargs["task_function"] = recorded(kwargs["task_function"])
            elif args:
                args = (recorded(args[0]), *args[1:])
            return original(*args, **kwargs)

        mod.run_job = run_job

    return {"argparse": patch_argparse, "click.core": patch_click,
            "hydra.core.utils": patch_hydra}  # fmt: skip


def _watch_seeding(emit, ignore_prefixes, extra):
    """Wrap seeding functions as their modules finish importing. Only calls made from
    the user's code count: libraries seed private generators at import time. Model
    savers that write below Python (torch, h5py, TensorFlow) are wrapped the same way
    to name the path they were given."""
    import functools

    seen = set()

    def saving(func, position, keyword):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            target = args[position] if len(args) > position else kwargs.get(keyword)
            result = func(*args, **kwargs)
            try:
                if isinstance(target, (str, bytes)) or hasattr(target, "__fspath__"):
                    path = os.fspath(target)
                    if isinstance(path, bytes):
                        path = os.fsdecode(path)
                    emit("O", os.path.abspath(path))
            except Exception:
                pass
            return result

        return wrapper

    def patch_h5py(mod):
        init = mod.File.__init__

        @functools.wraps(init)
        def file_init(self, name, mode="r", *args, **kwargs):
            init(self, name, mode, *args, **kwargs)
            try:
                if mode in ("w", "w-", "x", "a", "r+") and isinstance(name, (str, os.PathLike)):
                    emit("O", os.path.abspath(os.fspath(name)))
            except Exception:
                pass

        mod.File.__init__ = file_init  # the class stays: isinstance checks keep working

    def patch_tensorflow(mod):
        mod.saved_model.save = saving(mod.saved_model.save, 1, "export_dir")

    def noted(name, func, always=False):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            seed = args[0] if args else kwargs.get("seed")
            if always or isinstance(seed, (int, str, bytes, list, tuple)):
                try:
                    caller = sys._getframe(1).f_code.co_filename
                    if not os.path.abspath(caller).startswith(ignore_prefixes):
                        record = (name, repr(seed)[:60])
                        if record not in seen:
                            seen.add(record)
                            emit("S", *record)
                except Exception:
                    pass
            return func(*args, **kwargs)

        return wrapper

    def patch_random(mod):
        mod.seed = noted("random.seed", mod.seed)

    def patch_numpy_random(mod):
        mod.seed = noted("numpy.random.seed", mod.seed)
        mod.default_rng = noted("numpy.random.default_rng", mod.default_rng)

    def patch_torch(mod):
        mod.manual_seed = noted("torch.manual_seed", mod.manual_seed, always=True)
        mod.save = saving(mod.save, 1, "f")
        with contextlib.suppress(Exception):
            mod.jit.save = saving(mod.jit.save, 1, "f")

    targets = {
        "random": patch_random,
        "numpy.random": patch_numpy_random,
        "torch": patch_torch,
        "h5py": patch_h5py,
        "tensorflow": patch_tensorflow,
        **extra,
    }

    class Loader:
        def __init__(self, loader, patch):
            self._loader = loader
            self._patch = patch

        def create_module(self, spec):
            return self._loader.create_module(spec)

        def exec_module(self, module):
            self._loader.exec_module(module)
            module.__spec__.loader = self._loader
            with contextlib.suppress(Exception):
                self._patch(module)

        def __getattr__(self, name):
            return getattr(self._loader, name)

    class Finder:
        def find_spec(self, name, path=None, target=None):
            patch = targets.pop(name, None)
            if patch is None:
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = Loader(spec.loader, patch)
                    return spec
            return None

    for name, patch in list(targets.items()):
        if name in sys.modules:  # imported before us (rare): patch now
            targets.pop(name)
            with contextlib.suppress(Exception):
                patch(sys.modules[name])
    sys.meta_path.insert(0, Finder())


def _chain():
    """Load the sitecustomize that ours shadows (Debian ships one, so do conda envs)."""
    ours = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  # the next one on sys.path, ours is gone from it
    except ImportError:
        if ours is not None:
            sys.modules["sitecustomize"] = ours
    except Exception as exc:  # as site.py does: report, carry on
        sys.stderr.write("Error in sitecustomize; set PYTHONVERBOSE for traceback:\n")
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")


try:
    _install()
finally:
    _chain()
