"""tierflow: the public API (lazy re-exports), the core modules and the packages of layers.
Layer: the root, outside the layers: it may name any layer, and imports none when loaded.

Agent graphs whose nodes are bound to model tiers: small local models route and handle
sensitive work; large hosted models reason. The public surface is re-exported here lazily
(PEP 562): ``import tierflow`` loads almost nothing, and each name imports its module on
first use, as ``langgraph`` does.

The layers, top to bottom; each may import only those below it (pyproject.toml
``[tool.importlinter]``, checked by ``make layers``); ``a | b`` share a layer and must not
import each other::

    cli | ui  >  bench  >  runner | testing  >  graphs  >  agents  >  guardrails  >  tools
    >  models  >  resilience  >  telemetry  >  the core

The core is the modules of this package, themselves layered: ``state`` > ``budget`` >
``settings`` > ``errors`` > ``record``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Agent": "tierflow.agents.agent",
    "AgentLimits": "tierflow.agents.agent",
    "add_agent": "tierflow.agents.node",
    "agent_node": "tierflow.agents.node",
    "tools_node": "tierflow.agents.node",
    "Backend": "tierflow.models.backends",
    "BackendState": "tierflow.models.backends",
    "BackendStatus": "tierflow.models.backends",
    "build_backend": "tierflow.models.backends",
    "BackendUnavailable": "tierflow.errors",
    "ConfigError": "tierflow.errors",
    "LocalModelError": "tierflow.errors",
    "RunError": "tierflow.errors",
    "TierExhausted": "tierflow.errors",
    "TierflowError": "tierflow.errors",
    "UnknownGraph": "tierflow.errors",
    "UserError": "tierflow.errors",
    "BuildContext": "tierflow.graphs.context",
    "GraphState": "tierflow.state",
    "Plan": "tierflow.graphs.builder",
    "Route": "tierflow.graphs.builder",
    "planner_graph": "tierflow.graphs.builder",
    "router_graph": "tierflow.graphs.builder",
    "supervisor_graph": "tierflow.graphs.builder",
    "register_graph": "tierflow.graphs.registry",
    "router_node": "tierflow.graphs.router",
    "Attempt": "tierflow.record",
    "RunRecord": "tierflow.record",
    "Step": "tierflow.record",
    "Usage": "tierflow.record",
    "Runner": "tierflow.runner.runner",
    "run_record": "tierflow.runner.record",
    "graph": "tierflow.graphs.compiled",
    "compile_graph": "tierflow.graphs.stages",
    "RunPolicy": "tierflow.agents.policy",
    "ModelStep": "tierflow.agents.step",
    "BackendKind": "tierflow.settings",
    "BackendRef": "tierflow.settings",
    "TierflowSettings": "tierflow.settings",
    "load_settings": "tierflow.settings",
    "Tier": "tierflow.models.tiers",
    "TierResult": "tierflow.models.tiers",
    "TierSet": "tierflow.models.tiers",
    "Tool": "tierflow.tools.tool",
    "ToolContext": "tierflow.tools.tool",
    "ToolError": "tierflow.tools.tool",
    "ToolOutcome": "tierflow.tools.tool",
    "ToolPolicy": "tierflow.tools.tool",
    "tool": "tierflow.tools.tool",
}

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
    "ModelStep",
    "Plan",
    "Route",
    "RunError",
    "RunPolicy",
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
    "compile_graph",
    "graph",
    "load_settings",
    "planner_graph",
    "register_graph",
    "router_graph",
    "router_node",
    "run_record",
    "supervisor_graph",
    "tool",
    "tools_node",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tierflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from tierflow.agents.agent import Agent, AgentLimits
    from tierflow.agents.node import add_agent, agent_node, tools_node
    from tierflow.agents.policy import RunPolicy
    from tierflow.agents.step import ModelStep
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
    from tierflow.graphs.builder import (
        Plan,
        Route,
        planner_graph,
        router_graph,
        supervisor_graph,
    )
    from tierflow.graphs.compiled import graph
    from tierflow.graphs.context import BuildContext
    from tierflow.graphs.registry import register_graph
    from tierflow.graphs.router import router_node
    from tierflow.graphs.stages import compile_graph
    from tierflow.models.backends import Backend, BackendState, BackendStatus, build_backend
    from tierflow.models.tiers import Tier, TierResult, TierSet
    from tierflow.record import Attempt, RunRecord, Step, Usage
    from tierflow.runner.record import run_record
    from tierflow.runner.runner import Runner
    from tierflow.settings import BackendKind, BackendRef, TierflowSettings, load_settings
    from tierflow.state import GraphState
    from tierflow.tools.tool import (
        Tool,
        ToolContext,
        ToolError,
        ToolOutcome,
        ToolPolicy,
        tool,
    )
