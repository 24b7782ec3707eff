"""Graph composition on LangGraph: the router node, ready-made shapes, named graphs, and
the run stages every compiled graph carries (:func:`compile_graph`, :func:`graph`).

Layer: may import agents and everything below (guardrails, tools, models, resilience,
telemetry, core); only drivers (runner, cli, server, ui, bench) import it.
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
