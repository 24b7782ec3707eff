"""Which providers tierflow's spans and metrics go to, and the OTLP exporters it installs.

Rules, in order, applied on each use (so they follow changes made after tierflow started):

1. Telemetry switched off for the code running here (:func:`recording`; a run whose
   settings say ``[telemetry] enabled = false``): a no-op tracer and meter. No span, no
   metric, nothing installed, nothing exported.
2. ``metering(provider)`` sends the metrics of the code running inside (tasks it starts
   included) to ``provider``: the server's runs feed its ``/metrics`` this way. Then
   ``use_providers(...)`` (tests, benchmarks, an application wiring its own) wins while it
   is active.
3. A ``TracerProvider`` / ``MeterProvider`` the application set globally, a no-op one
   included, is used as is: tierflow never adds exporters to it, and since tierflow never
   sets the global providers itself, it cannot replace one, even one set after tierflow's
   first span. An application that set only a tracer provider owns telemetry: tierflow then
   exports no metrics of its own.
4. Otherwise tierflow's own SDK ``TracerProvider``, kept private (real trace ids even with
   no exporter) and, only when the standard ``OTEL_*`` variables configure an OTLP
   endpoint, a batch span processor and a periodic metric reader exporting to it. No
   endpoint, no exporter, no network traffic.

Exports run on the SDK's background threads. A collector that is down costs a run
nothing: the export timeout is bounded, :func:`shutdown` waits a bounded time, and export
trouble is reported as one warning line instead of the SDK's retry logs and tracebacks.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import metrics, trace

from tierflow.telemetry.diagnostics import quiet_export_loggers, warn, warn_config

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from tierflow.settings import TierflowSettings

#: Export timeout when ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_TIMEOUT`` is unset. The SDK's
#: own default (10 s) would hold a CLI run's exit that long when the collector is down.
DEFAULT_EXPORT_TIMEOUT_S = 2.0


Signal = Literal["traces", "metrics"]


@dataclass(frozen=True)
class _Export:
    """Where one signal is exported, as the ``OTEL_*`` variables say."""

    protocol: str
    endpoint: str
    timeout_s: float | None  # None: the exporter reads the OTEL_* timeout variable itself


@dataclass
class _State:
    """tierflow's own providers (rule 4), private: never set as the global ones."""

    tracer: trace.Tracer
    meter: metrics.Meter
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None  # only when metrics are exported
    endpoint: str | None = None
    shut_down: bool = False


_lock = threading.Lock()
_state: _State | None = None
_override_tracer: trace.Tracer | None = None
_override_meter: metrics.Meter | None = None
_recording: ContextVar[bool] = ContextVar("tierflow_telemetry_recording", default=True)
_meter_here: ContextVar[metrics.Meter | None] = ContextVar("tierflow_meter", default=None)
_NOOP_TRACER = trace.NoOpTracer()
_NOOP_METER = metrics.NoOpMeter("tierflow")
# The tracer and meter of the application's providers, per provider (rule 3).
_app_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None
_app_meter: tuple[metrics.MeterProvider, metrics.Meter] | None = None


def _version() -> str:
    try:
        return version("tierflow")
    except PackageNotFoundError:  # running from a source tree
        return "0"


_SCOPE = ("tierflow", _version())


def _env(*names: str) -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return ""


