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

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field, create_model

from tierflow.agents import Agent, add_agent
from tierflow.agents.step import ModelStep
from tierflow.graphs.keywords import KeywordRouter
from tierflow.graphs.router import router_node
from tierflow.graphs.semantic import SemanticRouter
from tierflow.models.embeddings import Embedder
from tierflow.models.tiers import TierSet
from tierflow.record import Attempt, Step
from tierflow.state import GraphState, run_messages, run_question
from tierflow.telemetry import trace_agent


@dataclass(frozen=True, kw_only=True)
class Route:
    """A route of a router graph: when to take it, and the agent that answers."""

    description: str
    agent: Agent
    #: A few example requests for this route; with an embedder they drive semantic routing.
    examples: Sequence[str] = ()
    #: Cue regexes (any language) that decide the route before any model when this route
    #: gets the most hits; ``strong_keywords`` (e.g. "search the web") count three.
    keywords: Sequence[str] = ()
    strong_keywords: Sequence[str] = ()


def router_graph(
    tiers: TierSet,
    routes: Mapping[str, Route],
    *,
    router_tier: str = "router",
    default: str | None = None,
    embedder: Embedder | None = None,
    margin: float = 0.03,
    name: str = "router",
) -> StateGraph[GraphState]:
    """``router`` (or ``name``) -> one route's agent (with its tool loop) -> END.

    With an ``embedder``, routes are first matched semantically against their description
    and examples (see :mod:`tierflow.graphs.semantic`); the router tier decides the rest.
    """
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    descriptions = {name: r.description for name, r in routes.items()}
    semantic = None
    if embedder is not None and len(routes) > 1:
        texts = {name: [r.description, *r.examples] for name, r in routes.items()}
        semantic = SemanticRouter(embedder, texts, margin=margin)
    cues = {n: (r.keywords, r.strong_keywords) for n, r in routes.items()}
    keywords = KeywordRouter(cues) if any(a or b for a, b in cues.values()) else None
    graph.add_node(
        name,
        router_node(
            descriptions,
            tiers=tiers,
            tier=router_tier,
            default=default,
            semantic=semantic,
            keywords=keywords,
            node=name,
        ),
    )
    targets: dict[Hashable, str] = {n: add_agent(graph, r.agent, tiers) for n, r in routes.items()}
    graph.add_edge(START, name)
    graph.add_conditional_edges(name, lambda s: s["route"], targets)
    return graph


class Plan(BaseModel):
    steps: list[str] = Field(description="Short, concrete steps, in order.", max_length=5)


class PlannerState(GraphState, total=False):
    """A planner graph's state: the core state plus its plan."""

    plan: list[str]  # the step list
    plan_step: int  # index of the next step


def planner_graph(
    tiers: TierSet, *, planner_tier: str, executor: Agent
) -> StateGraph[PlannerState]:
    """``planner`` writes up to 5 steps; ``executor`` does each, then answers."""
    tier = tiers[planner_tier]
    tool_list = ", ".join(t.name for t in executor.tools) or "no tools"

    @trace_agent("planner", tier, kind="planner")
    async def plan(state: PlannerState) -> dict[str, Any]:
        step = ModelStep("planner", tier, state, kind="planner")
        question = run_question(state)
        prompt = [
            SystemMessage(
                "Break the request into at most 5 short steps an assistant with these tools "
                f"can carry out: {tool_list}. Reply with JSON."
            ),
            HumanMessage(question),
        ]
        result = await step.call(prompt, output_type=Plan)
        steps = [question]  # no plan (tier down): do the whole request as one step
        if result is not None:
            steps = [s for s in result.parsed.steps if s.strip()] or [question]
        return step.finish({"plan": steps, "plan_step": 0}, plan=steps)

    def next_step(state: PlannerState) -> dict[str, Any]:
        steps, i = state.get("plan", []), state.get("plan_step", 0)
        if i < len(steps):
            text = f"Step {i + 1} of {len(steps)}: {steps[i]}"
        else:
            text = "All steps are done. Now answer the original request in full."
        return {"messages": [HumanMessage(text, name="planner")], "plan_step": i + 1}

    graph: StateGraph[PlannerState] = StateGraph(PlannerState)
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
        step = ModelStep("supervisor", tier, state, kind="supervisor")
        this_run = run_messages(state)
        turns = sum(1 for s in state.get("steps", []) if s.get("node") == "supervisor")
        answered = any(isinstance(m, AIMessage) and m.name in workers for m in this_run)
        first = next(iter(workers))
        if turns >= max_turns:
            route = "FINISH" if answered else first
            step.skipped(
                Step(
                    node="supervisor",
                    tier=tier.name,
                    backend=None,
                    model=None,
                    attempts=[
                        Attempt(
                            backend="(turns)",
                            outcome="skipped",
                            reason=f"max_turns {max_turns} reached",
                        )
                    ],
                )
            )
            return step.finish({"route": route}, route=route)
        prompt = [
            SystemMessage(
                "You coordinate workers. Pick who should act next, or FINISH when the "
                f"request is fully answered.\nWorkers:\n{listing}\nReply with JSON."
            ),
            *state.get("messages", []),
        ]
        result = await step.call(prompt, output_type=decision_type)
        if result is None:
            route = "FINISH" if answered else first
        else:
            route = str(result.parsed.next)
            if route == "FINISH" and not answered:
                route = first  # never finish without any answer
        return step.finish({"route": route}, route=route)

    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_node("supervisor", supervise)
    targets: dict[Hashable, str] = {
        n: add_agent(graph, r.agent, tiers, then="supervisor") for n, r in workers.items()
    }
    graph.add_edge(START, "supervisor")
    graph.add_conditional_edges("supervisor", lambda s: s["route"], {**targets, "FINISH": END})
    return graph
