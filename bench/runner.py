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


def _leases() -> dict[str, Any]:
    from tierflow.bench.leases import run

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


def _peers() -> dict[str, Any]:
    from tierflow.bench.peers import run

    return run()


def _profile(results_dir: Path, tag: str | None) -> dict[str, Any]:
    from tierflow.bench.profile import run

    return run(results_dir, tag or "now")


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
    "leases": _leases,
    "failover": _failover,
    "startup": _startup,
    "batch": _batch,
    "serve": _serve,
    "peers": _peers,
    "ui": _ui,
    "answers": _answers,
}

#: Benchmarks that write files of their own next to their JSON (flame graphs), and so
#: take the results folder and a tag: ``NAME-TAG.json``.
TAGGED: dict[str, Callable[[Path, str | None], dict[str, Any]]] = {"profile": _profile}


def run_benchmarks(
    name: str | None,
    results_dir: Path,
    *,
    route: str | None = None,
    limit: int | None = None,
    tag: str | None = None,
    processes: int | None = None,
    ids: str | None = None,
    routing: bool = False,
) -> None:
    names = [name] if name else [*BENCHMARKS, *TAGGED]
    for n in names:
        if n not in BENCHMARKS and n not in TAGGED:
            known = ", ".join([*BENCHMARKS, *TAGGED])
            raise UserError(f"unknown benchmark '{n}' (available: {known})")
    _check_options(names, route, limit, tag, processes, ids, routing)
    results_dir.mkdir(parents=True, exist_ok=True)
    if names == ["overhead"] and limit is not None:
        from tierflow.bench.overhead import run as overhead

        command = f"tierflow bench overhead --limit {limit}"
        record_results("overhead", overhead(limit), results_dir, command=command)
        return
    if processes is not None and processes > 1:
        from tierflow.bench.load_procs import run as run_processes

        command = f"tierflow bench load --processes {processes}"
        print(f"running load over 1 and {processes} processes…", file=sys.stderr, flush=True)
        figures = run_processes(processes)
        record_results(f"load-processes-{processes}", figures, results_dir, command=command)
        return
    if names == ["answers"]:
        _answers_run(results_dir, route, limit, tag, ids, routing)
        return
    for n in names:
        print(f"running {n}…", file=sys.stderr, flush=True)
        if n in TAGGED:
            command = f"tierflow bench {n}" + (f" --tag {tag}" if tag else "")
            figures = TAGGED[n](results_dir, tag)
            record_results(f"{n}-{tag or 'now'}", figures, results_dir, command=command)
        else:
            record_results(n, BENCHMARKS[n](), results_dir, command=f"tierflow bench {n}")


def _check_options(
    names: list[str],
    route: str | None,
    limit: int | None,
    tag: str | None,
    processes: int | None,
    ids: str | None,
    routing: bool,
) -> None:
    """Each option belongs to some benchmarks: a one-line error for any other."""
    answers = names == ["answers"]
    if (routing or route is not None or ids is not None) and not answers:
        raise UserError("--route, --ids and --routing are options of `tierflow bench answers`")
    if limit is not None and names not in (["answers"], ["overhead"]):
        raise UserError(
            "--limit is an option of `tierflow bench answers` (questions per route) "
            "and `tierflow bench overhead` (runs per setup)"
        )
    if tag is not None and names not in (["answers"], *([t] for t in TAGGED)):
        raise UserError(f"--tag is an option of `tierflow bench answers|{'|'.join(TAGGED)}`")
    if processes is not None and names != ["load"]:
        raise UserError("--processes is an option of `tierflow bench load`")


def _answers_run(
    results_dir: Path,
    route: str | None,
    limit: int | None,
    tag: str | None,
    ids: str | None,
    routing: bool,
) -> None:
    if routing:
        from tierflow.bench.answers_routing import run_routing

        command = "tierflow bench answers --routing"
        record_results("answers-routing", run_routing(), results_dir, command=command)
        return
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
    figures = run(route=route, limit=limit, ids=ids.split(",") if ids else None, partial=partial)
    partial.unlink()  # the whole run is recorded below
    record_results(f"answers-{tag}" if tag else "answers", figures, results_dir, command=command)
