"""Graph state shared by tierflow graphs."""

from __future__ import annotations

from collections.abc import Mapping
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


def merge_vault(
    left: Mapping[str, Mapping[str, str]] | None, right: Mapping[str, Mapping[str, str]] | None
) -> dict[str, dict[str, str]]:
    """Guardrail placeholders (``<EMAIL_1>`` -> value, by kind): only ever added to."""
    out = {k: dict(v) for k, v in (left or {}).items()}
    for kind, values in (right or {}).items():
        out.setdefault(kind, {}).update(values)
    return out


def either(left: bool | None, right: bool | None) -> bool:
    """Residency is sticky: once a thread holds sensitive data it stays sensitive."""
    return bool(left) or bool(right)


class GraphState(TypedDict, total=False):
    """Conversation messages (kept across a thread's turns) plus this run's bookkeeping."""

    messages: Annotated[list[AnyMessage], add_messages]
    route: str | None
    graph: str  # the graph this thread runs (to resume a paused run)
    steps: Annotated[list[dict[str, Any]], merge_steps]
    sensitive: Annotated[bool, either]  # residency: only local backends from now on
    input_guardrails: list[dict[str, Any]]  # this run's input-stage verdicts
    guardrails: Annotated[list[dict[str, Any]], merge_steps]  # this run's other verdicts
    guard_vault: Annotated[dict[str, dict[str, str]], merge_vault]
    plan: list[str]  # planner graphs: the step list
    plan_step: int  # planner graphs: index of the next step
