"""Metrics: the GenAI client histograms and tierflow's counters.

- ``gen_ai.client.operation.duration`` (s) and ``gen_ai.client.token.usage`` ({token}):
  per model call, with the GenAI semantic-convention attributes and bucket boundaries.
- ``tierflow.fallbacks``: each time a tier moves past a backend (why: ``outcome``).
- ``tierflow.breaker.openings``: each time a backend's circuit breaker opens.
- ``tierflow.guardrail.blocks``: each guardrail verdict that blocked.
- ``tierflow.cost`` (USD): estimated spend, from the configured prices.

Instruments come from :func:`tierflow.telemetry.setup.meter`, so they follow the
providers a test or an application chose; they are rebuilt when that meter changes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.util.types import AttributeValue

from tierflow.telemetry import setup as setup

# Advisory buckets from the GenAI semantic conventions.
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48]
_DURATION_BUCKETS += [40.96, 81.92]
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]
_TOKEN_BUCKETS += [16777216, 67108864]

Attributes = Mapping[str, AttributeValue]


@dataclass(frozen=True)
class Instruments:
    duration: metrics.Histogram
    tokens: metrics.Histogram
    fallbacks: metrics.Counter
    breaker_openings: metrics.Counter
    guardrail_blocks: metrics.Counter
    cost: metrics.Counter


def _build(meter: metrics.Meter) -> Instruments:
    return Instruments(
        duration=meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        ),
        tokens=meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=[float(b) for b in _TOKEN_BUCKETS],
        ),
        fallbacks=meter.create_counter(
            "tierflow.fallbacks",
            unit="{fallback}",
            description="Times a tier moved past a backend (failed, unavailable, skipped).",
        ),
        breaker_openings=meter.create_counter(
            "tierflow.breaker.openings",
            unit="{opening}",
            description="Times a backend's circuit breaker opened.",
        ),
        guardrail_blocks=meter.create_counter(
            "tierflow.guardrail.blocks",
            unit="{block}",
            description="Guardrail verdicts that blocked a request, a tool call or an answer.",
        ),
        cost=meter.create_counter(
            "tierflow.cost",
            unit="USD",
            description="Estimated model spend, from the configured prices.",
        ),
    )


_lock = threading.Lock()
_cache: tuple[metrics.Meter, Instruments] | None = None


def instruments() -> Instruments:
    """The instruments of the current meter (built once per meter)."""
    global _cache
    meter = setup.meter()
    cached = _cache
    if cached is not None and cached[0] is meter:
        return cached[1]
    with _lock:
        if _cache is None or _cache[0] is not meter:
            _cache = (meter, _build(meter))
        return _cache[1]


def record_chat(
    seconds: float, attributes: Attributes, input_tokens: int | None, output_tokens: int | None
) -> None:
    """One model call: its duration and, if it answered, its tokens."""
    inst = instruments()
    inst.duration.record(seconds, attributes)
    if input_tokens is not None:
        inst.tokens.record(input_tokens, {**attributes, "gen_ai.token.type": "input"})
    if output_tokens is not None:
        inst.tokens.record(output_tokens, {**attributes, "gen_ai.token.type": "output"})


def count_fallback(tier: str, backend: str, outcome: str) -> None:
    instruments().fallbacks.add(
        1, {"tierflow.tier": tier, "tierflow.backend": backend, "tierflow.attempt.outcome": outcome}
    )


def count_breaker_opening(backend: str) -> None:
    instruments().breaker_openings.add(1, {"tierflow.backend": backend})


def count_guardrail_block(stage: str, name: str) -> None:
    instruments().guardrail_blocks.add(
        1, {"tierflow.guardrail.stage": stage, "tierflow.guardrail.name": name}
    )


def add_cost(usd: float, attributes: Attributes) -> None:
    if usd > 0:
        instruments().cost.add(usd, attributes)
