"""Lineage graphs as text (an indented tree), JSON, Graphviz DOT and Mermaid.

Labels are user text (run names, paths): DOT escapes quotes and backslashes inside
quoted IDs; Mermaid gets entity codes for the characters its parser reserves, so no
label can close its string and inject syntax.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tether.lineage.graph import Graph, Node

FORMATS = ("text", "json", "dot", "mermaid")

_SHAPES = {
    "run": ("box", "rounded"),
    "data": ("note", ""),
    "code": ("component", ""),
    "environment": ("component", ""),
    "modelkit": ("box3d", ""),
    "version": ("box", "bold"),
    "alias": ("cds", ""),
}
_MERMAID_SHAPES = {
    "run": ("(", ")"),
    "data": ("[/", "/]"),
    "code": ("[[", "]]"),
    "environment": ("[[", "]]"),
    "modelkit": ("[", "]"),
    "version": ("{{", "}}"),
    "alias": (">", "]"),
}


def render(graph: Graph, fmt: str) -> str:
    renderers: dict[str, Callable[[Graph], str]] = {
        "text": to_text,
        "json": lambda g: json.dumps(g.to_json(), indent=2, default=str),
        "dot": to_dot,
        "mermaid": to_mermaid,
    }
    return renderers[fmt](graph)


def describe(node: Node) -> str:
    """One line for a node: its kind, label and the facts a reader needs."""
    a = node.attrs
    if node.kind == "run":
        bits = [f"run {node.label}"]
        if a.get("name") and a.get("run"):
            bits.append(f"({a['run']})")
        if a.get("seed") is not None:
            bits.append(f"seed={a['seed']}")
        if a.get("params"):
            bits.append(" ".join(f"{k}={v}" for k, v in sorted(a["params"].items())))
        if a.get("status") and a["status"] != "finished":
            bits.append(f"[{a['status']}]")
        if a.get("deleted"):
            bits.append("[deleted]")
        if a.get("from_provenance"):
            bits.append("[from provenance]")
        return " ".join(bits)
    if node.kind == "data":
        return f"{node.label} {a['digest'][:19]}"
    if node.kind == "modelkit":
        return f"modelkit {node.label} {a['digest'][:19]}"
    if node.kind in ("version", "alias"):
        return f"{node.kind} {node.label} {a['digest'][:19]}"
    if node.kind == "code":
        return f"code {node.label}" + (f" ({a['remote']})" if a.get("remote") else "")
    return f"{node.kind} {node.label}"


def to_text(graph: Graph) -> str:
    """The walk as an indented tree from each root; a node met again is named, not
    expanded again."""
    up = graph.direction == "upstream"
    children: dict[str, list[tuple[str, str]]] = {}
    for e in graph.edges:
        parent, child = (e.target, e.source) if up else (e.source, e.target)
        children.setdefault(parent, []).append((e.relation, child))
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    nodes = {n.id: n for n in graph.nodes}
    lines: list[str] = []
    shown: set[str] = set()

    def visit(node_id: str, prefix: str) -> None:
        kids = sorted(children.get(node_id, []), key=lambda rc: (order[rc[1]], rc[0]))
        for i, (relation, child) in enumerate(kids):
            last = i == len(kids) - 1
            arrow = (_UPSTREAM if up else _DOWNSTREAM).get(relation, relation) + " "
            again = child in shown
            suffix = " (see above)" if again and children.get(child) else ""
            lines.append(
                f"{prefix}{'└─' if last else '├─'} {arrow}{describe(nodes[child])}{suffix}"
            )
            if not again:
                shown.add(child)
                visit(child, prefix + ("   " if last else "│  "))

    for root in graph.roots:
        lines.append(describe(nodes[root]))
        shown.add(root)
        visit(root, "")
    if graph.truncated:
        lines.append("… (depth limit reached; --depth N to see further)")
    return "\n".join(lines)


# How an edge reads in the text tree: upstream from the effect back to its cause,
# downstream from the cause on to its effect.
_UPSTREAM = {
    "used": "used",
    "produced": "made by",
    "ran": "with",
    "ran-in": "in",
    "packed": "packed from",
    "version": "is",
    "alias": "points at",
    "reproduced-by": "reproduces",
}
_DOWNSTREAM = {
    "used": "used by",
    "produced": "produced",
    "ran": "ran",
    "ran-in": "hosted",
    "packed": "packed as",
    "version": "registered as",
    "alias": "pointed at by",
    "reproduced-by": "reproduced by",
}


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    lines = [
        "digraph lineage {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    roots = set(graph.roots)
    for n in graph.nodes:
        shape, style = _SHAPES.get(n.kind, ("ellipse", ""))
        styles = [s for s in (style, "filled" if n.id in roots else "") if s]
        attrs = [f"label={_dot_quote(describe(n))}", f"shape={shape}"]
        if styles:
            attrs.append(f"style={_dot_quote(','.join(styles))}")
        if n.id in roots:
            attrs.append('fillcolor="#fff2cc"')
        lines.append(f"  {_dot_quote(n.id)} [{', '.join(attrs)}];")
    for e in graph.edges:
        lines.append(
            f"  {_dot_quote(e.source)} -> {_dot_quote(e.target)} [label={_dot_quote(e.relation)}];"
        )
    lines.append("}")
    return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    # Entity codes for what could end the label or start markup.
    out = []
    for ch in text:
        if ch.isalnum() or ch in " ._-/@+=,:()":
            out.append(ch)
        else:
            out.append(f"#{ord(ch)};")
    return "".join(out)


def to_mermaid(graph: Graph) -> str:
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for n in graph.nodes:
        left, right = _MERMAID_SHAPES.get(n.kind, ("[", "]"))
        lines.append(f'  {ids[n.id]}{left}"{_mermaid_text(describe(n))}"{right}')
    for e in graph.edges:
        lines.append(f"  {ids[e.source]} -->|{_mermaid_text(e.relation)}| {ids[e.target]}")
    for root in graph.roots:
        lines.append(f"  style {ids[root]} fill:#fff2cc")
    return "\n".join(lines)
