"""The agent spec: configuration only; :func:`tierflow.agents.add_agent` runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from tierflow.resilience import RetryPolicy
from tierflow.tools.tool import Tool


@dataclass(frozen=True, kw_only=True)
class AgentLimits:
    """Bounds on one agent's work within a run."""

    max_tool_rounds: int = 4  # model turns that may ask for tools before it must answer
    timeout_s: float = 300.0  # for each model turn, across the tier's fallback chain


@dataclass(frozen=True, kw_only=True)
class Agent:
    """A model-backed node: who it is, what it is told, its tier and its tools.

    Example::

        analyst = Agent(
            name="analyst",
            instructions="Answer questions about the shop's data with SQL.",
            tier="reasoning",
            tools=make_sql_tools(settings),
        )
    """

    name: str
    instructions: str
    tier: str
    tools: Sequence[Tool] = ()
    #: Guardrails attached to this agent (input, tool-call, tool-result, output).
    guardrails: Sequence[Any] = ()
    #: If set, the final answer must validate as this model (one repair attempt).
    output_type: type[BaseModel] | None = None
    #: Residency: never send this agent's conversation to a backend not marked local.
    local_only: bool = False
    #: "required_first": the first turn of each run must call a tool (then the model may
    #: answer). Small models otherwise tend to answer from memory without looking.
    tool_choice: Literal["auto", "required_first"] = "auto"
    limits: AgentLimits = field(default_factory=AgentLimits)
    #: Retry policy of this node's model calls, over its tier's and backends' (resilience).
    retry: RetryPolicy | None = None
    #: Fixed steps to follow instead of the free tool loop when the backend that answers
    #: is small (``constrained`` tool mode: ``local`` and ``vllm`` by default); hosted
    #: backends keep the loop. An async callable taking a
    #: :class:`tierflow.agents.workflow.WorkflowRun` and returning the answer text; the
    #: ready-made ones are in :mod:`tierflow.agents.specialists` (``SqlWorkflow``,
    #: ``CodeWorkflow``, ``DocsWorkflow``, ``WebWorkflow``). Example::
    #:
    #:     Agent(name="analyst", tier="reasoning", tools=sql_tools, instructions="...",
    #:           workflow=SqlWorkflow())
    workflow: Callable[[Any], Awaitable[str]] | None = None

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.name.replace("_", "a").replace("-", "a").isalnum():
            raise ValueError(f"agent name {self.name!r}: use letters, digits, '-' and '_'")
        object.__setattr__(self, "tools", tuple(self.tools))
        object.__setattr__(self, "guardrails", tuple(self.guardrails))
        names = [t.name for t in self.tools]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"agent {self.name!r}: duplicate tool names {sorted(duplicates)}")
        if self.limits.max_tool_rounds < 0:
            raise ValueError("max_tool_rounds must be >= 0")

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)
