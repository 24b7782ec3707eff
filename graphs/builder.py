"""Ready-made graph shapes over LangGraph's ``StateGraph``.

Each function returns an uncompiled ``StateGraph`` over :class:`GraphState`, so a
builder can still add any LangGraph node or edge before the runner compiles it with a
checkpointer (the escape hatch). Agents join a graph with
:func:`tierflow.agents.add_agent`.

- :func:`router_graph`: the router tier picks one specialist.
- :func:`planner_graph`: a planner writes a step list; an executor works through it
  with its tools; the executor then answers the question.
- :func:`supervisor_graph`: a supervisor repeatedly picks the next worker or finishes.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field, create_model

from tierflow.agents import Agent, add_agent
from tierflow.agents.node import degraded_step, emit, step_from_result
from tierflow.errors import TierExhausted
from tierflow.graphs.router import router_node
from tierflow.graphs.semantic import Embedder, SemanticRouter
from tierflow.state import GraphState
from tierflow.telemetry import trace_agent
from tierflow.tiers import TierSet


@dataclass(frozen=True, kw_only=True)
class Route:
    """A route of a router graph: when to take it, and the agent that answers."""

    description: str
    agent: Agent
    #: A few example requests for this route; with an embedder they drive semantic routing.
    examples: Sequence[str] = ()


def router_graph(
    tiers: TierSet,
    routes: Mapping[str, Route],
    *,
    router_tier: str = "router",
    default: str | None = None,
    embedder: Embedder | None = None,
    margin: float = 0.03,
) -> StateGraph[GraphState]:
    """``router`` -> one route's agent (with its tool loop) -> END.

    With an ``embedder``, routes are first matched semantically against their description
    and examples (see :mod:`tierflow.graphs.semantic`); the router tier decides the rest.
    """
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    descriptions = {name: r.description for name, r in routes.items()}
    semantic = None
    if embedder is not None and len(routes) > 1:
        texts = {name: [r.description, *r.examples] for name, r in routes.items()}
        semantic = SemanticRouter(embedder, texts, margin=margin)
    graph.add_node(
        "router",
        router_node(
            descriptions, tiers=tiers, tier=router_tier, default=default, semantic=semantic
        ),
    )
    targets: dict[Hashable, str] = {n: add_agent(graph, r.agent, tiers) for n, r in routes.items()}
    graph.add_edge(START, "router")
    graph.add_conditional_edges("router", lambda s: s["route"], targets)
    return graph


class Plan(BaseModel):
    steps: list[str] = Field(description="Short, concrete steps, in order.", max_length=5)


def planner_graph(tiers: TierSet, *, planner_tier: str, executor: Agent) -> StateGraph[GraphState]:
    """``planner`` writes up to 5 steps; ``executor`` does each, then answers."""
    tier = tiers[planner_tier]
    tool_list = ", ".join(t.name for t in executor.tools) or "no tools"

    @trace_agent("planner", tier, kind="planner")
    async def plan(state: GraphState) -> dict[str, Any]:
        started = time.perf_counter()
        emit("node_started", node="planner", tier=tier.name)
        question = next(
            (
                str(m.content)
                for m in reversed(state.get("messages", []))
                if isinstance(m, HumanMessage)
            ),
            "",
        )
        prompt = [
            SystemMessage(
                "Break the request into at most 5 short steps an assistant with these tools "
                f"can carry out: {tool_list}. Reply with JSON."
            ),
            HumanMessage(question),
        ]
        try:
            result = await tier.acall(
                prompt, output_type=Plan, sensitive=bool(state.get("sensitive"))
            )
        except TierExhausted as exc:
            step = degraded_step("planner", tier.name, exc.attempts, started)
            steps = [question]  # no plan: do the whole request as one step
        else:
            step = step_from_result("planner", tier.name, result, started)
            steps = [s for s in result.parsed.steps if s.strip()] or [question]
        emit("node_finished", node="planner", tier=tier.name, plan=steps)
        return {"plan": steps, "plan_step": 0, "steps": [step.model_dump()]}

    def next_step(state: GraphState) -> dict[str, Any]:
        steps, i = state.get("plan", []), state.get("plan_step", 0)
        if i < len(steps):
            text = f"Step {i + 1} of {len(steps)}: {steps[i]}"
        else:
            text = "All steps are done. Now answer the original request in full."
        return {"messages": [HumanMessage(text, name="planner")], "plan_step": i + 1}

    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_node("planner", plan)
    graph.add_node("next_step", next_step)
    add_agent(graph, executor, tiers, then="after_step")
    graph.add_node("after_step", lambda state: {})
    graph.add_edge(START, "planner")
    graph.add_edge("planner", "next_step")
    graph.add_edge("next_step", executor.name)
    graph.add_conditional_edges(
        "after_step",
        lambda s: "next_step" if s.get("plan_step", 0) <= len(s.get("plan", [])) else END,
        ["next_step", END],
    )
    return graph


def supervisor_graph(
    tiers: TierSet,
    *,
    supervisor_tier: str,
    workers: Mapping[str, Route],
    max_turns: int = 4,
) -> StateGraph[GraphState]:
    """``supervisor`` picks a worker (or ``FINISH``) after each worker's answer."""
    tier = tiers[supervisor_tier]
    names = (*workers, "FINISH")
    choice: Any = Literal[names]
    decision_type = create_model(
        "SupervisorDecision", next=(choice, Field(description="Who acts next."))
    )
    listing = "\n".join(f"- {n}: {r.description}" for n, r in workers.items())

    @trace_agent("supervisor", tier, kind="supervisor")
    async def supervise(state: GraphState) -> dict[str, Any]:
        started = time.perf_counter()
        turns = sum(1 for s in state.get("steps", []) if s.get("node") == "supervisor")
        emit("node_started", node="supervisor", tier=tier.name)
        answered = any(isinstance(m, AIMessage) and m.name in workers for m in _this_run(state))
        if turns >= max_turns:
            return {"route": "FINISH" if answered else next(iter(workers))}
        prompt = [
            SystemMessage(
                "You coordinate workers. Pick who should act next, or FINISH when the "
                f"request is fully answered.\nWorkers:\n{listing}\nReply with JSON."
            ),
            *state.get("messages", []),
        ]
        try:
            result = await tier.acall(
                prompt, output_type=decision_type, sensitive=bool(state.get("sensitive"))
            )
        except TierExhausted as exc:
            step = degraded_step("supervisor", tier.name, exc.attempts, started)
            route = "FINISH" if answered else next(iter(workers))
        else:
            step = step_from_result("supervisor", tier.name, result, started)
            route = str(result.parsed.next)
            if route == "FINISH" and not answered:
                route = next(iter(workers))  # never finish without any answer
        emit("node_finished", node="supervisor", tier=tier.name, route=route)
        return {"route": route, "steps": [step.model_dump()]}

    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_node("supervisor", supervise)
    targets: dict[Hashable, str] = {
        n: add_agent(graph, r.agent, tiers, then="supervisor") for n, r in workers.items()
    }
    graph.add_edge(START, "supervisor")
    graph.add_conditional_edges("supervisor", lambda s: s["route"], {**targets, "FINISH": END})
    return graph


def _this_run(state: GraphState) -> list[Any]:
    messages = list(state.get("messages", []))
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage) and messages[i].name is None:
            return messages[i + 1 :]
    return messages
