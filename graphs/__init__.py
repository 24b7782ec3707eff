"""Graph composition on LangGraph: shared state, the router node, ready-made graphs."""

from tierflow.graphs.registry import get_graph, graph_names, register_graph
from tierflow.graphs.router import router_node
from tierflow.state import GraphState

__all__ = ["GraphState", "get_graph", "graph_names", "register_graph", "router_node"]
