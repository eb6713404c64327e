"""Proposing a Kitfile from what a project folder holds (``tether init``).

Model files are recognized by extension (the largest one becomes ``model.path``, the
rest model parts), ``data/`` or ``datasets/`` become datasets, a README becomes docs,
and source code becomes code entries. Hidden folders, virtualenvs and caches are
never proposed.
"""

from __future__ import annotations

import os
from pathlib import Path

from tether.manifest.kitfile import Code, Dataset, Doc, Kitfile, Model, ModelPart, Package

MODEL_EXTENSIONS = frozenset(
    {
        ".pkl",
        ".pickle",
        ".joblib",
        ".pt",
        ".pth",
        ".safetensors",
        ".onnx",
        ".gguf",
        ".ggml",
        ".h5",
        ".keras",
        ".pb",
        ".ckpt",
        ".tflite",
        ".npz",
        ".skops",
        ".bin",
        ".mlmodel",
    }
)
CODE_EXTENSIONS = frozenset({".py", ".ipynb", ".r", ".jl", ".sh", ".sql", ".scala"})
DATA_DIRS = ("data", "datasets")
SKIP_DIRS = frozenset(
    {
        ".git",
        ".tether",
        ".venv",
        "venv",
        "env",
        "__pycache__",
        "node_modules",
        ".ipynb_checkpoints",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "build",
        "dist",
        ".tox",
    }
)


def propose(root: Path) -> Kitfile:
    models: list[tuple[int, str]] = []
    code_dirs: set[str] = set()
    code_files: list[str] = []
    datasets = [d for d in DATA_DIRS if (root / d).is_dir()]
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in SKIP_DIRS
            and not d.startswith(".")
            and not (rel_dir == "" and d in datasets)
            and not d.endswith(".egg-info")
        )
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            suffix = Path(name).suffix.lower()
            if suffix in MODEL_EXTENSIONS:
                models.append(((root / rel).stat().st_size, rel))
            elif suffix in CODE_EXTENSIONS:
                top = rel.split("/")[0]
                if "/" in rel:
                    code_dirs.add(top)
                else:
                    code_files.append(rel)
    models.sort(key=lambda m: (-m[0], m[1]))
    model = None
    if models:
        main = models[0][1]
        parts = [
            ModelPart(name=Path(p).stem, path=p) for _, p in sorted(models[1:], key=lambda m: m[1])
        ]
        model = Model(name=Path(main).stem, path=main, parts=parts or None)
    model_dirs = {m[1].split("/")[0] for m in models if "/" in m[1]}
    code = [Code(path=d) for d in sorted(code_dirs - model_dirs)]
    code += [Code(path=f) for f in sorted(code_files)]
    readme = next(
        (n for n in ("README.md", "README.rst", "README.txt", "README") if (root / n).is_file()),
        None,
    )
    return Kitfile(
        manifestVersion="1.0.0",
        package=Package(name=_package_name(root.name)),
        model=model,
        code=code or None,
        datasets=[Dataset(name=d, path=d) for d in datasets] or None,
        docs=[Doc(path=readme)] if readme else None,
    )


def _package_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return cleaned or "model"
