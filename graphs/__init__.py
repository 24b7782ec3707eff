"""Graphs on LangGraph: the router node, ready-made shapes, named graphs, the run stages.
Layer: graphs; may import agents and every layer below it; only runner, testing and up use it.

Every compiled graph carries its run stages (:func:`compile_graph`, :func:`graph`).
"""

from tierflow.graphs.builder import (
    Plan,
    PlannerState,
    Route,
    planner_graph,
    router_graph,
    supervisor_graph,
)
from tierflow.graphs.compiled import graph
from tierflow.graphs.context import BuildContext, GraphFactory
from tierflow.graphs.registry import GraphEntry, get_graph, graph_names, register_graph
from tierflow.graphs.router import router_node
from tierflow.graphs.stages import compile_graph, with_run_stages
from tierflow.state import GraphState

__all__ = [
    "BuildContext",
    "GraphEntry",
    "GraphFactory",
    "GraphState",
    "Plan",
    "PlannerState",
    "Route",
    "compile_graph",
    "get_graph",
    "graph",
    "graph_names",
    "planner_graph",
    "register_graph",
    "router_graph",
    "router_node",
    "supervisor_graph",
    "with_run_stages",
]
