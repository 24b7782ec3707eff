"""Latency of each built-in guardrail and of the default input stage, on 2 KB and 20 KB.

``tierflow bench guardrails-latency`` (or ``python -m tierflow.bench.guardrails_latency``).

Inputs are realistic: paragraphs of the demo handbook (prose with headings, prices, dates,
order numbers) with a few PII values mixed in (an e-mail, a phone number, an IBAN), cut
to 2,000 and 20,000 characters (the default ``max_input_chars``). Each guardrail is
called as ``run_stage`` would call it, in one process after a warm-up; the classifier
figures include the MiniLM embedding (loaded once, before timing).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierflow.guardrails import GuardContext, builtin_guardrail, guardrails_for_stage, run_stage
from tierflow.guardrails.base import Stage
from tierflow.settings import GuardrailsSettings

SIZES = {"2KB": 2_000, "20KB": 20_000}
RUNS = {"2KB": 300, "20KB": 60}
CLASSIFIER_RUNS = {"2KB": 60, "20KB": 20}
PII = " Contact: anna.schmidt@example.com, +49 1512 3456789, IBAN DE89 3704 0044 0532 0130 00. "
# Which stage each built-in is timed at (the one where it matters most).
STAGE_OF: dict[str, Stage] = {
    "size": "input",
    "injection": "input",
    "pii": "output",
    "secrets": "input",
    "residency": "input",
    "deny": "input",
    "schema": "output",
    "grounding": "output",
}


def sample_text(chars: int) -> str:
    """Demo handbook prose with PII sprinkled in, exactly ``chars`` characters long."""
    import tierflow.tools.demo

    docs = Path(tierflow.tools.demo.__file__).parent / "docs"
    prose = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(docs.glob("*.md")))
    out = ""
    i = 0
    while len(out) < chars:
        piece = prose[i : i + 700]
        out += piece + PII
        i = (i + 700) % max(1, len(prose) - 700)
    return out[:chars]


def _percentiles(samples: list[float]) -> dict[str, float]:
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.95))], 3),
        "runs": len(samples),
    }


def _time(fn: Callable[[], object], runs: int) -> dict[str, float]:
    for _ in range(min(20, runs)):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return _percentiles(samples)


def _per_guardrail(text: str, runs: int, cfg: GuardrailsSettings) -> dict[str, Any]:
    passages = [text[: len(text) // 2]]
    out = {}
    for name, stage in STAGE_OF.items():
        g = builtin_guardrail(name, cfg)

        def call(g: Any = g, stage: Stage = stage) -> object:
            return g(text, GuardContext(stage=stage, passages=passages))

        out[name] = _time(call, runs)
    return out


def _stage(text: str, runs: int, cfg: GuardrailsSettings) -> dict[str, float]:
    guards = guardrails_for_stage(cfg.stages.input, cfg)

    async def measure() -> list[float]:
        samples = []
        for i in range(runs + 10):
            started = time.perf_counter()
            await run_stage(guards, text, GuardContext(stage="input"))
            if i >= 10:
                samples.append((time.perf_counter() - started) * 1000)
        return samples

    return _percentiles(asyncio.run(measure()))


def run() -> dict[str, Any]:
    """The figures recorded in ``bench/results/guardrails-latency.json``."""
    load_start = [round(x, 2) for x in os.getloadavg()]
    from tierflow.bench.guardrails_honest import HEURISTICS, NO_JUDGE

    heuristic = HEURISTICS
    with_classifier = NO_JUDGE  # the default minus the judge (grey zone only, timed in -eval)
    from tierflow.guardrails.builtin.classifier import injection_probability

    injection_probability("warm up")  # load the embedder before timing
    results: dict[str, Any] = {
        "input_stage": list(heuristic.stages.input),
        "goal": "p50 < 2 ms for the heuristic input stage on 2 KB",
        "load_average_start": load_start,
    }
    for label, chars in SIZES.items():
        text = sample_text(chars)
        results[label] = {
            "per_guardrail": _per_guardrail(text, RUNS[label], heuristic),
            "input_stage_heuristic": _stage(text, RUNS[label], heuristic),
            "input_stage_with_classifier": _stage(text, CLASSIFIER_RUNS[label], with_classifier),
        }
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["note"] = (
        "single process, warm; the classifier adds one MiniLM embedding of the first "
        "1,000 characters, in a worker thread; the machine may be shared (load average "
        "recorded)"
    )
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
