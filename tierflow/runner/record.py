"""From a graph's final state to the :class:`~tierflow.record.RunRecord` (the ``ask --json``
contract). Everything it reads is in the state, so a graph invoked with plain LangGraph
gets the same record::

    state = await graph.ainvoke({"messages": [("user", q)]}, config)
    record = tierflow.run_record(state, thread_id=config["configurable"]["thread_id"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from tierflow.guardrails.runtime import input_refusal
from tierflow.record import GuardrailVerdict, RunRecord, Step, Usage
from tierflow.settings import TierflowSettings
from tierflow.state import run_messages


def partial_answer(messages: Sequence[BaseMessage]) -> str:
    """The last answer-like message of the run (text, no tool calls), or ''."""
    for message in reversed(messages):
        if isinstance(message, AIMessage) and not message.tool_calls:
            text = str(message.content)
            if text.strip():
                return text
    return ""


def run_record(
    state: Mapping[str, Any],
    *,
    trace_id: str = "",
    thread_id: str = "",
    settings: TierflowSettings | None = None,
    pending: Sequence[Any] = (),
    stopped: str | None = None,
) -> RunRecord:
    """The run record of the run whose final (or last saved) ``state`` this is.

    ``pending`` are the values of the interrupts the run waits on (approvals); ``stopped``
    is why a budget stopped it, if one did.
    """
    verdicts = [GuardrailVerdict.model_validate(v) for v in state.get("guardrails") or []]
    sensitive = bool(state.get("sensitive"))
    # No link for a run that was not traced.
    traced = settings is not None and settings.telemetry.enabled
    jaeger = settings.telemetry.jaeger_ui_url if traced and settings is not None else None
    trace_url = f"{jaeger.rstrip('/')}/trace/{trace_id}" if jaeger and trace_id else None
    if state.get("blocked") is not None:
        return RunRecord(
            answer=input_refusal(state.get("blocked")),
            route=None,
            trace_id=trace_id,
            thread_id=thread_id,
            status="blocked",
            degraded=False,
            steps=[],
            guardrails=verdicts,
            sensitive=sensitive,
            usage=Usage(),
            trace_url=trace_url,
        )
    steps = [Step.model_validate(s) for s in state.get("steps") or []]
    messages = run_messages(state)
    outcomes = {
        m.tool_call_id: m.artifact
        for m in messages
        if isinstance(m, ToolMessage) and isinstance(m.artifact, dict)
    }
    for step in steps:
        for call in step.tool_calls:
            outcome = outcomes.get(call.id)
            if outcome is not None:
                call.ok = bool(outcome.get("ok"))
                error = outcome.get("error") or {}
                call.error = f"{error.get('type')}: {error.get('message')}" if error else None
                call.duration_ms = outcome.get("duration_ms")
                call.answered_by = outcome.get("answered_by")
    answer = ""
    last = messages[-1] if messages else None
    if stopped is not None:
        answer = partial_answer(messages[1:])
    elif isinstance(last, AIMessage) and not last.tool_calls:
        answer = str(last.content)
    waiting = bool(pending)
    return RunRecord(
        answer=answer,
        route=state.get("route"),
        trace_id=trace_id,
        thread_id=thread_id,
        status="stopped" if stopped else "awaiting_approval" if waiting else "completed",
        pending_approval=list(pending),
        stopped_reason=stopped,
        degraded=stopped is not None
        or (not waiting and (any(s.degraded for s in steps if s.kind == "agent") or not answer)),
        verified=all(s.verified is not False for s in steps if s.kind == "agent"),
        steps=steps,
        guardrails=verdicts,
        sensitive=sensitive,
        usage=sum((s.usage for s in steps), Usage()),
        trace_url=trace_url,
    )
