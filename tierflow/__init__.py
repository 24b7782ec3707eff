"""tierflow: agent graphs whose nodes are bound to model tiers.

Small local models route and handle sensitive work; large hosted models reason. The
public surface is re-exported here; everything else is an implementation detail.
"""

from tierflow.agents import Agent, AgentLimits, add_agent, agent_node, tools_node
from tierflow.backends import Backend, BackendState, BackendStatus, build_backend
from tierflow.errors import (
    BackendUnavailable,
    ConfigError,
    LocalModelError,
    RunError,
    TierExhausted,
    TierflowError,
    UnknownGraph,
    UserError,
)
from tierflow.graphs import (
    BuildContext,
    GraphState,
    Plan,
    Route,
    planner_graph,
    register_graph,
    router_graph,
    router_node,
    supervisor_graph,
)
from tierflow.record import Attempt, RunRecord, Step, Usage
from tierflow.run import Runner
from tierflow.settings import BackendKind, BackendRef, TierflowSettings, load_settings
from tierflow.tiers import Tier, TierResult, TierSet
from tierflow.tools import Tool, ToolContext, ToolError, ToolOutcome, ToolPolicy, tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentLimits",
    "Attempt",
    "Backend",
    "BackendKind",
    "BackendRef",
    "BackendState",
    "BackendStatus",
    "BackendUnavailable",
    "BuildContext",
    "ConfigError",
    "GraphState",
    "LocalModelError",
    "Plan",
    "Route",
    "RunError",
    "RunRecord",
    "Runner",
    "Step",
    "Tier",
    "TierExhausted",
    "TierResult",
    "TierSet",
    "TierflowError",
    "TierflowSettings",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolOutcome",
    "ToolPolicy",
    "UnknownGraph",
    "Usage",
    "UserError",
    "add_agent",
    "agent_node",
    "build_backend",
    "load_settings",
    "planner_graph",
    "register_graph",
    "router_graph",
    "router_node",
    "supervisor_graph",
    "tool",
    "tools_node",
]
