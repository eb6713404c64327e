"""Lineage: what made a model, and what a data file or run went into::

from tether.lineage import lineage, render
graph = lineage(ws, "recs:production")
print(render(graph, "mermaid"))
"""

from tether.lineage.graph import Edge, Graph, Node, lineage
from tether.lineage.render import render

__all__ = ["Edge", "Graph", "Node", "lineage", "render"]
