"""The graph node that runs an :class:`Agent`: one model call through its tier.

A tier whose every backend is down does not crash the graph: the node answers with a
clearly marked degraded message and its step says so (DESIGN.md, layer 3).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, Protocol

from langchain_core.messages import AIMessage, SystemMessage
from langgraph.config import get_stream_writer

from tierflow.agents.agent import Agent
from tierflow.errors import TierExhausted
from tierflow.record import Attempt, Step
from tierflow.state import GraphState
from tierflow.tiers import TierResult, TierSet


class NodeFn(Protocol):
    """What tierflow's node factories return: an async LangGraph node over GraphState."""

    def __call__(self, state: GraphState) -> Awaitable[dict[str, Any]]: ...


def step_from_result(node: str, tier: str, result: TierResult, started: float) -> Step:
    return Step(
        node=node,
        tier=tier,
        backend=result.backend.id,
        model=result.message.response_metadata.get("model_name") or result.backend.model_name,
        fallback_from=result.fallback_from,
        fallback_reason=result.fallback_reason,
        attempts=result.attempts,
        usage=result.usage,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def degraded_step(node: str, tier: str, exc: TierExhausted, started: float) -> Step:
    attempts = [Attempt(backend=b, outcome="failed", reason=r) for b, r in exc.attempts]
    return Step(
        node=node,
        tier=tier,
        backend=None,
        model=None,
        fallback_from=exc.attempts[0][0] if exc.attempts else None,
        fallback_reason="; ".join(f"{b}: {r}" for b, r in exc.attempts),
        attempts=attempts,
        degraded=True,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def emit(event: str, **data: Any) -> None:
    """Send a progress event to whoever streams the run (no-op outside a stream)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:  # called outside a LangGraph run
        return
    writer({"event": event, **data})


def agent_node(agent: Agent, tiers: TierSet) -> NodeFn:
    """A LangGraph node that answers the conversation with ``agent`` on its tier."""
    tier = tiers[agent.tier]  # fail at build time on an unknown tier

    async def run(state: GraphState) -> dict[str, Any]:
        started = time.perf_counter()
        emit("node_started", node=agent.name, tier=tier.name)
        messages = [SystemMessage(agent.instructions), *state.get("messages", [])]
        sensitive = agent.local_only or bool(state.get("sensitive"))
        try:
            result = await tier.ainvoke(messages, sensitive=sensitive)
        except TierExhausted as exc:
            step = degraded_step(agent.name, tier.name, exc, started)
            reply = AIMessage(
                content=(
                    f"[degraded] No answer: every backend of the '{tier.name}' tier failed "
                    f"({step.fallback_reason}). Nothing was lost; ask again to retry."
                ),
                name=agent.name,
            )
        else:
            step = step_from_result(agent.name, tier.name, result, started)
            reply = AIMessage(
                content=result.message.content,
                name=agent.name,
                response_metadata={"backend": result.backend.id},
                usage_metadata=result.message.usage_metadata,
            )
        emit("node_finished", node=agent.name, tier=tier.name, backend=step.backend)
        return {"messages": [reply], "steps": [step.model_dump()]}

    return run
