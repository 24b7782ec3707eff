"""Peers: the same task in the bare openai client, LangGraph (with and without a SQLite
checkpointer), the OpenAI Agents SDK, PydanticAI and tierflow, side by side (issue 15).

The task: one agent, one local tool (``add``), exactly two chat-completions calls per run
(a tool call, then the answer quoting the tool's result), against a ``ScriptedServer``
over loopback in a process of its own (``peers_backend``: it answers by request content,
so concurrent runs need no script order). Every run is checked: the server counts the
HTTP requests carrying the run's marker (exactly 2) and the final text must be
``The sum is N.`` with N the tool's result; any stray request or wrong text fails the
benchmark with the runs that broke it.

Three phases, each interleaved in rotated rounds in one process (round r starts at the
r-th setup), so a busy spell of the shared machine falls on every setup alike:
1. CPU: ``runs`` runs one after the other per setup and round, 0 ms server. CPU per run
   is this process's CPU time (``time.process_time``: every thread, the checkpointers'
   included) over the batch; p50/p95 of each run's wall time.
2. Throughput at 0 ms and 3. at 200 ms: ``tp_runs`` runs with ``concurrency`` workers
   (closed loop). The ideal at 200 ms is concurrency / (2 x 0.2 s) runs/s.
"tierflow-2proc" (throughput only) is two spawned tierflow processes each doing half the
runs at half the concurrency, started together (``peers_procs``).

``tierflow bench peers`` runs the full size and records ``bench/results/peers.json``;
``python -m tierflow.bench.peers [--quick] [--rounds N] [--runs N] ... [--record]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierflow.bench.peers_backend import Backend, answer, backends
from tierflow.bench.peers_procs import Batch, Job, jobs, run_batch, two_processes
from tierflow.bench.peers_setups import SETUPS, One, Unavailable, open_setup
from tierflow.errors import RunError

TWO = "tierflow-2proc"
LABELS = {**SETUPS, TWO: "tierflow defaults, 2 processes (half the runs and concurrency each)"}
LATENCIES = {"0": 0.0, "200": 0.2}
FULL: dict[str, Any] = {"rounds": 5, "runs": 30, "tp_rounds": 3, "tp_runs": 200, "concurrency": 50}
QUICK: dict[str, Any] = {**FULL, "rounds": 2, "runs": 10, "tp_rounds": 1}
#: Issue 15's goals: (numerator, denominator, figure, bound, "max" or "min").
GOALS = {
    "tierflow_cpu_vs_langgraph_sqlite": ("tierflow", "langgraph-sqlite", "cpu", 1.15, "max"),
    "stateless_cpu_vs_langgraph": ("tierflow-stateless", "langgraph", "cpu", 1.2, "max"),
    "tierflow_tp200_vs_langgraph": ("tierflow", "langgraph", "tp200", 0.8, "min"),
    "two_processes_tp200_vs_langgraph": (TWO, "langgraph", "tp200", 1.0, "min"),
}
P95_GOAL = 1.2


class CheckFailed(RunError):
    """A setup made other than 2 HTTP calls in a run, or returned the wrong text."""


def check(setup: str, backend: Backend, work: Sequence[Job], batch: Batch) -> None:
    """Every run made exactly 2 requests and returned the right text; nothing else came."""
    counts = backend.counts()
    problems = []
    for a, b, marker in work:
        got, want = batch.texts.get(marker), answer(a, b)
        if got != want:
            problems.append(f"run {marker} returned {got!r}, expected {want!r}")
        if counts.get(marker, 0) != 2:
            problems.append(f"run {marker} made {counts.get(marker, 0)} HTTP calls, expected 2")
    stray = {m: n for m, n in counts.items() if m not in {j[2] for j in work}}
    if stray:
        problems.append(f"requests outside the runs: {stray}")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        shown = "; ".join(problems[:3]) + more
        raise CheckFailed(f"peers benchmark: {setup} failed its checks: {shown}")


def _rotate(items: Sequence[str], r: int) -> list[str]:
    k = r % len(items) if items else 0
    return [*items[k:], *items[:k]]


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def _open(
    stack: contextlib.AsyncExitStack, setups: Sequence[str], urls: dict[str, str]
) -> tuple[dict[tuple[str, str], One], dict[str, str]]:
    opened: dict[tuple[str, str], One] = {}
    unavailable: dict[str, str] = {}
    for setup in setups:
        for lat, url in urls.items():
            try:
                opened[setup, lat] = await stack.enter_async_context(open_setup(setup, url))
            except Unavailable as exc:
                unavailable[setup] = str(exc)
                break
            except ImportError as exc:
                raise CheckFailed(
                    f"peers benchmark: {setup} needs the peers extra "
                    f"(pip install -e '.[peers]'): {exc}"
                ) from exc
    return opened, unavailable


async def _measure(
    setups: Sequence[str], sizes: dict[str, Any], lats: Sequence[str], two: bool
) -> dict[str, Any]:
    rounds, runs, tp_rounds = sizes["rounds"], sizes["runs"], sizes["tp_rounds"]
    tp_runs, concurrency = sizes["tp_runs"], sizes["concurrency"]
    wanted = sorted({"0", *lats}, key=float)
    load: dict[str, list[float]] = {"start": [round(x, 2) for x in os.getloadavg()]}
    cpu: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    tp: dict[str, dict[str, list[dict[str, float]]]] = {lat: {} for lat in lats}
    t0 = time.perf_counter()
    with backends(*(LATENCIES[lat] for lat in wanted)) as bk:
        by_lat = {lat: bk[LATENCIES[lat]] for lat in wanted}
        urls = {lat: b.url for lat, b in by_lat.items()}
        async with contextlib.AsyncExitStack() as stack:
            procs = stack.enter_context(two_processes(urls)) if two else None
            opened, unavailable = await _open(stack, setups, urls)  # while procs start
            if procs:
                procs.wait_ready()
            print(f"  opened in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            live = [s for s in setups if s not in unavailable]
            for b in by_lat.values():
                b.counts()  # forget the warm-ups of opening (the stateless probe, children)
            for setup in live:
                for lat in wanted:
                    work = jobs(f"warm-{setup}-{lat}", 2)
                    check(setup, by_lat[lat], work, await run_batch(opened[setup, lat], work, 1))
            print(f"  cpu phase: {rounds} rounds x {runs} runs…", file=sys.stderr, flush=True)
            for r in range(rounds):
                for setup in _rotate(live, r):
                    work = jobs(f"{setup}-cpu{r}", runs)
                    batch = await run_batch(opened[setup, "0"], work, 1)
                    check(setup, by_lat["0"], work, batch)
                    cpu.setdefault(setup, []).append(batch.cpu_s * 1000 / runs)
                    walls.setdefault(setup, []).extend(batch.latencies)
            load["after_cpu"] = [round(x, 2) for x in os.getloadavg()]
            tp_setups = [*live, TWO] if procs else live
            for lat in lats:
                print(f"  {lat} ms: {tp_rounds} x {tp_runs} runs…", file=sys.stderr, flush=True)
                for r in range(tp_rounds):
                    for setup in _rotate(tp_setups, r):
                        prefix = f"{setup}-tp{lat}-{r}"
                        if setup == TWO:
                            assert procs is not None
                            batch = procs.batch(lat, prefix, tp_runs, concurrency)
                            halves = [(f"{prefix}-p{i}", (tp_runs + 1 - i) // 2) for i in (0, 1)]
                            work = [j for p, n in halves for j in jobs(p, n)]
                        else:
                            work = jobs(prefix, tp_runs)
                            batch = await run_batch(opened[setup, lat], work, concurrency)
                        check(setup, by_lat[lat], work, batch)
                        tp[lat].setdefault(setup, []).append(
                            {
                                "runs_s": len(work) / batch.wall_s,
                                "cpu_ms_per_run": batch.cpu_s * 1000 / len(work),
                            }
                        )
                load[f"after_{lat}ms"] = [round(x, 2) for x in os.getloadavg()]
    return {"cpu": cpu, "walls": walls, "tp": tp, "unavailable": unavailable, "loadavg": load}


def _summary(raw: dict[str, Any], sizes: dict[str, Any]) -> dict[str, Any]:
    setups: dict[str, Any] = {}
    for setup, label in LABELS.items():
        row: dict[str, Any] = {"label": label}
        if setup in raw["unavailable"]:
            row["unavailable"] = raw["unavailable"][setup]
        if setup in raw["cpu"]:
            w = raw["walls"][setup]
            row["cpu_ms_per_run"] = round(statistics.median(raw["cpu"][setup]), 2)
            row["cpu_ms_per_run_rounds"] = [round(x, 2) for x in raw["cpu"][setup]]
            row["p50_ms"], row["p95_ms"] = _ms(statistics.median(w)), _ms(_pct(w, 0.95))
            row["p95_over_p50"] = round(row["p95_ms"] / row["p50_ms"], 2)
        for lat, by_setup in raw["tp"].items():
            if setup in by_setup:
                rs = by_setup[setup]
                row[f"runs_s_{lat}ms"] = round(statistics.median(r["runs_s"] for r in rs), 1)
                row[f"runs_s_{lat}ms_rounds"] = [round(r["runs_s"], 1) for r in rs]
                cpu = statistics.median(r["cpu_ms_per_run"] for r in rs)
                row[f"cpu_ms_per_run_{lat}ms_concurrent"] = round(cpu, 2)
        if len(row) > 1:
            setups[setup] = row
    return setups


def _per_round(raw: dict[str, Any], setup: str, figure: str) -> list[float] | None:
    if figure == "cpu":
        values: list[float] | None = raw["cpu"].get(setup)
        return values
    rows = raw["tp"].get("200", {}).get(setup)
    return [r["runs_s"] for r in rows] if rows else None


def goals(raw: dict[str, Any], setups: dict[str, Any]) -> dict[str, Any]:
    """Issue 15's goals: each ratio as the median of the per-round ratios (interleaved)."""
    out: dict[str, Any] = {}
    for name, (num, den, figure, bound, kind) in GOALS.items():
        a, b = _per_round(raw, num, figure), _per_round(raw, den, figure)
        if not a or not b:
            why = setups.get(num, {}).get("unavailable", "not measured")
            out[name] = {"ratio": None, "goal": bound, "met": False, "why": why}
            continue
        ratios = [x / y for x, y in zip(a, b, strict=False)]
        ratio = round(statistics.median(ratios), 2)
        met = ratio <= bound if kind == "max" else ratio >= bound
        out[name] = {
            "ratio": ratio,
            "ratio_rounds": [round(r, 2) for r in ratios],
            "goal": f"{'<=' if kind == 'max' else '>='} {bound}",
            "met": met,
        }
    default = setups.get("tierflow", {})
    if "p95_over_p50" in default:
        r = default["p95_over_p50"]
        out["tierflow_p95_over_p50"] = {"ratio": r, "goal": f"<= {P95_GOAL}", "met": r <= P95_GOAL}
    return out