def _export_config(signal: Signal) -> _Export | None:
    """The OTLP export of ``signal`` the environment asks for, or ``None``."""
    upper = signal.upper()
    choice = _env(f"OTEL_{upper}_EXPORTER").lower()
    names = {n.strip() for n in choice.split(",") if n.strip()}
    if "none" in names:
        return None
    if names - {"otlp"}:
        warn_config(f"OTEL_{upper}_EXPORTER={choice}: only 'otlp' and 'none' are supported")
    endpoint = _env(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint and "otlp" not in names:
        return None  # nothing configured: no exporter, no traffic
    protocol = _env(f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol.lower() or "http/protobuf"
    timeout_set = _env(f"OTEL_EXPORTER_OTLP_{upper}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    default = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    return _Export(
        protocol=protocol,
        endpoint=endpoint or default,
        timeout_s=None if timeout_set else DEFAULT_EXPORT_TIMEOUT_S,
    )


def _exporter(signal: Signal, config: _Export) -> Any:
    """Build the SDK's OTLP exporter; the endpoint and headers come from the environment."""
    try:
        if config.protocol == "grpc":
            if signal == "traces":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcSpans,
                )

                return GrpcSpans(timeout=config.timeout_s)
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetrics,
            )

            return GrpcMetrics(timeout=config.timeout_s)
        if config.protocol == "http/protobuf":
            if signal == "traces":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpSpans,
                )

                return HttpSpans(timeout=config.timeout_s)
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetrics,
            )

            return HttpMetrics(timeout=config.timeout_s)
    except ImportError as exc:
        package = "grpc" if config.protocol == "grpc" else "http"
        warn_config(
            f"cannot export over {config.protocol} ({exc.name} is missing): "
            f"pip install opentelemetry-exporter-otlp-proto-{package}"
        )
        return None
    warn_config(f"OTLP protocol '{config.protocol}' is not supported (use grpc or http/protobuf)")
    return None


def _resource() -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over tierflow's default name.
    detected = Resource.create({SERVICE_VERSION: _SCOPE[1]})
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: "tierflow"}))
    return detected


def _unset(provider: object) -> bool:
    """Whether ``provider`` is the API's placeholder, there until an application sets one.
    A ``NoOpTracerProvider`` is not: it is an application's choice of no tracing."""
    return type(provider).__name__ in ("ProxyTracerProvider", "_ProxyMeterProvider")


def _install() -> _State:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = _resource()
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    state = _State(
        tracer=provider.get_tracer(*_SCOPE),
        meter=metrics.get_meter(*_SCOPE),
        tracer_provider=provider,
    )
    config = _export_config("traces")
    exporter = _exporter("traces", config) if config else None
    if config and exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
        state.endpoint = config.endpoint
    state.meter_provider = _install_meter_provider(resource, state)
    if state.endpoint is not None:
        quiet_export_loggers(state.endpoint)
        atexit.register(shutdown)
    return state


def _install_meter_provider(resource: Any, state: _State) -> MeterProvider | None:
    config = _export_config("metrics")
    exporter = _exporter("metrics", config) if config else None
    if config is None or exporter is None:
        return None  # the API's proxy meter: instruments cost nothing until someone listens
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    provider = MeterProvider(
        resource=resource,
        metric_readers=[PeriodicExportingMetricReader(exporter)],
        shutdown_on_exit=False,
    )
    state.meter = provider.get_meter(*_SCOPE)
    state.endpoint = state.endpoint or config.endpoint
    return provider


def setup() -> None:
    """Build tierflow's own providers and the exporters ``OTEL_*`` configures (idempotent).

    Called on first use by :func:`tracer` when the application set no provider; the
    CLI's exit calls :func:`shutdown`. Never sets the global providers.
    """
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = _install()


def _own() -> _State:
    if _state is None:
        setup()
        assert _state is not None
    return _state


@contextlib.contextmanager
def recording(enabled: bool) -> Iterator[None]:
    """Record tierflow's spans and metrics (or not) for the code running inside, tasks it
    starts included. The runner applies ``[telemetry] enabled`` with it to each run."""
    token = _recording.set(enabled)
    try:
        yield
    finally:
        _recording.reset(token)


def recording_setting(settings: TierflowSettings | None) -> bool:
    """Whether a run with ``settings`` records telemetry (``None``: as the caller does)."""
    if settings is None:
        return _recording.get()
    return settings.telemetry.enabled


