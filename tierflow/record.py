"""The run record: what ``tierflow ask --json`` prints and what the console shows.

Field names are a contract (DESIGN.md); add fields, never rename them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attempt(_Record):
    """One backend of a tier chain, tried or skipped, and why."""

    backend: str
    outcome: Literal["ok", "unavailable", "failed", "skipped"]
    reason: str | None = None
    error_type: str | None = None
    duration_ms: float | None = None


class Usage(_Record):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 8),
        )


class ToolCallRecord(_Record):
    """A tool call a model asked for; ``ok``/``error`` are filled in once it ran."""

    id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    ok: bool | None = None
    error: str | None = None
    duration_ms: float | None = None


class Step(_Record):
    """One model-backed node execution."""

    node: str
    tier: str
    backend: str | None
    model: str | None
    fallback_from: str | None = None  # the first backend of the chain, when another answered
    fallback_reason: str | None = None  # why each earlier backend was not used
    attempts: list[Attempt] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    degraded: bool = False
    duration_ms: float = 0.0


class GuardrailVerdict(_Record):
    stage: str
    name: str
    action: Literal["allow", "redact", "block"]
    reason: str | None = None


class RunRecord(_Record):
    """The result of one run. ``answer`` is what the user reads."""

    answer: str
    route: str | None
    trace_id: str
    thread_id: str
    status: Literal["completed", "awaiting_approval"] = "completed"
    #: With status awaiting_approval: the tool calls waiting for a human decision.
    pending_approval: list[Any] = Field(default_factory=list)
    degraded: bool
    steps: list[Step]
    guardrails: list[GuardrailVerdict] = Field(default_factory=list)
    usage: Usage
    trace_url: str | None = None
