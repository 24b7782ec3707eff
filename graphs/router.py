"""A router node: a semantic router, then the router tier under constrained decoding."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field, create_model

from tierflow.agents.step import ModelStep, NodeFn
from tierflow.graphs.keywords import KeywordRouter
from tierflow.graphs.semantic import SemanticRouter
from tierflow.models.tiers import TierSet
from tierflow.record import Attempt, Step
from tierflow.state import GraphState, run_question
from tierflow.telemetry import trace_agent


def route_decision_type(routes: Mapping[str, str]) -> type[BaseModel]:
    """A pydantic model whose only field is one of ``routes``: the JSON schema the router's
    output is constrained to, so even a 0.5B model cannot answer outside the set."""
    names = tuple(routes)
    route_type: Any = Literal[names]
    return create_model(
        "RouteDecision",
        route=(route_type, Field(description="The route that should handle the request.")),
    )


def router_node(
    routes: Mapping[str, str],
    *,
    tiers: TierSet,
    tier: str = "router",
    default: str | None = None,
    semantic: SemanticRouter | None = None,
    keywords: KeywordRouter | None = None,
    node: str = "router",
) -> NodeFn:
    """A node that sets ``state["route"]``. Routes map a name to a one-line description.

    With ``keywords``, a route whose cue words lead decides first (no model, no embedder).
    With ``semantic``, a confident embedding match decides without a model call; otherwise
    the router tier's model picks under a JSON schema. If the router tier is down the run
    still goes on, on ``default`` (the first route), and the step is marked degraded.
    ``node`` is the name the node has in its graph (its steps and spans carry it).
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

    @trace_agent(node, the_tier, kind="router")
    async def run(state: GraphState) -> dict[str, Any]:
        step = ModelStep(node, the_tier, state, kind="router")
        question = run_question(state)
        prior: list[Attempt] = []
        if keywords is not None:
            cue = keywords.classify(question)
            if cue.route is not None:
                ms = round((time.perf_counter() - step.started) * 1000, 2)
                step.skipped(
                    Step(
                        node=node,
                        tier=the_tier.name,
                        backend="keywords",
                        model=None,
                        attempts=[Attempt(backend="keywords", outcome="ok", duration_ms=ms)],
                    )
                )
                return step.finish({"route": cue.route}, route=cue.route)
        if semantic is not None:
            decision = await asyncio.to_thread(semantic.classify, question)
            ms = round((time.perf_counter() - step.started) * 1000, 2)
            if decision.confident:
                step.skipped(
                    Step(
                        node=node,
                        tier=the_tier.name,
                        backend="semantic",
                        model=semantic.embedder.model_id,
                        attempts=[Attempt(backend="semantic", outcome="ok", duration_ms=ms)],
                    )
                )
                return step.finish({"route": decision.route}, route=decision.route)
            prior.append(
                Attempt(
                    backend="semantic",
                    outcome="skipped",
                    reason=f"not confident: {decision.route} leads by {decision.margin:.3f}",
                    duration_ms=ms,
                )
            )
        messages = [SystemMessage(instructions), HumanMessage(question)]
        result = await step.call(messages, output_type=decision_type)
        route = fallback_route if result is None else str(getattr(result.parsed, "route", ""))
        route = route if route in routes else fallback_route
        assert step.step is not None
        if prior:
            step.step.attempts = [*prior, *step.step.attempts]
            step.step.fallback_from = "semantic"
            step.step.fallback_reason = "; ".join(
                f"{a.backend}: {a.reason}" for a in step.step.attempts if a.outcome != "ok"
            )
        return step.finish({"route": route}, route=route)

    return run
