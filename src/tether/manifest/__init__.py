"""Kitfiles: the manifest of a ModelKit (schema in ``kitfile.py``, safe YAML in
``yamlsafe.py``). The file names live here so that finding a Kitfile imports nothing
heavy (the schema's pydantic import costs more than a short run)."""

from __future__ import annotations

KITFILE_NAMES = ("Kitfile", "kitfile", ".kitfile")
