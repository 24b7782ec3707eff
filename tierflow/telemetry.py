"""Tracing entry points.

Each run is one trace; its id is the run record's ``trace_id``. If the application already
installed an OpenTelemetry ``TracerProvider`` tierflow uses it; otherwise it installs an SDK
provider with no exporter, so trace ids are real and nothing leaves the process. Exporters
(OTLP), GenAI semantic-convention spans and metrics build on this module.
"""

from __future__ import annotations

import os
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_lock = threading.Lock()
_installed = False


def tracer() -> trace.Tracer:
    """The tierflow tracer, installing a default SDK provider on first use if none is set."""
    global _installed
    with _lock:
        if not _installed:
            current = trace.get_tracer_provider()
            # The API's default is a proxy that records nothing and yields all-zero ids.
            if type(current).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
                # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our default name.
                attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "tierflow"}
                trace.set_tracer_provider(TracerProvider(resource=Resource.create(attrs)))
            _installed = True
    return trace.get_tracer("tierflow")


def format_trace_id(span: trace.Span) -> str:
    return trace.format_trace_id(span.get_span_context().trace_id)
