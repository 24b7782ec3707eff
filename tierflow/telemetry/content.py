"""Content capture: what a span may say about prompts, tool arguments and results.

Off by default: spans carry names, ids, models, token counts and outcomes, never what a
user or a model wrote. A run captures content when ``telemetry.capture_content`` is set in
its settings, or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (the variable the
OpenTelemetry GenAI instrumentations read) is true. Captured text always passes through
the redactor first: :func:`redact` (the guardrails' secret and PII detection) unless an
application installs its own with :func:`set_redactor`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage

    from tierflow.settings import TierflowSettings

Redactor = Callable[[str], str]

#: Longest text kept in one captured part; spans are not a log store.
MAX_TEXT_CHARS = 4096

_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_ON = {"1", "true", "yes", "span_only", "span_and_event"}

_capture: ContextVar[bool | None] = ContextVar("tierflow_capture_content", default=None)


WITHHELD = "[content withheld: no redactor installed]"


def _withhold(text: str) -> str:
    return WITHHELD


#: The default redactor: the guardrails' secret and PII masking, registered by
#: ``tierflow.guardrails.runtime`` when it is imported (telemetry sits below the guardrails
#: and never imports them). Until one is registered, captured text is withheld whole.
_default: Redactor = _withhold
_redactor: Redactor | None = None  # an application's own, over the default


def redact(text: str) -> str:
    """Mask secrets and validated PII in ``text`` as the guardrails do (``<KIND_n>``
    placeholders), or withhold it whole if no redactor is registered (fail closed)."""
    return _default(text)


def set_default_redactor(redactor: Redactor) -> None:
    """Register the default redactor (done by the guardrails package)."""
    global _default
    _default = redactor


def set_redactor(redactor: Redactor | None) -> None:
    """Use ``redactor`` for everything telemetry captures (``None``: back to the default).

    The hook for an application's own masking; by default spans and guardrails mask the
    same way.
    """
    global _redactor
    _redactor = redactor


def scrub(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` through the redactor, cut at ``limit`` characters."""
    cleaned = (_redactor or _default)(text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…[truncated]"


def capture_setting(settings: TierflowSettings | None) -> bool:
    """Whether a run with ``settings`` captures content (see the module docstring)."""
    configured = getattr(getattr(settings, "telemetry", None), "capture_content", None)
    if isinstance(configured, bool) and configured:
        return True
    return os.environ.get(_ENV, "").strip().lower() in _ON


def capturing() -> bool:
    """Whether content is captured here: the run's choice, else the environment's."""
    value = _capture.get()
    return capture_setting(None) if value is None else value


@contextmanager
def capture_scope(enabled: bool) -> Iterator[None]:
    """Capture (or not) for the code running inside, including tasks it starts."""
    token = _capture.set(enabled)
    try:
        yield
    finally:
        _capture.reset(token)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content
            if isinstance(part, str | Mapping)
        )
    return str(content)


def scrub_value(value: Any) -> Any:
    """A JSON-like value with every string redacted (tool arguments, structured results)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v) for v in value]
    return value


def _parts(message: BaseMessage) -> list[dict[str, Any]]:
    from langchain_core.messages import AIMessage, ToolMessage

    text = _text(message.content)
    if isinstance(message, ToolMessage):
        return [{"type": "tool_call_response", "id": message.tool_call_id, "result": scrub(text)}]
    parts: list[dict[str, Any]] = [{"type": "text", "content": scrub(text)}] if text else []
    if isinstance(message, AIMessage):
        parts += [
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": call["name"],
                "arguments": scrub_value(call.get("args", {})),
            }
            for call in message.tool_calls
        ]
    return parts


_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def input_messages(messages: Sequence[BaseMessage]) -> str:
    """``gen_ai.input.messages`` (the GenAI JSON schema), redacted."""
    return json.dumps(
        [{"role": _ROLES.get(m.type, m.type), "parts": _parts(m)} for m in messages],
        ensure_ascii=False,
        default=str,
    )


def output_messages(message: AIMessage) -> str:
    """``gen_ai.output.messages`` for one answer, redacted."""
    finish = message.response_metadata.get("finish_reason")
    entry: dict[str, Any] = {"role": "assistant", "parts": _parts(message)}
    if finish:
        entry["finish_reason"] = str(finish)
    return json.dumps([entry], ensure_ascii=False, default=str)


def json_text(value: Any) -> str:
    """A redacted JSON rendering of a tool's arguments or output."""
    if isinstance(value, str):
        return scrub(value)
    return json.dumps(scrub_value(value), ensure_ascii=False, default=str)
