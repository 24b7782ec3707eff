"""Which providers tierflow's telemetry goes to: none at all when a run's settings say
``[telemetry] enabled = false``; the application's own providers (an SDK one with its
own processor, or a no-op one) whenever it set them, before or after tierflow's first run,
without tierflow ever replacing the global providers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider
from opentelemetry.util._once import Once

from tierflow import Runner, telemetry
from tierflow.record import RunRecord
from tierflow.settings import load_settings
from tierflow.testing import ScriptedChatModel, scripted_tier

NO_TRACE = "0" * 32


def runner(tmp_path: Path, *, enabled: bool) -> Runner:
    settings = load_settings(
        False,
        state_dir=tmp_path / "state",
        telemetry={"enabled": enabled, "jaeger_ui_url": "http://127.0.0.1:16686"},
    )
    tiers = {"reasoning": scripted_tier("reasoning", ScriptedChatModel(default="ok"))}
    return Runner(settings, tiers=tiers)


async def ask(tmp_path: Path, *, enabled: bool = True) -> RunRecord:
    record = await runner(tmp_path, enabled=enabled).ask("Hello?", graph="direct")
    assert record.answer == "ok"
    return record


def sdk_providers() -> tuple[TracerProvider, InMemorySpanExporter, MeterProvider, Any]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return tracer_provider, exporter, meter_provider, reader


def metric_names(reader: InMemoryMetricReader) -> set[str]:
    data = reader.get_metrics_data()
    if data is None:
        return set()
    return {
        m.name
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if list(m.data.data_points)
    }


def trace_ids(exporter: InMemorySpanExporter) -> set[str]:
    return {f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()}


@pytest.fixture
def global_otel() -> Iterator[None]:
    """The OpenTelemetry API's global providers as a fresh process has them (unset), and
    back as they were after the test: an application sets them once per process."""
    saved = (
        trace._TRACER_PROVIDER,
        trace._TRACER_PROVIDER_SET_ONCE,
        metrics_api._METER_PROVIDER,
        metrics_api._METER_PROVIDER_SET_ONCE,
    )
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    metrics_api._METER_PROVIDER, metrics_api._METER_PROVIDER_SET_ONCE = None, Once()
    yield
    (
        trace._TRACER_PROVIDER,
        trace._TRACER_PROVIDER_SET_ONCE,
        metrics_api._METER_PROVIDER,
        metrics_api._METER_PROVIDER_SET_ONCE,
    ) = saved


async def test_a_run_with_telemetry_disabled_records_nothing(tmp_path: Path) -> None:
    tracer_provider, exporter, meter_provider, reader = sdk_providers()
    with telemetry.use_providers(tracer_provider=tracer_provider, meter_provider=meter_provider):
        off = await ask(tmp_path / "off", enabled=False)
        assert exporter.get_finished_spans() == ()
        assert metric_names(reader) == set()
        assert (off.trace_id, off.trace_url) == (NO_TRACE, None)

        on = await ask(tmp_path / "on")  # the same providers do record an enabled run
    names = [s.name for s in exporter.get_finished_spans()]
    assert "invoke_workflow direct" in names and "chat scripted" in names
    assert trace_ids(exporter) == {on.trace_id}
    assert on.trace_url == f"http://127.0.0.1:16686/trace/{on.trace_id}"
    assert "gen_ai.client.operation.duration" in metric_names(reader)


async def test_a_disabled_run_keeps_the_callers_trace_context(tmp_path: Path) -> None:
    """Inside an application's span, a disabled run adds no span but does not hide the
    application's trace either: its spans are non-recording children of the caller's."""
    tracer_provider, exporter, meter_provider, _ = sdk_providers()
    with (
        telemetry.use_providers(tracer_provider=tracer_provider, meter_provider=meter_provider),
        tracer_provider.get_tracer("app").start_as_current_span("handle request") as outer,
    ):
        record = await ask(tmp_path, enabled=False)
    assert [s.name for s in exporter.get_finished_spans()] == ["handle request"]
    assert record.trace_id == f"{outer.get_span_context().trace_id:032x}"
    assert record.trace_url is None


async def test_an_application_sdk_provider_gets_the_spans_and_is_kept(
    tmp_path: Path, global_otel: None
) -> None:
    tracer_provider, exporter, meter_provider, reader = sdk_providers()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)

    record = await ask(tmp_path)

    assert trace.get_tracer_provider() is tracer_provider
    assert metrics.get_meter_provider() is meter_provider
    names = [s.name for s in exporter.get_finished_spans()]
    assert names[-1] == "invoke_workflow direct" and "invoke_agent generalist" in names
    assert trace_ids(exporter) == {record.trace_id}
    assert "gen_ai.client.operation.duration" in metric_names(reader)


async def test_an_application_noop_provider_is_respected(tmp_path: Path, global_otel: None) -> None:
    """Tracing turned off by the application stays off: tierflow does not bring its own
    provider in (which would give the run a real trace id)."""
    noop = NoOpTracerProvider()
    trace.set_tracer_provider(noop)
    record = await ask(tmp_path)
    assert record.trace_id == NO_TRACE
    assert trace.get_tracer_provider() is noop


async def test_a_provider_set_after_tierflows_first_run_is_used(
    tmp_path: Path, global_otel: None
) -> None:
    first = await ask(tmp_path / "first")
    assert first.trace_id != NO_TRACE  # tierflow's own provider: real trace ids...
    # ...kept private: the global one is still unset, so the application can set its own
    assert isinstance(trace.get_tracer_provider(), ProxyTracerProvider)

    tracer_provider, exporter, _, _ = sdk_providers()
    trace.set_tracer_provider(tracer_provider)
    assert trace.get_tracer_provider() is tracer_provider

    second = await ask(tmp_path / "second")
    assert trace_ids(exporter) == {second.trace_id}
    assert "invoke_workflow direct" in [s.name for s in exporter.get_finished_spans()]
