"""Span events for the resilience layer: retries of one backend, circuit breakers.

Retries and breaker changes are events on the span current when they happen (a model
call's, or the agent turn's), not spans of their own; a breaker opening is also counted
(``tierflow.breaker.openings``).
"""

from __future__ import annotations

from opentelemetry import trace

from tierflow.telemetry import content as content
from tierflow.telemetry import metrics as meters
from tierflow.telemetry.spans import Attrs, quiet


@quiet(None)
def record_retry(backend: str, attempt: int, reason: str, delay_s: float) -> None:
    """A ``tierflow.retry`` event on the current span (for the retry layer)."""
    trace.get_current_span().add_event(
        "tierflow.retry",
        {
            "tierflow.backend": backend,
            "tierflow.retry.attempt": attempt,
            "tierflow.retry.reason": content.scrub(reason, 500),
            "tierflow.retry.delay_s": delay_s,
        },
    )


@quiet(None)
def record_breaker(backend: str, state: str, reason: str | None = None) -> None:
    """A circuit breaker changed state (closed / open / half_open): an event, the state on
    the current span, and a count when it opens (for the resilience layer)."""
    current = trace.get_current_span()
    attrs: Attrs = {"tierflow.backend": backend, "tierflow.breaker.state": state}
    if reason:
        attrs["tierflow.breaker.reason"] = content.scrub(reason, 500)
    current.add_event("tierflow.breaker", attrs)
    current.set_attribute("tierflow.breaker.state", state)
    if state == "open":
        meters.count_breaker_opening(backend)
