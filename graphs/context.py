"""What a graph factory receives (:class:`BuildContext`) and the factory's type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import StateGraph

from tierflow.models.embeddings import Embedder, shared_embedder
from tierflow.models.tiers import TierSet
from tierflow.settings import TierflowSettings
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
        return shared_embedder()


GraphFactory = Callable[[BuildContext], StateGraph[Any]]