def tracer() -> trace.Tracer:
    """The tracer tierflow's spans come from (see the module docstring for which)."""
    global _app_tracer
    if not _recording.get():
        return _NOOP_TRACER
    if _override_tracer is not None:
        return _override_tracer
    provider = trace.get_tracer_provider()
    if _unset(provider):
        return _own().tracer
    cached = _app_tracer
    if cached is None or cached[0] is not provider:
        cached = _app_tracer = (provider, provider.get_tracer(*_SCOPE))
    return cached[1]


def meter() -> metrics.Meter:
    """The meter tierflow's instruments come from (see the module docstring for which)."""
    global _app_meter
    if not _recording.get():
        return _NOOP_METER
    here = _meter_here.get()
    if here is not None:
        return here
    if _override_meter is not None:
        return _override_meter
    provider = metrics.get_meter_provider()
    if _unset(provider):
        if not _unset(trace.get_tracer_provider()):
            return _NOOP_METER  # the application owns telemetry and chose no metrics
        return _own().meter
    cached = _app_meter
    if cached is None or cached[0] is not provider:
        cached = _app_meter = (provider, provider.get_meter(*_SCOPE))
    return cached[1]


@contextlib.contextmanager
def metering(provider: metrics.MeterProvider) -> Iterator[None]:
    """Send tierflow's metrics to ``provider`` for the code running inside, tasks it starts
    included (a context variable, so concurrent servers in one process keep theirs apart).
    ``recording(False)`` still wins: a run with telemetry off records nothing."""
    token = _meter_here.set(provider.get_meter(*_SCOPE))
    try:
        yield
    finally:
        _meter_here.reset(token)


def export_readers() -> list[Any]:
    """The OTLP metric reader ``OTEL_*`` configures (or none), for a provider of one's own
    (the server's) that should export as tierflow's would."""
    config = _export_config("metrics")
    exporter = _exporter("metrics", config) if config else None
    if config is None or exporter is None:
        return []
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    return [PeriodicExportingMetricReader(exporter)]


@contextlib.contextmanager
def use_providers(
    *, tracer_provider: trace.TracerProvider | None = None, meter_provider: Any = None
) -> Iterator[None]:
    """Send tierflow's spans (and/or metrics) to these providers while the block runs.

    For tests and benchmarks (an in-memory exporter per test, nothing global touched) and
    for applications that keep several providers. Not meant to be nested across threads.
    """
    global _override_tracer, _override_meter
    saved = (_override_tracer, _override_meter)
    if tracer_provider is not None:
        _override_tracer = tracer_provider.get_tracer(*_SCOPE)
    if meter_provider is not None:
        _override_meter = meter_provider.get_meter(*_SCOPE)
    try:
        yield
    finally:
        _override_tracer, _override_meter = saved


def shutdown(timeout_s: float | None = None) -> bool:
    """Flush and stop the exporters tierflow installed, waiting at most ``timeout_s``.

    Returns ``True`` when everything was exported (or nothing was to be). Spans still in
    flight after the deadline are dropped with one warning: a dead collector must not hold
    the process. Providers the application installed are left to the application.
    """
    with _lock:
        state = _state
        if state is None or state.shut_down:
            return True
        state.shut_down = True
    stops = [p.shutdown for p in (state.tracer_provider, state.meter_provider) if p is not None]
    if not stops or state.endpoint is None:
        return True
    budget = timeout_s if timeout_s is not None else _budget()
    # The SDK's own shutdown waits up to 30 s per processor: run it on daemon threads and
    # stop waiting at the deadline (the process may exit with them still blocked).
    workers = [threading.Thread(target=stop, daemon=True, name="tierflow-otel") for stop in stops]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + budget
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    if any(worker.is_alive() for worker in workers):
        warn(
            f"telemetry export to {state.endpoint} did not finish within {budget:g}s; "
            "the rest was dropped"
        )
        return False
    return True


def _budget() -> float:
    raw = _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    try:
        timeout = float(raw) if raw else DEFAULT_EXPORT_TIMEOUT_S
    except ValueError:
        timeout = DEFAULT_EXPORT_TIMEOUT_S
    return timeout + 1.0
