"""The default graph behind ``tierflow ask``: a router on the router tier sends the
question to one specialist on the reasoning tier."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from tierflow.agents import Agent, agent_node
from tierflow.graphs.router import router_node
from tierflow.state import GraphState
from tierflow.tiers import TierSet

_STYLE = "Answer concisely and accurately. If you are unsure, say so."

SPECIALISTS: dict[str, tuple[str, Agent]] = {
    "general": (
        "general knowledge, explanations, advice, writing and anything else",
        Agent(name="generalist", tier="reasoning", instructions=f"You are helpful. {_STYLE}"),
    ),
    "code": (
        "programming: writing, explaining, reviewing or debugging code",
        Agent(
            name="coder",
            tier="reasoning",
            instructions=f"You are a senior software engineer. Show code when useful. {_STYLE}",
        ),
    ),
    "data": (
        "numbers, calculations, statistics, SQL and questions about business data",
        Agent(
            name="analyst",
            tier="reasoning",
            instructions=f"You are a careful data analyst. Show your working. {_STYLE}",
        ),
    ),
}


def build_default_graph(tiers: TierSet) -> StateGraph[Any]:
    """router -> one of generalist / coder / analyst -> END."""
    graph: StateGraph[Any] = StateGraph(GraphState)
    routes = {route: desc for route, (desc, _) in SPECIALISTS.items()}
    graph.add_node("router", router_node(routes, tiers=tiers, tier="router"))
    for _, agent in SPECIALISTS.values():
        graph.add_node(agent.name, agent_node(agent, tiers))
        graph.add_edge(agent.name, END)
    graph.add_edge(START, "router")
    graph.add_conditional_edges(
        "router",
        lambda state: state["route"],
        {route: agent.name for route, (_, agent) in SPECIALISTS.items()},
    )
    return graph


def build_direct_graph(tiers: TierSet) -> StateGraph[Any]:
    """No router: the question goes straight to the generalist on the reasoning tier."""
    graph: StateGraph[Any] = StateGraph(GraphState)
    agent = SPECIALISTS["general"][1]
    graph.add_node(agent.name, agent_node(agent, tiers))
    graph.add_edge(START, agent.name)
    graph.add_edge(agent.name, END)
    return graph
