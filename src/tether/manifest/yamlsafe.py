"""Safe YAML for manifests: plain data only, with the line of every value kept.

Parsing composes the node graph with PyYAML's SafeLoader (nothing is constructed
from tags: ``!!python/object`` is refused, never executed) and converts it ourselves,
which lets us refuse duplicate keys and merge keys, bound alias expansion ("billion
laughs") and nesting depth, keep each node's line for error messages, and keep the
source text of scalars that the schema says are strings (``version: 1.10`` stays
"1.10", not the float 1.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_BYTES = 4 << 20
MAX_NODES = 200_000
MAX_DEPTH = 64

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_TYPED = {
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class YamlProblem(Exception):
    """A YAML document that is not plain, safe data; ``line`` is 1-based or None."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class Located:
    """The converted value plus the line of each path (value lines and key lines)."""

    value: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    key_lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.key_lines:
                return self.key_lines[p]
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get(())


def load(text: str | bytes, *, typed: Callable[[Path_], bool]) -> Located:
    """Parse one YAML document. ``typed(path)`` says whether scalars under ``path``
    become int/float/bool (True) or keep their source text (False)."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise YamlProblem(f"file is larger than {MAX_BYTES >> 20} MiB", None)
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlProblem(f"not UTF-8 text ({exc.reason} at byte {exc.start})", None) from None
    if len(text) > MAX_BYTES:
        raise YamlProblem(f"file is larger than {MAX_BYTES >> 20} MiB", None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise YamlProblem(f"invalid YAML: {exc.problem or exc.context}", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}", None) from None
    except RecursionError:
        # PyYAML composes recursively: thousands of nested '[' exhaust the stack before
        # our own depth rule can see the node.
        raise YamlProblem(f"nesting is deeper than {MAX_DEPTH} levels", None) from None
    out = Located(value=None)
    if node is None:
        return out
    counter = [0]
    constructor = yaml.constructor.SafeConstructor()
    out.value = _convert(node, (), out, typed, constructor, counter, 0)
    return out


def _convert(
    node: yaml.Node,
    path: Path_,
    out: Located,
    typed: Callable[[Path_], bool],
    constructor: yaml.constructor.SafeConstructor,
    counter: list[int],
    depth: int,
) -> Any:
    counter[0] += 1
    line = node.start_mark.line + 1
    if counter[0] > MAX_NODES:
        raise YamlProblem(f"more than {MAX_NODES} values (alias expansion?)", line)
    if depth > MAX_DEPTH:
        raise YamlProblem(f"nested deeper than {MAX_DEPTH} levels", line)
    out.lines.setdefault(path, line)

    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP:
            raise YamlProblem(f"YAML tag {_short(node.tag)!r} is not allowed", line)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            kline = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlProblem("merge keys ('<<') are not supported; write the keys out", kline)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                raise YamlProblem("mapping keys must be plain strings", kline)
            key = key_node.value
            if key in result:
                raise YamlProblem(f"duplicate key {key!r}", kline)
            out.key_lines.setdefault((*path, key), kline)
            result[key] = _convert(
                value_node, (*path, key), out, typed, constructor, counter, depth + 1
            )
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            raise YamlProblem(f"YAML tag {_short(node.tag)!r} is not allowed", line)
        return [
            _convert(item, (*path, i), out, typed, constructor, counter, depth + 1)
            for i, item in enumerate(node.value)
        ]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == _STR:
        return node.value
    if node.tag not in _TYPED:
        if node.tag == "tag:yaml.org,2002:timestamp" and not typed(path):
            return node.value
        raise YamlProblem(f"YAML tag {_short(node.tag)!r} is not allowed (quote the value)", line)
    if node.tag == "tag:yaml.org,2002:null":
        return None
    if not typed(path):
        return node.value  # a string field: keep the text the user wrote
    try:
        value = constructor.construct_object(node)
    except ValueError as exc:  # e.g. an integer of 100,000 digits (CVE-2020-10735 limit)
        raise YamlProblem(f"value cannot be read: {exc}", line) from None
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise YamlProblem("NaN and infinite numbers are not allowed (they have no JSON form)", line)
    return value


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")