PACKAGES = (
    "openai",
    "openai-agents",
    "pydantic-ai-slim",
    "langgraph",
    "langgraph-checkpoint-sqlite",
    "langchain-openai",
)


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def measure(
    setups: Sequence[str] = tuple(SETUPS),
    sizes: dict[str, Any] | None = None,
    latencies: Sequence[str] = ("0", "200"),
    two: bool = True,
) -> dict[str, Any]:
    """Run the three phases; the figures per setup, the goals and the load average."""
    sizes = {**FULL, **(sizes or {})}
    started = time.perf_counter()
    raw = asyncio.run(_measure(list(setups), sizes, list(latencies), two))
    table = _summary(raw, sizes)
    return {
        "task": "one agent, one local tool (add), 2 chat-completions calls per run",
        "backend": "ScriptedServer (OpenAI-compatible HTTP on 127.0.0.1, its own process)",
        "checks": "each run: exactly 2 HTTP requests carrying its marker, the right final text",
        "cpu": "process CPU time (time.process_time, all threads) over each batch / runs",
        "versions": _versions(),
        "sizes": sizes,
        "ideal_runs_s_200ms": round(sizes["concurrency"] / (2 * LATENCIES["200"]), 1),
        "setups": table,
        "goals": goals(raw, table),
        "loadavg": raw["loadavg"],
        "duration_s": round(time.perf_counter() - started, 1),
    }


