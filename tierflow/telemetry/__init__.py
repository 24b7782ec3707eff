"""Tracing and metrics: one OpenTelemetry trace per run, GenAI semantic-convention spans.
Layer: telemetry; may import only the core (state, budget, settings, errors, record).

A run is a tree an SRE can open in Jaeger::

    invoke_workflow default                      (the run; trace id = RunRecord.trace_id)
    ├── invoke_agent router                      (a node: agent, router, planner, supervisor)
    │   └── chat router-model                    (one model call, CLIENT, tokens)
    ├── invoke_agent analyst                     (fallback events: from, to, reason)
    │   └── chat big-model
    ├── execute_tool sql_query                   (one per tool call; parallel calls are siblings)
    └── invoke_agent analyst
        └── chat big-model

Set-up follows the standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf`` or ``grpc``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``...). With no endpoint nothing is
exported and nothing touches the network; a provider the application set (before or
after tierflow's first span, a no-op one included) is used as is, and tierflow never sets
the global providers. ``[telemetry] enabled = false`` turns tierflow's spans and metrics
off for a run (:func:`recording` does it for any code). Prompts, tool arguments and
results are never recorded unless content capture is on, and then only after redaction
(:func:`set_redactor`).

Tests and benchmarks route tierflow's telemetry to their own providers with
:func:`use_providers`, without touching global state.
"""

from __future__ import annotations

from opentelemetry import trace

from tierflow.telemetry.content import (
    capture_setting,
    capturing,
    redact,
    set_default_redactor,
    set_redactor,
)
from tierflow.telemetry.metrics import instruments
from tierflow.telemetry.resilience import record_breaker, record_retry
from tierflow.telemetry.setup import (
    export_readers,
    meter,
    metering,
    recording,
    setup,
    shutdown,
    tracer,
    use_providers,
)
from tierflow.telemetry.spans import (
    conversation_id,
    finish_workflow,
    trace_agent,
    trace_fallback,
    traced_chat,
    workflow_span,
)
from tierflow.telemetry.tools import (
    RETRIEVAL_TOOLS,
    GuardrailTrace,
    RetrievalTrace,
    guardrail_span,
    retrieval_span,
    trace_tool_call,
)

__all__ = [
    "RETRIEVAL_TOOLS",
    "GuardrailTrace",
    "RetrievalTrace",
    "capture_setting",
    "capturing",
    "conversation_id",
    "export_readers",
    "finish_workflow",
    "format_trace_id",
    "guardrail_span",
    "instruments",
    "meter",
    "metering",
    "record_breaker",
    "record_retry",
    "recording",
    "redact",
    "retrieval_span",
    "set_default_redactor",
    "set_redactor",
    "setup",
    "shutdown",
    "trace_agent",
    "trace_fallback",
    "trace_tool_call",
    "traced_chat",
    "tracer",
    "use_providers",
    "workflow_span",
]


def format_trace_id(span: trace.Span) -> str:
    """The span's trace id as the 32 hex digits Jaeger and ``ask --json`` show."""
    return trace.format_trace_id(span.get_span_context().trace_id)
