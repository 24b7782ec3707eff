"""Named graphs that ``tierflow ask --graph NAME`` can run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import StateGraph

from tierflow.errors import UnknownGraph
from tierflow.graphs.semantic import Embedder
from tierflow.settings import TierflowSettings
from tierflow.tiers import TierSet
from tierflow.tools.builtin import BuiltinTools


@dataclass(frozen=True)
class BuildContext:
    """What a graph factory gets: the tiers, the settings, and the built-in tools."""

    tiers: TierSet
    settings: TierflowSettings
    tools: BuiltinTools = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", BuiltinTools(self.settings))

    def embedder(self) -> Embedder:
        """The process-wide sentence embedder (loaded on first use)."""
        from tierflow.embeddings import shared_embedder

        return shared_embedder()


GraphFactory = Callable[[BuildContext], StateGraph[Any]]

_GRAPHS: dict[str, GraphFactory] = {}


def register_graph(name: str, factory: GraphFactory) -> None:
    """Make ``factory`` runnable as ``--graph name``."""
    if not name or not name.replace("-", "_").isidentifier():
        raise ValueError(f"invalid graph name {name!r}")
    _GRAPHS[name] = factory


def get_graph(name: str) -> GraphFactory:
    _load_builtin_graphs()
    try:
        return _GRAPHS[name]
    except KeyError:
        known = ", ".join(graph_names())
        raise UnknownGraph(f"unknown graph '{name}' (available: {known})") from None


def graph_names() -> list[str]:
    _load_builtin_graphs()
    return sorted(_GRAPHS)


def _load_builtin_graphs() -> None:
    # Imported late: the ready-made graphs import the registry's types.
    from tierflow.graphs import default

    for name, factory in default.BUILTIN_GRAPHS.items():
        _GRAPHS.setdefault(name, factory)
