"""The agent spec: configuration only; :func:`tierflow.agents.agent_node` runs it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Agent:
    """A model-backed node: who it is, what it is told, and which tier it runs on.

    Example::

        analyst = Agent(name="analyst", instructions="Answer with numbers.", tier="reasoning")
    """

    name: str
    instructions: str
    tier: str
    local_only: bool = False  # residency: never send this agent's input to a hosted backend

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("an agent needs a non-empty name")
