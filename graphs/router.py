"""A router node: a semantic router, then the router tier under constrained decoding."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field, create_model

from tierflow.agents.node import NodeFn, degraded_step, emit, step_from_result
from tierflow.errors import TierExhausted
from tierflow.graphs.semantic import SemanticRouter
from tierflow.record import Attempt, Step
from tierflow.state import GraphState
from tierflow.telemetry import trace_agent
from tierflow.tiers import TierSet


def route_decision_type(routes: Mapping[str, str]) -> type[BaseModel]:
    """A pydantic model whose only field is one of ``routes``: the JSON schema the router's
    output is constrained to, so even a 0.5B model cannot answer outside the set."""
    names = tuple(routes)
    route_type: Any = Literal[names]
    return create_model(
        "RouteDecision",
        route=(route_type, Field(description="The route that should handle the request.")),
    )


def _last_user_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return str(message.content)
    return ""


def router_node(
    routes: Mapping[str, str],
    *,
    tiers: TierSet,
    tier: str = "router",
    default: str | None = None,
    semantic: SemanticRouter | None = None,
) -> NodeFn:
    """A node that sets ``state["route"]``. Routes map a name to a one-line description.

    With ``semantic``, a confident embedding match decides without a model call; otherwise
    the router tier's model picks under a JSON schema. If the router tier is down the run
    still goes on, on ``default`` (the first route), and the step is marked degraded.
    """
    if not routes:
        raise ValueError("a router needs at least one route")
    fallback_route = default or next(iter(routes))
    decision_type = route_decision_type(routes)
    the_tier = tiers[tier]
    listing = "\n".join(f"- {name}: {desc}" for name, desc in routes.items())
    instructions = (
        "You are a request router. Pick the single route that should handle the user's "
        f"request.\nRoutes:\n{listing}\nReply with JSON only."
    )

    @trace_agent("router", the_tier, kind="router")
    async def run(state: GraphState) -> dict[str, Any]:
        started = time.perf_counter()
        emit("node_started", node="router", tier=the_tier.name)
        question = _last_user_text(state.get("messages", []))
        prior: list[Attempt] = []
        if semantic is not None:
            decision = await asyncio.to_thread(semantic.classify, question)
            ms = round((time.perf_counter() - started) * 1000, 2)
            if decision.confident:
                step = Step(
                    node="router",
                    tier=the_tier.name,
                    backend="semantic",
                    model=semantic.embedder.model_id,
                    attempts=[Attempt(backend="semantic", outcome="ok", duration_ms=ms)],
                    duration_ms=ms,
                )
                emit("node_finished", node="router", tier=the_tier.name, route=decision.route)
                return {"route": decision.route, "steps": [step.model_dump()]}
            prior.append(
                Attempt(
                    backend="semantic",
                    outcome="skipped",
                    reason=f"not confident: {decision.route} leads by {decision.margin:.3f}",
                    duration_ms=ms,
                )
            )
        messages = [SystemMessage(instructions), HumanMessage(question)]
        try:
            result = await the_tier.acall(
                messages, output_type=decision_type, sensitive=bool(state.get("sensitive"))
            )
        except TierExhausted as exc:
            step = degraded_step("router", the_tier.name, exc.attempts, started)
            route = fallback_route
        else:
            step = step_from_result("router", the_tier.name, result, started)
            route = str(getattr(result.parsed, "route", fallback_route))
        if prior:
            step.attempts = [*prior, *step.attempts]
            step.fallback_from = "semantic"
            step.fallback_reason = "; ".join(
                f"{a.backend}: {a.reason}" for a in step.attempts if a.outcome != "ok"
            )
        emit("node_finished", node="router", tier=the_tier.name, route=route)
        return {"route": route, "steps": [step.model_dump()]}

    return run
