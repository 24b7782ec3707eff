"""Framework overhead: one ``ask`` on the default graph with scripted backends that answer
instantly, so all measured time is tierflow + LangGraph + the SQLite checkpointer."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tierflow.runner import Runner
from tierflow.settings import load_settings
from tierflow.testing import ScriptedChatModel, scripted_tier

WARMUP = 20
RUNS = 300
NODES = 2  # router + one specialist


async def _measure(state_dir: Path) -> list[float]:
    router = ScriptedChatModel(default='{"route": "general"}')
    answer = ScriptedChatModel(default="ok")
    tiers = {
        "router": scripted_tier("router", router),
        "reasoning": scripted_tier("reasoning", answer),
    }
    times: list[float] = []
    async with Runner(load_settings(state_dir=state_dir), tiers=tiers) as runner:
        for i in range(WARMUP + RUNS):
            started = time.perf_counter()
            await runner.ask("What is a tier?", thread_id=f"bench-{i}")
            if i >= WARMUP:
                times.append((time.perf_counter() - started) * 1000)
    return times


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        times = asyncio.run(_measure(Path(tmp)))
    times.sort()
    p50 = statistics.median(times)
    return {
        "graph": "default (router -> specialist)",
        "runs": RUNS,
        "run_ms_p50": round(p50, 2),
        "run_ms_p95": round(times[int(len(times) * 0.95)], 2),
        "per_node_ms_p50": round(p50 / NODES, 2),
        "note": "scripted backends answer instantly; includes SQLite checkpointing per step",
    }