def run() -> dict[str, Any]:
    """``tierflow bench peers``: the full size."""
    return measure()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tierflow.bench.peers [--quick] [--rounds N] [--runs N] [--tp-rounds N]
    [--tp-runs N] [--concurrency N] [--setups a,b] [--latencies 0,200] [--record]``."""
    import argparse
    import json

    from tierflow.bench.record import record_results

    parser = argparse.ArgumentParser(prog="python -m tierflow.bench.peers")
    parser.add_argument("--quick", action="store_true", help="2 CPU rounds of 10, 1 of each load")
    for key in FULL:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated setups")
    parser.add_argument("--no-two-processes", action="store_true", help=f"leave out {TWO}")
    parser.add_argument("--latencies", default="0,200", help="throughput phases: 0 and/or 200")
    parser.add_argument("--record", action="store_true", help="write bench/results/peers.json")
    args = parser.parse_args(argv)
    setups = [s for s in args.setups.split(",") if s]
    lats = [x for x in args.latencies.split(",") if x]
    if bad := [s for s in setups if s not in SETUPS] + [x for x in lats if x not in LATENCIES]:
        parser.error(f"unknown setup or latency: {', '.join(bad)}")
    sizes = {**(QUICK if args.quick else FULL)}
    sizes.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    figures = measure(setups, sizes, lats, not args.no_two_processes)
    command = " ".join(["python -m tierflow.bench.peers", *(argv or sys.argv[1:])])
    if args.record:
        record_results("peers", figures, Path("bench/results"), command=command)
    else:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
