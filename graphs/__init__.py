"""Graph composition on LangGraph: the router node, ready-made shapes, named graphs."""

from tierflow.graphs.builder import Plan, Route, planner_graph, router_graph, supervisor_graph
from tierflow.graphs.context import BuildContext, GraphFactory
from tierflow.graphs.registry import (
    get_graph,
    graph_names,
    register_graph,
)
from tierflow.graphs.router import router_node
from tierflow.state import GraphState

__all__ = [
    "BuildContext",
    "GraphFactory",
    "GraphState",
    "Plan",
    "Route",
    "get_graph",
    "graph_names",
    "planner_graph",
    "register_graph",
    "router_graph",
    "router_node",
    "supervisor_graph",
]
