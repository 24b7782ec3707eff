"""Agents: a typed spec (configuration only) and the graph node that runs one."""

from tierflow.agents.agent import Agent
from tierflow.agents.node import agent_node

__all__ = ["Agent", "agent_node"]
