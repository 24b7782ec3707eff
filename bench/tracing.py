"""Tracing overhead: a full run with tracing exporting vs not, and the cost of one span.

Graph: router -> specialist -> one tool call -> answer, on scripted models that answer
instantly, checkpointed to SQLite: 12 spans a run (workflow, 3 agent turns, 3 model calls,
1 tool call, 4 guardrail stages), counted as they end, not assumed. The same runner
alternates between three telemetry set-ups in blocks of runs, so load changes hit all
alike:

- ``noop``: the OpenTelemetry API's no-op provider (what tracing code costs when nothing
  records: the floor);
- ``off``: tierflow's default with no exporter configured (SDK provider, spans recorded
  and dropped: real trace ids, no network);
- ``on``: SDK provider + ``BatchSpanProcessor`` + the OTLP/HTTP exporter, and a metric
  reader with the OTLP/HTTP metric exporter, sending to an OTLP receiver (oteltap) in
  another process on 127.0.0.1, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` would set up.

The overhead figure is ``on`` vs ``off`` (the issue's "exporter on vs off"), measured
directly (median of paired blocks, wall and CPU time) and derived from the per-span CPU
cost, which other load on a shared machine disturbs much less than a 20 ms run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from tierflow import (
    Runner,
    load_settings,
    telemetry,
)
from tierflow.bench.orchestration import tierflow_setup
from tierflow.errors import UserError
from tierflow.telemetry.spans import span

WARMUP_BLOCKS = 2
BLOCKS = 15
BLOCK = 20  # runs per block; blocks of the three set-ups alternate
SPAN_LOOPS = 1_500  # under the batch queue (2048): nothing dropped
SPAN_ROUNDS = 7

_RECEIVER = """
import asyncio, sys
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

async def main():
    settings = OtelTapHttpProtobufReceiverSettings(http_port=int(sys.argv[1]))
    async with OtelTapHttpProtobufReceiver(settings):
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the benchmark closes stdin

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _receiver() -> Iterator[str]:
    """An OTLP/HTTP receiver in its own process; yields its endpoint."""
    if importlib.util.find_spec("oteltap") is None:
        raise UserError("the tracing benchmark needs an OTLP receiver: pip install oteltap==1.0.0")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)


class _Count(SpanProcessor):
    """Counts the spans that end (on the ``off`` provider, which exports nothing)."""

    def __init__(self) -> None:
        self.spans = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.spans += 1


def _providers(endpoint: str, count: _Count) -> dict[str, tuple[Any, Any]]:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    off = TracerProvider(shutdown_on_exit=False)
    off.add_span_processor(count)
    on = TracerProvider(shutdown_on_exit=False)
    on.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"))
    meters_on = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return {
        "noop": (trace.NoOpTracerProvider(), None),
        "off": (off, None),
        "on": (on, meters_on),
    }


Times = dict[str, dict[str, list[float]]]


async def _runs(state_dir: Path, providers: dict[str, tuple[Any, Any]]) -> Times:
    """Per-run wall and CPU time (ms) of each block of runs, by set-up. CPU time counts
    every thread of this process (the export thread too) and not other processes' load."""

    graphs, tiers = tierflow_setup()
    settings = load_settings(state_dir=state_dir, router={"semantic": False})
    times: Times = {"wall": {n: [] for n in providers}, "cpu": {n: [] for n in providers}}
    async with Runner(settings, tiers=tiers, graphs=graphs) as runner:
        names = list(providers)
        for block in range(WARMUP_BLOCKS + BLOCKS):
            # rotate the order so no set-up always follows the same one (GC, WAL growth)
            for name in names[block % 3 :] + names[: block % 3]:
                tracer_provider, meter_provider = providers[name]
                with telemetry.use_providers(
                    tracer_provider=tracer_provider, meter_provider=meter_provider
                ):
                    started, cpu = time.perf_counter(), time.process_time()
                    for i in range(BLOCK):
                        record = await runner.ask(
                            "q", graph="bench", thread_id=f"{name}{block}-{i}"
                        )
                        assert record.answer == "done"
                    # the block pays for its own export (encoding + HTTP), not the next one
                    if hasattr(tracer_provider, "force_flush"):
                        tracer_provider.force_flush()
                    wall = (time.perf_counter() - started) * 1000 / BLOCK
                    used = (time.process_time() - cpu) * 1000 / BLOCK
                if block >= WARMUP_BLOCKS:
                    times["wall"][name].append(wall)
                    times["cpu"][name].append(used)
    return times


