"""Load over processes: ``tierflow bench load --processes P``.

The same 200 conversations as :mod:`tierflow.bench.load`, dealt over P spawned worker
processes, each with its own event loop and ``Runner`` on one shared state dir: one
SQLite checkpoint file, one lease file, one breaker file (``breakers.sqlite``, so a
breaker one process opens is on record for the others). Every process's primary backend
fails half-way through its share, as the single process's does.

The processes start (import, open the Runner, warm up) before the clock starts: they wait
at a barrier, and the timed block runs from the first process's start to the last one's
end on the system-wide monotonic clock. Start-up is reported apart. CPU is each
process's own ``time.process_time`` over its timed block, summed. Rounds of 1 and P
processes are interleaved, so the machine's other load hits both alike; the 1-process
runs go through the same spawned path, so the two differ only in the process count.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tierflow.bench.load import (
    CONVERSATIONS,
    LATENCY_S,
    PRIMARY,
    REPEATS,
    share,
    summary,
    verify,
)
from tierflow.resilience import BreakerStore

#: Start-up (spawn, import, open, warm up) allowed before a worker counts as dead.
START_TIMEOUT_S = 120.0


def _worker(threads: list[str], state_dir: str, latency: float, barrier: Any, out: Any) -> None:
    """One process's share: warm up, wait at the barrier, run, send the raw figures."""
    try:
        part = asyncio.run(
            share(threads, Path(state_dir), latency=latency, ready=lambda: barrier.wait())
        )
        out.put(part)
    except BaseException as exc:  # reported by the parent as a dead worker, in one line
        barrier.abort()
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def deal(n: int, processes: int) -> list[list[str]]:
    """The ``n`` conversation threads dealt round-robin over ``processes`` shares."""
    threads = [f"load-{i}" for i in range(n)]
    return [threads[k::processes] for k in range(processes)]


def spawned(
    n: int, processes: int, state_dir: Path, *, latency: float = LATENCY_S
) -> dict[str, Any]:
    """``n`` conversations over ``processes`` spawned workers on ``state_dir``."""
    ctx = mp.get_context("spawn")
    shares = [s for s in deal(n, processes) if s]
    barrier = ctx.Barrier(len(shares) + 1)
    out: Any = ctx.Queue()
    started = time.monotonic()
    workers = [
        ctx.Process(
            target=_worker,
            args=(s, str(state_dir), latency, barrier, out),
            name=f"tierflow-load-{k}",
            daemon=True,
        )
        for k, s in enumerate(shares)
    ]
    for w in workers:
        w.start()
    try:
        barrier.wait(START_TIMEOUT_S)
        startup = time.monotonic() - started
        parts = [out.get(timeout=START_TIMEOUT_S) for _ in workers]
    except Exception as exc:
        raise RuntimeError(f"a load worker did not start or finish: {exc!r}") from exc
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.terminate()
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise RuntimeError(f"a load worker failed: {errors[0]}")
    threads = [t for s in shares for t in s]
    lost = asyncio.run(verify(state_dir, threads))
    figures = summary(n, parts, lost, latency)
    snap = BreakerStore.in_dir(state_dir).load(PRIMARY)
    return {
        "processes": len(shares),
        "pids": [p["pid"] for p in parts],
        **figures,
        "startup_s": round(startup, 2),
        # the one row every process shares: the primary's breaker as it was left
        "primary_breaker_stored": None
        if snap is None
        else {"state": snap.state.value, "failures": snap.failures},
    }


# How conversations end. (Which of them the primary answered depends on timing: its
# breaker opens at its first refusal, and from then on it is skipped.)
_MIX = ("completed", "degraded", "failed_cleanly", "crashed", "lost")


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(r[key]) for r in runs), 3)


def run(
    processes: int,
    *,
    conversations: int = CONVERSATIONS,
    rounds: int = REPEATS,
    latency: float = LATENCY_S,
) -> dict[str, Any]:
    """Interleaved rounds of 1 and ``processes`` workers; medians and every run."""
    counts = (1, processes)
    load_before = os.getloadavg()
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for c in counts if r % 2 == 0 else counts[::-1]:  # rotated rounds
                state = Path(tmp) / f"p{c}-{r}"
                runs[c].append(spawned(conversations, c, state, latency=latency))
    load_after = os.getloadavg()
    figures: dict[str, Any] = {}
    for c in counts:
        rs = runs[c]
        figures[f"processes_{c}"] = {
            "wall_s": _median(rs, "wall_s"),
            "ratio_to_ideal": _median(rs, "ratio_to_ideal"),
            "conversations_per_s": _median(rs, "conversations_per_s"),
            "cpu_ms_per_conversation": _median(rs, "cpu_ms_per_conversation"),
            "startup_s": _median(rs, "startup_s"),
            "mix": {k: [r[k] for r in rs] for k in _MIX},
            "fell_back": [r["fell_back"] for r in rs],
            "runs": rs,
        }
    one, many = figures["processes_1"], figures[f"processes_{processes}"]
    return {
        "conversations": conversations,
        "processes": processes,
        "ideal_s": round(3 * latency, 3),
        "goal_ratio_to_ideal": 1.3,
        **figures,
        "speedup_conversations_per_s": round(
            many["conversations_per_s"] / one["conversations_per_s"], 2
        ),
        "same_failure_mix": one["mix"] == many["mix"],
        "nothing_lost": all(r["lost"] == 0 and r["crashed"] == 0 for c in counts for r in runs[c]),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        "note": (
            "medians of rotated, interleaved rounds; wall is the timed block (all processes "
            "warmed up and waiting at a barrier), start-up apart; cpu is the workers' own "
            "process CPU over the block, summed; the machine is shared with other jobs "
            "(load averages before and after)"
        ),
    }
