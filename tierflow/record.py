"""The run record: what ``tierflow ask --json`` prints and what the console shows.

Field names are a contract (DESIGN.md); add fields, never rename them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attempt(_Record):
    """One backend of a tier chain, tried or skipped, and why.

    One attempt covers every request to that backend for this call: ``retries`` counts the
    extra requests, with the reason and the wait before each. ``breaker_open``: skipped
    without any network I/O, because the backend's circuit breaker is open (or half-open
    with its single probe already in flight). ``partial``: a streamed answer broke and no
    backend was left, so the call ended with the text received so far.
    """

    backend: str
    outcome: Literal["ok", "unavailable", "failed", "skipped", "breaker_open", "partial"]
    reason: str | None = None  # the last error (retries: see retry_reasons)
    error_type: str | None = None
    duration_ms: float | None = None
    #: The class of the last error (tierflow.resilience.FailureKind): connect, timeout,
    #: dropped, rate_limited, server, auth, client, invalid_response, error; or
    #: invalid_output (the model answered, but not in the required shape).
    failure: str | None = None
    status_code: int | None = None  # HTTP status of the last error, if any
    retries: int = 0
    retry_reasons: list[str] = Field(default_factory=list)  # the error before each retry
    retry_delays_s: list[float] = Field(default_factory=list)  # the wait before each retry
    #: Why the chain moved on from this backend (e.g. "not retryable", "retries spent").
    gave_up: str | None = None
    #: The backend's breaker state after this attempt, when the attempt changed it.
    breaker: str | None = None

    def summary(self) -> str:
        """The reason on one line, with the retries before it (for error messages)."""
        text = self.reason or self.outcome
        if self.retry_reasons:
            earlier = "; ".join(dict.fromkeys(self.retry_reasons))  # distinct, in order
            plural = "y" if len(self.retry_reasons) == 1 else "ies"
            text += f" (after {len(self.retry_reasons)} retr{plural}: {earlier})"
        return text


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
    #: The configured alternative tool that answered when this one was unavailable.
    answered_by: str | None = None


class Step(_Record):
    """One model-backed node execution."""

    node: str
    #: What the node does: ``agent`` steps answer; a degraded ``router``, ``planner`` or
    #: ``supervisor`` step only changes how the run was steered, not the answer.
    kind: Literal["agent", "router", "planner", "supervisor"] = "agent"
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
    #: The answer is what a broken stream delivered before it broke (no backend was left);
    #: set from the attempts, and such a step is always degraded.
    partial: bool = False
    #: Every number of the answer appears in a tool result of this run (or was printed by
    #: code that ran): ``True``; ``False``: some did not, even after one repair turn, and
    #: the answer says so; ``None``: not checked (no tools, or not an answer).
    verified: bool | None = None

    def model_post_init(self, context: Any, /) -> None:
        if any(a.outcome == "partial" for a in self.attempts):
            self.partial = True
            self.degraded = True


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
    #: ``blocked``: an input guardrail refused the question (no model or tool ran).
    #: ``stopped``: a budget (model calls, tokens, cost, wall time) ended the run early;
    #: ``answer`` is its partial result and ``tierflow ask --thread ID`` continues it.
    status: Literal["completed", "awaiting_approval", "blocked", "stopped"] = "completed"
    #: With status awaiting_approval: the tool calls waiting for a human decision.
    pending_approval: list[Any] = Field(default_factory=list)
    #: With status stopped: why, e.g. ``budget exceeded: model_calls 10 of 10``.
    stopped_reason: str | None = None
    degraded: bool
    #: ``False`` when an agent step's answer holds numbers no tool result of the run
    #: supports (the answer is marked unverified); see ``Step.verified``.
    verified: bool = True
    steps: list[Step]
    guardrails: list[GuardrailVerdict] = Field(default_factory=list)
    #: Residency: the thread holds sensitive data, so only local backends were used for it.
    sensitive: bool = False
    usage: Usage
    trace_url: str | None = None
