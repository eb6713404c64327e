"""``.kitignore``: which files in the context directory a pack leaves out.

Semantics are ``.dockerignore``'s, as KitOps uses them: one pattern a line, ``#``
comments, ``*`` and ``?`` within one path component, ``**`` across components,
``[...]`` classes, ``\\`` escapes, ``!`` re-includes; the last matching pattern wins,
and a pattern that matches a directory matches everything under it. Some names are
never packed: Kitfiles, ``.kitignore``, tether's own ``.tether/`` and ``.git/``, and OS
junk files (``.DS_Store``, ``Thumbs.db``…).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

ALWAYS_IGNORED = ("Kitfile", "kitfile", ".kitfile", ".kitignore", ".tether", ".git")
OS_JUNK = frozenset(
    {
        ".DS_Store",
        ".AppleDouble",
        ".LSOverride",
        ".Spotlight-V100",
        ".Trashes",
        "Thumbs.db",
        "desktop.ini",
        "$RECYCLE.BIN",
        "ehthumbs.db",
    }
)


@dataclass(frozen=True)
class _Pattern:
    text: str
    regex: re.Pattern[str]
    negated: bool


class IgnoreRules:
    """Compiled ignore patterns for one context directory."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:].strip()
            line = posixpath.normpath(line).lstrip("/")
            if line in ("", "."):
                continue
            self.patterns.append(_Pattern(line, _compile(line), negated))
        self.has_negations = any(p.negated for p in self.patterns)

    @classmethod
    def for_context(cls, context: Path) -> IgnoreRules:
        path = context / ".kitignore"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        return cls([*ALWAYS_IGNORED, *lines])

    def ignored(self, rel: str) -> bool:
        """Whether the slash-separated path ``rel`` (relative to the context) is left out."""
        if posixpath.basename(rel) in OS_JUNK:
            return True
        result = False
        for pattern in self.patterns:
            if pattern.regex.match(rel):
                result = not pattern.negated
        return result

    def prune(self, rel_dir: str) -> bool:
        """Whether a walk may skip ``rel_dir`` entirely (ignored, and nothing re-includes)."""
        return not self.has_negations and self.ignored(rel_dir)


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                while i + 1 < n and pattern[i + 1] == "*":
                    i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    # A pattern that matches a directory matches everything under it.
    out.append("(?:/.*)?$")
    return re.compile("".join(out), re.DOTALL)
