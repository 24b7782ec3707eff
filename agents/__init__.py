"""Agents: a typed spec (configuration only) and the graph nodes that run one.
Layer: agents; may import only guardrails, tools, models, resilience, telemetry and the core.
"""

from tierflow.agents.agent import Agent, AgentLimits
from tierflow.agents.node import add_agent, agent_node, tools_node

__all__ = ["Agent", "AgentLimits", "add_agent", "agent_node", "tools_node"]
