"""A support-triage graph: billing stays on local backends, tech may use hosted ones."""

import asyncio

from langgraph.graph import END, START, StateGraph

from tierflow import Agent, GraphState, Runner, TierSet, agent_node, register_graph, router_node


def triage_graph(tiers: TierSet) -> StateGraph[GraphState]:
    routes = {"billing": "invoices, refunds, payments", "tech": "bugs, errors, outages"}
    billing = Agent(
        name="billing",
        tier="reasoning",
        local_only=True,
        instructions="You resolve billing questions. Never invent amounts.",
    )
    tech = Agent(name="tech", tier="reasoning", instructions="You are a support engineer.")
    graph = StateGraph(GraphState)
    graph.add_node("router", router_node(routes, tiers=tiers))  # router tier, constrained
    for agent in (billing, tech):
        graph.add_node(agent.name, agent_node(agent, tiers))
        graph.add_edge(agent.name, END)
    graph.add_edge(START, "router")
    graph.add_conditional_edges("router", lambda s: s["route"], {r: r for r in routes})
    return graph


if __name__ == "__main__":
    register_graph("triage", triage_graph)
    record = asyncio.run(Runner().ask("I was charged twice this month", graph="triage"))
    print(record.route, record.steps[-1].backend, record.answer)
