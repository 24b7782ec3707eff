"""Run benchmarks and record their results with the command and machine that made them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierflow.bench.record import record_results
from tierflow.errors import UserError

Benchmark = Callable[[], dict[str, Any]]


def _embedded() -> dict[str, Any]:
    from tierflow.bench.embedded import run

    return run()


def _overhead() -> dict[str, Any]:
    from tierflow.bench.overhead import run

    return run()


def _orchestration() -> dict[str, Any]:
    from tierflow.bench.orchestration import run

    return run()


def _bfcl() -> dict[str, Any]:
    from tierflow.bench.bfcl import run

    return run()


def _tracing() -> dict[str, Any]:
    from tierflow.bench.tracing import run

    return run()


def _load() -> dict[str, Any]:
    from tierflow.bench.load import run

    return run()


def _failover() -> dict[str, Any]:
    from tierflow.bench.failover import run

    return run()


def _guardrails_eval() -> dict[str, Any]:
    from tierflow.bench.guardrails_honest import run

    return run()


def _guardrails_latency() -> dict[str, Any]:
    from tierflow.bench.guardrails_latency import run

    return run()


def _batch() -> dict[str, Any]:
    from tierflow.bench.batch import run

    return run()


def _serve() -> dict[str, Any]:
    from tierflow.bench.serve import run

    return run()


def _answers() -> dict[str, Any]:
    from tierflow.bench.answers import run

    return run()


def _startup() -> dict[str, Any]:
    from tierflow.bench.startup import run

    return run()


def _ui() -> dict[str, Any]:
    from tierflow.bench.ui import run

    return run()


BENCHMARKS: dict[str, Benchmark] = {
    "guardrails-eval": _guardrails_eval,
    "guardrails-latency": _guardrails_latency,
    "embedded": _embedded,
    "overhead": _overhead,
    "orchestration": _orchestration,
    "tracing": _tracing,
    "bfcl": _bfcl,
    "load": _load,
    "failover": _failover,
    "startup": _startup,
    "batch": _batch,
    "serve": _serve,
    "ui": _ui,
    "answers": _answers,
}


def run_benchmarks(
    name: str | None,
    results_dir: Path,
    *,
    route: str | None = None,
    limit: int | None = None,
    tag: str | None = None,
    ids: str | None = None,
    routing: bool = False,
) -> None:
    names = [name] if name else list(BENCHMARKS)
    for n in names:
        if n not in BENCHMARKS:
            raise UserError(f"unknown benchmark '{n}' (available: {', '.join(BENCHMARKS)})")
    if (routing or any(x is not None for x in (route, limit, tag, ids))) and names != ["answers"]:
        raise UserError(
            "--route, --limit, --ids, --tag and --routing are options of `tierflow bench answers`"
        )
    results_dir.mkdir(parents=True, exist_ok=True)
    if names == ["answers"] and routing:
        from tierflow.bench.answers_routing import run_routing

        command = "tierflow bench answers --routing"
        record_results("answers-routing", run_routing(), results_dir, command=command)
        return
    if names == ["answers"]:
        from tierflow.bench.answers import run

        parts = [
            f"--route {route}" if route else "",
            f"--limit {limit}" if limit else "",
            f"--ids {ids}" if ids else "",
        ]
        options = " ".join(p for p in [*parts, f"--tag {tag}" if tag else ""] if p)
        command = f"tierflow bench answers {options}".strip()
        partial = results_dir / f"answers-{tag or 'run'}.partial.jsonl"
        partial.unlink(missing_ok=True)
        figures = run(
            route=route, limit=limit, ids=ids.split(",") if ids else None, partial=partial
        )
        partial.unlink()  # the whole run is recorded below
        record_results(
            f"answers-{tag}" if tag else "answers", figures, results_dir, command=command
        )
        return
    for n in names:
        print(f"running {n}…", file=sys.stderr, flush=True)
        record_results(n, BENCHMARKS[n](), results_dir, command=f"tierflow bench {n}")
