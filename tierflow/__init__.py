"""tierflow: agent graphs whose nodes are bound to model tiers.

Small local models route and handle sensitive work; large hosted models reason. The
public surface is re-exported here; everything else is an implementation detail.
"""

from tierflow.agents import Agent, agent_node
from tierflow.backends import Backend, BackendState, BackendStatus, build_backend
from tierflow.errors import (
    BackendFailed,
    BackendUnavailable,
    ConfigError,
    LocalModelError,
    RunError,
    TierExhausted,
    TierflowError,
    UnknownGraph,
    UserError,
)
from tierflow.graphs import GraphState, register_graph, router_node
from tierflow.record import Attempt, RunRecord, Step, Usage
from tierflow.run import Runner
from tierflow.settings import BackendKind, BackendRef, TierflowSettings, load_settings
from tierflow.tiers import Tier, TierResult, TierSet

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Attempt",
    "Backend",
    "BackendFailed",
    "BackendKind",
    "BackendRef",
    "BackendState",
    "BackendStatus",
    "BackendUnavailable",
    "ConfigError",
    "GraphState",
    "LocalModelError",
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
    "UnknownGraph",
    "Usage",
    "UserError",
    "agent_node",
    "build_backend",
    "load_settings",
    "register_graph",
    "router_node",
]
