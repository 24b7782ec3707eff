"""Framework overhead per checkpointer and durability: one ``ask`` on the default graph
(router -> specialist) with scripted backends that answer instantly, so all measured time
is tierflow + LangGraph + the checkpointer.

Setups are interleaved in rotated rounds in one process (each round runs every setup
``BATCH`` times, in a rotated order), each on an open Runner with its own state dir. Per
run: wall ms (p50/p95) and process CPU ms (``time.process_time``: other processes on the
shared machine do not count). Per SQLite setup: bytes the checkpoint file grew per run
(WAL folded in), with and without retention. ``tierflow bench overhead --limit N`` runs N
runs per setup (default 300).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from tierflow.runner import Runner
from tierflow.settings import load_settings
from tierflow.testing import ScriptedChatModel, scripted_tier

WARMUP = 20
RUNS = 300
BATCH = 10  # runs of one setup in a row, before the next setup's turn

#: name -> [state] settings of the setup.
SETUPS: dict[str, dict[str, Any]] = {
    "sqlite-sync (default)": {},
    # Before: LangGraph's AsyncSqliteSaver (aiosqlite), what the Runner used until now.
    "sqlite-sync AsyncSqliteSaver": {"aiosqlite": True},
    "sqlite-async": {"durability": "async"},
    "sqlite-exit": {"durability": "exit"},
    "sqlite-sync keep_threads=20": {"keep_threads": 20, "prune_every_s": 1.0},
    "memory-sync": {"checkpointer": "memory"},
    "none (stateless)": {"checkpointer": "none"},
}


@dataclass
class _Setup:
    name: str
    runner: Runner
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    done: int = 0


def _tiers() -> dict[str, Any]:
    router = ScriptedChatModel(default='{"route": "general"}')
    answer = ScriptedChatModel(default="ok")
    return {
        "router": scripted_tier("router", router),
        "reasoning": scripted_tier("reasoning", answer),
    }


async def _batch(setup: _Setup, n: int, keep: bool) -> None:
    for _ in range(n):
        thread = f"bench-{setup.done}"
        setup.done += 1
        wall, cpu = time.perf_counter(), time.process_time()
        runner = setup.runner
        record = await runner.ask("What is a tier?", thread_id=None if runner.stateless else thread)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert record.status == "completed" and record.answer == "ok", record
        if keep:
            setup.wall_ms.append(wall * 1000)
            setup.cpu_ms.append(cpu * 1000)


def _db_bytes(state_dir: Path) -> int | None:
    path = state_dir / "checkpoints.sqlite"
    if not path.exists():
        return None
    with sqlite3.connect(path) as conn:  # fold the WAL into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def _summary(setup: _Setup, state_dir: Path) -> dict[str, Any]:
    wall, cpu = sorted(setup.wall_ms), sorted(setup.cpu_ms)
    p50, p95 = statistics.median(wall), wall[int(len(wall) * 0.95)]
    out: dict[str, Any] = {
        "wall_ms_p50": round(p50, 2),
        "wall_ms_p95": round(p95, 2),
        "p95_over_p50": round(p95 / p50, 2),
        "cpu_ms_p50": round(statistics.median(cpu), 2),
        "cpu_ms_p95": round(cpu[int(len(cpu) * 0.95)], 2),
        "cpu_ms_mean": round(statistics.fmean(cpu), 2),
    }
    size = _db_bytes(state_dir)
    if size is not None:
        out["db_bytes"] = size
        out["db_bytes_per_run"] = round(size / setup.done)
    return out


async def _measure(root: Path, runs: int) -> dict[str, Any]:
    setups: list[_Setup] = []
    savers = AsyncExitStack()
    for i, (name, options) in enumerate(SETUPS.items()):
        state = {k: v for k, v in options.items() if k != "aiosqlite"}
        settings = load_settings(False, state_dir=root / str(i), state=state)
        saver = None
        if options.get("aiosqlite"):
            (root / str(i)).mkdir(parents=True)
            db = str(root / str(i) / "checkpoints.sqlite")
            saver = await savers.enter_async_context(AsyncSqliteSaver.from_conn_string(db))
            await saver.setup()
            await saver.conn.execute("PRAGMA synchronous=NORMAL")  # as the Runner had it
        runner = Runner(settings, tiers=_tiers(), checkpointer=saver)
        await runner.__aenter__()
        setups.append(_Setup(name, runner))
    try:
        for setup in setups:
            await _batch(setup, WARMUP, keep=False)
        rounds = max(1, runs // BATCH)
        for r in range(rounds):
            shift = r % len(setups)
            for setup in setups[shift:] + setups[:shift]:
                await _batch(setup, BATCH, keep=True)
    finally:
        for setup in setups:
            await setup.runner.aclose()
        await savers.aclose()
    return {s.name: _summary(s, root / str(i)) for i, s in enumerate(setups)}


def run(runs: int | None = None) -> dict[str, Any]:
    runs = runs or RUNS
    load_before = os.getloadavg()[0]
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        setups = asyncio.run(_measure(Path(tmp), runs))
    return {
        "graph": "default (router -> specialist), scripted backends answering at once",
        "runs_per_setup": (runs // BATCH) * BATCH,
        "interleaving": f"rotated rounds of {BATCH} runs per setup, one process",
        "setups": setups,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "note": "cpu = process CPU time per run; db_bytes_per_run = checkpoints.sqlite after "
        "a TRUNCATE checkpoint of its WAL, over every run of the setup (warm-up included)",
    }
