"""Export trouble, said once: one warning line instead of the SDK's retry logs.

The OpenTelemetry SDK reports a failing export on several loggers, a line per retry and
sometimes a traceback. When tierflow installed the exporters, a filter on those loggers
turns all of it into one line on the ``tierflow.telemetry`` logger (which, with logging
unconfigured, Python prints to stderr), at most once every :data:`WARN_EVERY_S`.
"""

from __future__ import annotations

import logging
import re
import threading
import time

log = logging.getLogger("tierflow.telemetry")

#: A failing exporter is reported at most this often (once for a CLI run).
WARN_EVERY_S = 600.0

# Loggers through which the SDK reports export failures (retries, errors, tracebacks).
# A logger's filters only see records logged on that logger, so each is named.
_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
)

_lock = threading.Lock()
_last_warning = 0.0
_endpoint: str | None = None
_quieted = False


def warn(message: str) -> None:
    """One warning line on the ``tierflow.telemetry`` logger (stderr if logging is unset)."""
    log.warning("tierflow: %s", message)


_config_warnings: set[str] = set()


def warn_config(message: str) -> None:
    """A configuration problem, said once even if traces and metrics share it."""
    if message not in _config_warnings:
        _config_warnings.add(message)
        warn(message)


class _ExportTrouble(logging.Filter):
    """Turns the SDK's export warnings (a line per retry, tracebacks) into one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        _report_export_failure(record.getMessage())
        return False


def _report_export_failure(message: str) -> None:
    global _last_warning
    now = time.monotonic()
    with _lock:
        if _last_warning and now - _last_warning < WARN_EVERY_S:
            return
        _last_warning = now
    warn(
        f"cannot export telemetry to {_endpoint or 'the OTLP endpoint'} ({_short(message)}); "
        "runs are not affected"
    )


def _short(message: str) -> str:
    """A few words on why an export failed, from the SDK's (long) log message."""
    lowered = message.lower()
    for needle, short in (
        ("refused", "connection refused"),
        ("unavailable", "unavailable"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("name or service not known", "unknown host"),
        ("deadline_exceeded", "timed out"),
    ):
        if needle in lowered:
            return short
    code = re.search(r"code: (\d{3})", message)
    if code:
        return f"HTTP {code.group(1)}"
    return message.strip().splitlines()[0][:120] if message.strip() else "export failed"


def quiet_export_loggers(endpoint: str | None) -> None:
    """Route the SDK's export warnings through one rate-limited line naming ``endpoint``."""
    global _quieted, _endpoint
    with _lock:
        _endpoint = endpoint
        if _quieted:
            return
        _quieted = True
    trouble = _ExportTrouble()
    for name in _EXPORT_LOGGERS:
        logging.getLogger(name).addFilter(trouble)
