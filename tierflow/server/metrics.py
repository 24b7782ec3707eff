"""``GET /metrics``: a small hand-kept set of counters in the Prometheus text format.

Not the OTel metrics: the OTel Prometheus exporter is not a dependency yet, and these
counters need none. Each comes from what the server sees: the run's final status and its
run record (fallbacks, guardrail blocks, cost), the worker's depth, the run's duration.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServerMetrics:
    def __init__(self, depth: Callable[[], int]) -> None:
        self._depth = depth
        self.runs: Counter[str] = Counter()  # by final status
        self.fallbacks = 0
        self.guardrail_blocks = 0
        self.cost_usd = 0.0
        self._latency_buckets = [0] * len(_BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0
        self.rejected: Counter[str] = Counter()  # "busy" (409), "queue_full", "key_limit" (429)

    def run_finished(
        self, status: str, seconds: float, record: Mapping[str, Any] | None = None
    ) -> None:
        self.runs[status] += 1
        self._latency_sum += seconds
        self._latency_count += 1
        for i, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                self._latency_buckets[i] += 1
        if record:
            steps = record.get("steps") or []
            self.fallbacks += sum(1 for s in steps if s.get("fallback_from"))
            verdicts = record.get("guardrails") or []
            self.guardrail_blocks += sum(1 for g in verdicts if g.get("action") == "block")
            self.cost_usd += float((record.get("usage") or {}).get("cost_usd") or 0.0)

    def render(self) -> str:
        lines = [
            "# HELP tierflow_runs_total Runs finished, by final status.",
            "# TYPE tierflow_runs_total counter",
        ]
        for status in sorted({"success", "error", "interrupted", *self.runs}):
            lines.append(f'tierflow_runs_total{{status="{status}"}} {self.runs[status]}')
        lines += [
            "# HELP tierflow_runs_rejected_total Runs refused at creation, by reason.",
            "# TYPE tierflow_runs_rejected_total counter",
            *(
                f'tierflow_runs_rejected_total{{reason="{r}"}} {self.rejected[r]}'
                for r in ("busy", "queue_full", "key_limit")
            ),
            "# HELP tierflow_queue_depth Runs pending or running.",
            "# TYPE tierflow_queue_depth gauge",
            f"tierflow_queue_depth {self._depth()}",
            "# HELP tierflow_run_duration_seconds Run latency, from start to end.",
            "# TYPE tierflow_run_duration_seconds histogram",
        ]
        for bound, count in zip(_BUCKETS, self._latency_buckets, strict=True):
            lines.append(f'tierflow_run_duration_seconds_bucket{{le="{bound}"}} {count}')
        lines += [
            f'tierflow_run_duration_seconds_bucket{{le="+Inf"}} {self._latency_count}',
            f"tierflow_run_duration_seconds_sum {self._latency_sum:.6f}",
            f"tierflow_run_duration_seconds_count {self._latency_count}",
            "# HELP tierflow_fallbacks_total Steps answered by a later backend of the tier.",
            "# TYPE tierflow_fallbacks_total counter",
            f"tierflow_fallbacks_total {self.fallbacks}",
            "# HELP tierflow_guardrail_blocks_total Guardrail verdicts that blocked.",
            "# TYPE tierflow_guardrail_blocks_total counter",
            f"tierflow_guardrail_blocks_total {self.guardrail_blocks}",
            "# HELP tierflow_cost_usd_total Model cost of finished runs, in US dollars.",
            "# TYPE tierflow_cost_usd_total counter",
            f"tierflow_cost_usd_total {self.cost_usd:.6f}",
        ]
        return "\n".join(lines) + "\n"
