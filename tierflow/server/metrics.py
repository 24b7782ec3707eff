"""``GET /metrics``: the server's OpenTelemetry metrics as Prometheus text.

Each server has its own ``MeterProvider`` whose reader is the OTel Prometheus exporter's
(``PrometheusMetricReader``) on a private ``prometheus_client`` registry, so two servers
in one process never share counters; ``/metrics`` renders that registry. Two sources:

- recorded by the server: ``tierflow_runs_total{status}`` when a run ends,
  ``tierflow_runs_rejected_total{reason}`` (busy: 409; queue_full, key_limit: 429),
  ``tierflow_run_duration_seconds`` (histogram) and ``tierflow_queue_depth`` (the
  worker's depth, read at each scrape);
- recorded by the run itself (``tierflow.telemetry.metrics``, sent here by
  :meth:`ServerMetrics.metering`): ``tierflow_fallbacks_total``,
  ``tierflow_breaker_openings_total``, ``tierflow_guardrail_blocks_total``,
  ``tierflow_cost_USD_total`` and the ``gen_ai_client_*`` histograms. For a run on a
  ``tierflow worker`` process the API adds the fallbacks, blocks and cost its record
  shows, under the same names (its breaker openings stay in the worker).

A run whose settings turn telemetry off (``[telemetry] enabled = false``) records none
of the run's own metrics; the server's four still count it. With ``OTEL_*`` configuring
an OTLP endpoint the same provider exports them there as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from tierflow.telemetry import export_readers, metering
from tierflow.telemetry import metrics as run_metrics

_BUCKETS = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]

#: The content type of the Prometheus text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """The server's meter provider and instruments (see the module docstring)."""

    def __init__(self, depth: Callable[[], int]) -> None:
        self._depth = depth
        self.registry = CollectorRegistry(auto_describe=False)
        reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=self.registry
        )
        self.provider = MeterProvider(metric_readers=[reader, *export_readers()])
        meter = self.provider.get_meter("tierflow.server")
        self._runs = meter.create_counter(
            "tierflow.runs", unit="{run}", description="Runs finished, by final status."
        )
        self._rejected = meter.create_counter(
            "tierflow.runs.rejected", unit="{run}", description="Runs refused at creation."
        )
        self._duration = meter.create_histogram(
            "tierflow.run.duration",
            unit="s",
            description="Run latency, from creation to end.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        meter.create_observable_gauge(
            "tierflow.queue.depth",
            callbacks=[self._observe_depth],
            unit="{run}",
            description="Runs pending or running.",
        )
        # Zero from the start, so a scrape shows every reason before the first refusal.
        for reason in ("busy", "queue_full", "key_limit"):
            self._rejected.add(0, {"reason": reason})

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._depth())]

    @contextmanager
    def metering(self) -> Iterator[None]:
        """The run's own metrics (fallbacks, breakers, guardrails, cost) go here."""
        with metering(self.provider):
            yield

    def rejected(self, reason: str) -> None:
        self._rejected.add(1, {"reason": reason})

    def run_finished(self, status: str, seconds: float) -> None:
        """A run executed in this process ended (its own metrics are recorded already)."""
        self._runs.add(1, {"status": status})
        self._duration.record(seconds)

    def run_finished_elsewhere(
        self, status: str, seconds: float, record: Mapping[str, Any] | None
    ) -> None:
        """A run a worker process executed ended: its fallbacks, blocks and cost from the
        record, under the names the run's own metrics use."""
        self.run_finished(status, seconds)
        if not record:
            return
        with self.metering():
            for step in record.get("steps") or []:
                tier, attempts = str(step.get("tier") or ""), step.get("attempts") or []
                for attempt in attempts[:-1]:  # each backend the tier moved past
                    run_metrics.count_fallback(tier, attempt["backend"], attempt["outcome"])
                cost = float((step.get("usage") or {}).get("cost_usd") or 0.0)
                backend = str(step.get("backend") or "")
                run_metrics.add_cost(cost, {"tierflow.tier": tier, "tierflow.backend": backend})
            for verdict in record.get("guardrails") or []:
                if verdict.get("action") == "block":
                    run_metrics.count_guardrail_block(verdict["stage"], verdict["name"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
