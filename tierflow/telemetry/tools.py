"""Spans for tool calls, retrieval and guardrail stages.

- ``execute_tool {tool}``: one per tool call. Parallel calls of one round run as sibling
  tasks (``asyncio.gather``), each with a copy of the context, so each span has the same
  parent and the same trace.
- ``retrieval {source}``: inside the tool span of a retrieval tool (by name, see
  :data:`RETRIEVAL_TOOLS`), or opened by a retriever itself with :func:`retrieval_span`.
- ``apply_guardrail {stage}``: one per guardrail stage, a ``gen_ai.guardrail.result`` event
  per verdict (for the guardrails layer).

Tool arguments, results and retrieval queries are content: captured (redacted) only when
content capture is on.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tierflow.telemetry import content as content
from tierflow.telemetry import metrics as meters
from tierflow.telemetry.shapes import AgentLike
from tierflow.telemetry.spans import (
    AGENT_NAME,
    ERROR_TYPE,
    OPERATION,
    PROVIDER,
    Attrs,
    quiet,
    span,
)

ToolFnT = TypeVar("ToolFnT", bound=Callable[..., Awaitable[Any]])

#: Tools whose calls also get a ``retrieval`` span (the built-in one is ``retrieve``).
RETRIEVAL_TOOLS: set[str] = {"retrieve"}

_ACTIONS = {"allow": 0, "redact": 1, "block": 2}


def trace_tool_call(agent: AgentLike) -> Callable[[ToolFnT], ToolFnT]:
    """Decorate the coroutine that runs one tool call (a ``ToolCall`` in, a ``ToolMessage``
    out) so the call is an ``execute_tool {tool}`` span; a failed outcome (the tool's
    ``ToolOutcome``, read from the message's artifact) sets error status and type."""

    def wrap(run_call: ToolFnT) -> ToolFnT:
        @functools.wraps(run_call)
        async def run(call: Mapping[str, Any], *rest: Any, **kwargs: Any) -> Any:
            name = str(call["name"])
            attrs: Attrs = {
                OPERATION: "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": str(call.get("id") or ""),
                "gen_ai.tool.type": "function",
                AGENT_NAME: agent.name,
            }
            tool = agent.tool(name)
            if tool is not None and tool.description:
                attrs["gen_ai.tool.description"] = tool.description.strip().splitlines()[0]
            with span(f"execute_tool {name}", SpanKind.INTERNAL, attrs) as current:
                if content.capturing():
                    args = call.get("args") or {}
                    current.set_attribute("gen_ai.tool.call.arguments", content.json_text(args))
                if tool is not None and name in RETRIEVAL_TOOLS:
                    query = (call.get("args") or {}).get("query")
                    with retrieval_span(name, query=str(query) if query else None) as found:
                        message = await run_call(call, *rest, **kwargs)
                        found.documents(_passages(message))
                else:
                    message = await run_call(call, *rest, **kwargs)
                _annotate_outcome(current, message)
                return message

        return cast(ToolFnT, run)

    return wrap


def _outcome(message: Any) -> Mapping[str, Any]:
    artifact = getattr(message, "artifact", None)
    return artifact if isinstance(artifact, Mapping) else {}


_NONE_FOUND: list[Mapping[str, Any]] = []  # never mutated


@quiet(_NONE_FOUND)
def _passages(message: Any) -> list[Mapping[str, Any]]:
    output = _outcome(message).get("output")
    passages = output.get("passages") if isinstance(output, Mapping) else None
    return [p for p in passages if isinstance(p, Mapping)] if isinstance(passages, list) else []


@quiet(None)
def _annotate_outcome(current: Span, message: Any) -> None:
    outcome = _outcome(message)
    if not outcome:
        return
    ok = bool(outcome.get("ok"))
    attrs: Attrs = {
        "tierflow.tool.ok": ok,
        "tierflow.tool.truncated": bool(outcome.get("truncated")),
    }
    if isinstance(outcome.get("duration_ms"), int | float):
        attrs["tierflow.tool.duration_ms"] = float(outcome["duration_ms"])
    current.set_attributes(attrs)
    if content.capturing():
        current.set_attribute("gen_ai.tool.call.result", content.scrub(str(message.content)))
    if not ok:
        error = outcome.get("error") or {}
        kind = str(error.get("type") or "tool_error")
        current.set_attribute(ERROR_TYPE, kind)
        detail = content.scrub(str(error.get("message") or ""), 300)
        current.set_status(Status(StatusCode.ERROR, f"{kind}: {detail}" if detail else kind))


class RetrievalTrace:
    """The open ``retrieval`` span; call :meth:`documents` with what was found."""

    def __init__(self, current: Span) -> None:
        self.span = current

    @quiet(None)
    def documents(self, found: Sequence[Mapping[str, Any]]) -> None:
        """Record how many documents came back and, with capture on, their ids and scores."""
        self.span.set_attribute("tierflow.retrieval.documents", len(found))
        if content.capturing() and found:
            import json

            docs = [
                {
                    "id": content.scrub(
                        f"{d.get('source', d.get('id', ''))}#{d.get('position', '')}"
                    ),
                    "score": d.get("score"),
                }
                for d in found
            ]
            self.span.set_attribute("gen_ai.retrieval.documents", json.dumps(docs, default=str))


@contextmanager
def retrieval_span(data_source: str, *, query: str | None = None) -> Iterator[RetrievalTrace]:
    """A ``retrieval {data_source}`` span; the query text is content (captured if on)."""
    attrs: Attrs = {OPERATION: "retrieval", "gen_ai.data_source.id": data_source}
    with span(f"retrieval {data_source}", SpanKind.INTERNAL, attrs) as current:
        if query and content.capturing():
            current.set_attribute("gen_ai.retrieval.query.text", content.scrub(query))
        yield RetrievalTrace(current)


class GuardrailTrace:
    """The open span of one guardrail stage; report each guardrail's verdict to it."""

    def __init__(self, current: Span, stage: str) -> None:
        self.span = current
        self.stage = stage
        self.action = "allow"

    @quiet(None)
    def verdict(self, name: str, action: str, reason: str | None = None) -> None:
        """Record guardrail ``name``'s ``action`` (allow, redact, block) and why.

        Adds a ``gen_ai.guardrail.result`` event; the span keeps the strongest action
        (block > redact > allow) and which guardrail took it; a block is counted.
        """
        attrs: Attrs = {
            "gen_ai.guardrail.result.type": "action",
            "gen_ai.guardrail.result.value": action,
            "tierflow.guardrail.name": name,
            "tierflow.guardrail.action": action,
        }
        if reason:
            attrs["gen_ai.guardrail.result.reason"] = content.scrub(reason, 500)
        self.span.add_event("gen_ai.guardrail.result", attrs)
        if _ACTIONS.get(action, 0) > _ACTIONS.get(self.action, 0):
            self.action = action
            self.span.set_attributes(
                {"tierflow.guardrail.action": action, "tierflow.guardrail.name": name}
            )
        if action == "block":
            meters.count_guardrail_block(self.stage, name)


@contextmanager
def guardrail_span(stage: str) -> Iterator[GuardrailTrace]:
    """An ``apply_guardrail {stage}`` span around one guardrail stage.

    ``stage`` is ``input``, ``tool_call``, ``tool_result`` or ``output``. A block is a
    verdict, not an error: the span's status stays unset unless the stage itself raises.

    Example::

        with guardrail_span("input") as stage:
            stage.verdict("pii", "redact", "e-mail address")
    """
    attrs: Attrs = {
        OPERATION: "apply_guardrail",
        PROVIDER: "tierflow",
        "gen_ai.guardrail.source": stage,
        "tierflow.guardrail.stage": stage,
        "tierflow.guardrail.action": "allow",
    }
    with span(f"apply_guardrail {stage}", SpanKind.INTERNAL, attrs) as current:
        yield GuardrailTrace(current, stage)
