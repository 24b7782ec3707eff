"""Graph state shared by tierflow graphs."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


def merge_steps(
    left: list[dict[str, Any]] | None, right: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Append a node's steps; ``None`` starts a new run's list (the runner sends it)."""
    if right is None:
        return []
    return [*(left or []), *right]


class GraphState(TypedDict, total=False):
    """Conversation messages (kept across a thread's turns) plus this run's bookkeeping."""

    messages: Annotated[list[AnyMessage], add_messages]
    route: str | None
    graph: str  # the graph this thread runs (to resume a paused run)
    steps: Annotated[list[dict[str, Any]], merge_steps]
    sensitive: bool
    plan: list[str]  # planner graphs: the step list
    plan_step: int  # planner graphs: index of the next step