def _span_cost_us(provider: Any) -> dict[str, float]:
    """Cost of one tierflow span shaped like a model call's (11 attributes), the median of a
    few rounds: ``thread`` is the calling thread's CPU time, ``process`` adds the SDK's
    export thread (each round is flushed inside its measurement)."""
    attrs: Any = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "vllm",
        "gen_ai.request.model": "m",
        "tierflow.backend": "vllm:m",
        "tierflow.backend.local": True,
        "gen_ai.conversation.id": "0123456789abcdef",
    }
    answer: Any = {
        "gen_ai.response.model": "m",
        "gen_ai.response.id": "chatcmpl-0123456789",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 12,
    }
    thread: list[float] = []
    process: list[float] = []
    with telemetry.use_providers(tracer_provider=provider):
        for _ in range(SPAN_ROUNDS):
            cpu, own = time.process_time(), time.thread_time()
            for _ in range(SPAN_LOOPS):
                with span("chat m", SpanKind.CLIENT, attrs) as current:
                    current.set_attributes(answer)
            thread.append((time.thread_time() - own) / SPAN_LOOPS * 1e6)
            if hasattr(provider, "force_flush"):
                provider.force_flush()
            process.append((time.process_time() - cpu) / SPAN_LOOPS * 1e6)
    return {"thread": statistics.median(thread), "process": statistics.median(process)}


def _paired(a: list[float], b: list[float]) -> float:
    return round((statistics.median(x / y for x, y in zip(a, b, strict=True)) - 1) * 100, 2)


def run() -> dict[str, Any]:
    load = os.getloadavg()[0]  # other work on the machine shows up in every figure
    with _receiver() as endpoint, tempfile.TemporaryDirectory() as tmp:
        count = _Count()
        providers = _providers(endpoint, count)
        times = asyncio.run(_runs(Path(tmp), providers))
        # every run of the 'off' blocks, warm-up included, ended its spans there
        spans_per_run = count.spans / ((WARMUP_BLOCKS + BLOCKS) * BLOCK)
        span_us = {name: _span_cost_us(p) for name, (p, _) in providers.items()}
        for tracer_provider, meter_provider in providers.values():
            for provider in (tracer_provider, meter_provider):
                if hasattr(provider, "shutdown"):
                    provider.shutdown()
    wall, cpu = times["wall"], times["cpu"]
    return {
        "graph": "router -> specialist -> one tool call -> answer (scripted, instant models)",
        "runs": BLOCKS * BLOCK,
        "spans_per_run": round(spans_per_run, 2),
        "run_ms_p50": {name: round(statistics.median(t), 3) for name, t in wall.items()},
        "run_cpu_ms_p50": {name: round(statistics.median(t), 3) for name, t in cpu.items()},
        # blocks of the three set-ups run back to back: the median of per-block ratios
        # cancels slow load drifts that separate medians keep
        "overhead_on_vs_off_pct": _paired(wall["on"], wall["off"]),
        "overhead_on_vs_off_pct_cpu": _paired(cpu["on"], cpu["off"]),
        "overhead_off_vs_noop_pct": _paired(wall["off"], wall["noop"]),
        "overhead_on_vs_noop_pct": _paired(wall["on"], wall["noop"]),
        "overhead_on_vs_noop_pct_cpu": _paired(cpu["on"], cpu["noop"]),
        # the same from per-span costs, which a loaded machine disturbs far less
        "overhead_on_vs_off_pct_from_span_cost": round(
            spans_per_run
            * (span_us["on"]["process"] - span_us["off"]["process"])
            / (statistics.median(cpu["off"]) * 1000)
            * 100,
            2,
        ),
        "span_us_thread": {name: round(v["thread"], 2) for name, v in span_us.items()},
        "span_us_process": {name: round(v["process"], 2) for name, v in span_us.items()},
        "load_average_1m_at_start": round(load, 2),
        "exporter": "BatchSpanProcessor + OTLP/HTTP (protobuf) to an oteltap receiver in "
        "another process on 127.0.0.1; metrics via PeriodicExportingMetricReader",
        "note": "ms per run = a block of 20 runs (SQLite checkpoints) including, for 'on', "
        "flushing its spans; blocks of noop/off/on alternate on one Runner. span_us: CPU per "
        "span, calling thread only / whole process (with export). Metrics are recorded but "
        "exported every 60 s, so not within a block.",
    }
