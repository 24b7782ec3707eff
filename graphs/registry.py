"""Named graphs that ``tierflow ask --graph NAME`` can run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.graph import StateGraph

from tierflow.errors import UnknownGraph
from tierflow.graphs.default import build_default_graph, build_direct_graph
from tierflow.tiers import TierSet

GraphFactory = Callable[[TierSet], StateGraph[Any]]

_GRAPHS: dict[str, GraphFactory] = {
    "default": build_default_graph,
    "direct": build_direct_graph,
}


def register_graph(name: str, factory: GraphFactory) -> None:
    """Make ``factory`` runnable as ``--graph name``."""
    if not name or not name.replace("-", "_").isidentifier():
        raise ValueError(f"invalid graph name {name!r}")
    _GRAPHS[name] = factory


def get_graph(name: str) -> GraphFactory:
    try:
        return _GRAPHS[name]
    except KeyError:
        known = ", ".join(sorted(_GRAPHS))
        raise UnknownGraph(f"unknown graph '{name}' (available: {known})") from None


def graph_names() -> list[str]:
    return sorted(_GRAPHS)
