"""Load: 200 concurrent conversations on one Runner, backends with 200 ms latency, and the
primary reasoning backend going down half-way through.

Each conversation is ``router -> agent (asks for a tool) -> tool -> agent (answers)``:
three sequential model calls, so with 200 ms a call the latency-bound ideal is 0.6 s
whatever the concurrency. The goal is every conversation completing or failing cleanly,
none lost (each thread's SQLite checkpoint holds its messages), in under 1.3x the ideal.

The backends are in-process scripted chat models that wait 200 ms (``asyncio.sleep``)
and answer by what they are asked, not the ScriptedServer over HTTP: the ScriptedServer
replies from one FIFO queue, which cannot script 200 interleaved multi-turn conversations,
and its listening socket (socketserver's backlog of 5) resets connections beyond a few
dozen simultaneous ones (measured: 29 of 50 and 49 of 200 concurrent requests failed
with ReadError). So HTTP client costs (~1-3 ms of CPU a call) are not in these figures.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import PrivateAttr

from tierflow import Agent, BuildContext, Route, Runner, load_settings, router_graph, tool
from tierflow.errors import TierflowError
from tierflow.models.tiers import Tier
from tierflow.resilience import breaker_for
from tierflow.runner.lease import ThreadLeases
from tierflow.settings import TierflowSettings
from tierflow.testing import ScriptedBackend, ScriptedChatModel, scripted_tier

CONVERSATIONS = 200
LATENCY_S = 0.2
MODEL_CALLS = 3  # router, agent (tool call), agent (answer)
SWEEP = (25, 50, 100)  # smaller loads, to show where the CPU bound starts
SEQUENTIAL = 30  # conversations one at a time with instant models: CPU cost per run
GOAL = 1.3
REPEATS = 3
ANSWER = "The value of k is 42."
PRIMARY = "openai:primary"


class _Endpoint(ScriptedChatModel):
    """A backend with network latency that answers by what it is asked (route, tool call,
    or the answer once the tool result is in), and can go down after some requests."""

    latency: float = LATENCY_S
    #: Requests served before it starts refusing connections (None: never).
    fail_after: int | None = None
    _requests: int = PrivateAttr(default=0)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> Any:
        self._requests += 1
        if self.fail_after is not None and self._requests > self.fail_after:
            # A dead host refuses at once: no latency.
            raise ConnectionRefusedError(111, "Connection refused (scripted outage)")
        if self.latency:
            await asyncio.sleep(self.latency)
        # One event-loop thread: enqueue-then-answer cannot interleave with another call.
        if "response_format" in kwargs:
            self.enqueue({"route": "lookup"})
        elif isinstance(messages[-1], ToolMessage):
            self.enqueue(ANSWER)
        else:
            call = {"name": "lookup", "args": {"key": "k"}, "id": "abcdefghi", "type": "tool_call"}
            self.enqueue(AIMessage(content="", tool_calls=[call]))
        return self._generate(messages, stop, None, **kwargs)


@tool
async def lookup(key: str) -> str:
    """Look up a key.

    Args:
        key: The key.
    """
    return f"{key} = 42"


def _factory(ctx: BuildContext) -> Any:
    agent = Agent(name="agent", tier="reasoning", instructions="Use lookup.", tools=[lookup])
    general = Agent(name="general", tier="reasoning", instructions="Answer.")
    routes = {
        "lookup": Route(description="looking up keys", agent=agent),
        "general": Route(description="anything else", agent=general),
    }
    return router_graph(ctx.tiers, routes)


def _tiers(latency: float, settings: TierflowSettings) -> tuple[dict[str, Tier], _Endpoint]:
    primary = _Endpoint(latency=latency)
    secondary = _Endpoint(latency=latency)
    first = ScriptedBackend(primary, id=PRIMARY, local=False)
    # The primary's breaker as a configured backend has it: its row in the state dir's
    # breakers.sqlite, shared by every process on that dir.
    first.breaker = breaker_for(settings, first.id)
    reasoning = Tier(
        name="reasoning",
        backends=[first, ScriptedBackend(secondary, id="vllm:secondary")],
    )
    router = scripted_tier("router", _Endpoint(latency=latency))
    return {"router": router, "reasoning": reasoning}, primary


async def verify(state_dir: Path, threads: Sequence[str]) -> int:
    """Threads whose checkpoint lacks the question and an answer (lost conversations)."""
    lost = 0
    path = state_dir / "checkpoints.sqlite"
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        for thread in threads:
            saved = await saver.aget_tuple({"configurable": {"thread_id": thread}})
            messages = saved.checkpoint["channel_values"].get("messages", []) if saved else []
            if len(messages) < 2 or not isinstance(messages[-1], AIMessage):
                lost += 1
    return lost


async def share(
    threads: Sequence[str],
    state_dir: Path,
    *,
    latency: float = LATENCY_S,
    ready: Callable[[], None] | None = None,
    leases: ThreadLeases | None = None,
) -> dict[str, Any]:
    """Run ``threads`` at once on one Runner (one process's share of the load); the
    primary fails after half of this share's calls to it. ``ready`` is called after the
    warm-up and before the timed block (the multi-process benchmark's start line).

    Raw figures: outcomes, latencies, CPU (``time.process_time``: every thread of the
    process, aiosqlite's too), and the block's start and end on the system-wide
    monotonic clock (comparable between processes on one machine)."""
    settings = load_settings(state_dir=state_dir)
    tiers, primary = _tiers(latency, settings)
    outcomes = {"completed": 0, "degraded": 0, "failed_cleanly": 0, "crashed": 0}
    fell_back = 0
    latencies: list[float] = []

    async def one(thread: str) -> None:
        nonlocal fell_back
        started = time.perf_counter()
        try:
            record = await runner.ask("What is k?", graph="load", thread_id=thread)
        except TierflowError:
            outcomes["failed_cleanly"] += 1
            return
        except Exception:
            outcomes["crashed"] += 1
            return
        latencies.append(time.perf_counter() - started)
        ok = record.status == "completed" and not record.degraded and record.answer == ANSWER
        outcomes["completed" if ok else "degraded"] += 1
        # answered past the primary: it refused, or its breaker (open) skipped it
        fell_back += any(s.tier == "reasoning" and s.backend != PRIMARY for s in record.steps)

    graphs = {"load": _factory}
    async with Runner(settings, tiers=tiers, graphs=graphs, leases=leases) as runner:
        await runner.ask("warm up", graph="load", thread_id=f"warmup-{threads[0]}")
        primary.fail_after = primary._requests + len(threads)  # half of 2 calls each
        if ready is not None:
            ready()
        cpu, loop_cpu, start = time.process_time(), time.thread_time(), time.monotonic()
        await asyncio.gather(*(one(t) for t in threads))
        end = time.monotonic()
        cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
    return {
        "pid": os.getpid(),
        "conversations": len(threads),
        **outcomes,
        "fell_back": fell_back,
        "primary_refused": max(0, primary._requests - primary.fail_after),
        "latencies": latencies,
        "cpu_s": cpu,
        "loop_cpu_s": loop_cpu,
        "start": start,
        "end": end,
    }


def summary(n: int, parts: Sequence[dict[str, Any]], lost: int, latency: float) -> dict[str, Any]:
    """The figures of ``n`` conversations run in one or several shares (processes)."""
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    cpu = sum(p["cpu_s"] for p in parts)
    ideal = round(MODEL_CALLS * latency, 3)
    latencies = sorted(x for p in parts for x in p["latencies"])
    return {
        "conversations": n,
        **{k: sum(p[k] for p in parts) for k in ("completed", "degraded", "failed_cleanly")},
        "crashed": sum(p["crashed"] for p in parts),
        "lost": lost,
        "fell_back": sum(p["fell_back"] for p in parts),
        "wall_s": round(wall, 3),
        "ideal_s": ideal,
        "ratio_to_ideal": round(wall / ideal, 2) if ideal else None,
        "goal_met": bool(ideal) and wall <= GOAL * ideal,
        "conversations_per_s": round(n / wall, 1),
        "conversation_s_p50": round(statistics.median(latencies), 3) if latencies else None,
        "conversation_s_max": round(latencies[-1], 3) if latencies else None,
        # each process's primary: requests served before it refused (its share's half)
        "primary_refused_after_requests": [p["conversations"] for p in parts],
        "primary_refusals": [p["primary_refused"] for p in parts],
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_conversation": round(cpu * 1000 / n, 2),
        # the event loops' own threads; the rest is mostly aiosqlite's worker threads
        "loop_thread_cpu_s": round(sum(p["loop_cpu_s"] for p in parts), 3),
    }


async def _load(n: int, state_dir: Path, *, latency: float = LATENCY_S) -> dict[str, Any]:
    """``n`` concurrent conversations on one Runner in this process."""
    threads = [f"load-{i}" for i in range(n)]
    part = await share(threads, state_dir, latency=latency)
    return summary(n, [part], await verify(state_dir, threads), latency)


async def _sequential(state_dir: Path) -> float:
    """CPU ms per conversation with instant models, one conversation at a time."""
    settings = load_settings(state_dir=state_dir)
    tiers, _ = _tiers(0.0, settings)
    async with Runner(settings, tiers=tiers, graphs={"load": _factory}) as r:
        await r.ask("warm up", graph="load", thread_id="warmup")
        cpu = time.process_time()
        for i in range(SEQUENTIAL):
            await r.ask("What is k?", graph="load", thread_id=f"seq-{i}")
        return (time.process_time() - cpu) * 1000 / SEQUENTIAL


# Inclusive costs worth naming: (where, the file's path ending, the function).
_PARTS = (
    ("runner (Runner._run: checks, LangGraph loop, record)", "tierflow/runner/runner.py", "_run"),
    ("LangGraph loop (astream; nodes run in tasks)", "langgraph/pregel/main.py", "astream"),
    ("model calls (tier chain + langchain-core)", "tierflow/models/tiers.py", "acall"),
    ("guardrail stages", "guardrails/runtime.py", "check"),
    ("telemetry spans", "tierflow/telemetry/spans.py", "span"),
    ("checkpoint writes (main-thread side)", "checkpoint/sqlite/aio.py", "aput"),
    ("checkpoint pending writes", "checkpoint/sqlite/aio.py", "aput_writes"),
    ("checkpoint reads", "checkpoint/sqlite/aio.py", "aget_tuple"),
    ("tool runs", "tools/tool.py", "run"),
)


def _profile(state_dir: Path) -> dict[str, Any]:
    """What the event loop's thread spends per conversation, 200 at once (cProfile, so
    inflated by the profiler: compare the parts, not the totals with other figures).
    Inclusive times overlap: model calls include their spans. ``idle`` is the loop
    waiting in epoll (the latency timers and aiosqlite's worker thread)."""
    profile = cProfile.Profile()
    profile.enable()
    asyncio.run(_load(CONVERSATIONS, state_dir))
    profile.disable()
    stats: Any = cast(Any, pstats.Stats(profile)).stats  # the raw table (not in the stubs)
    parts = dict.fromkeys([label for label, _, _ in _PARTS], 0.0)
    idle = busy = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, cumtime, _callers) in stats.items():
        path = filename.replace("\\", "/")
        if path == "~" and "select.epoll" in name:
            idle += tottime
            continue
        busy += tottime
        for label, suffix, function in _PARTS:
            if path.endswith(suffix) and name == function:
                parts[label] += cumtime
    per = 1000 / CONVERSATIONS
    return {
        "loop_busy_ms_per_conversation": round(busy * per, 2),
        "loop_idle_ms_per_conversation": round(idle * per, 2),
        "inclusive_ms_per_conversation": {k: round(v * per, 2) for k, v in parts.items()},
    }


def run() -> dict[str, Any]:
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        # Repeated: the figure is the median run; the spread shows the machine's noise.
        runs = [asyncio.run(_load(CONVERSATIONS, base / f"main-{i}")) for i in range(REPEATS)]
        main = sorted(runs, key=lambda r: float(r["wall_s"]))[REPEATS // 2]
        sweep = [asyncio.run(_load(n, base / f"sweep-{n}")) for n in SWEEP]
        sequential_cpu = asyncio.run(_sequential(base / "seq"))
        profile = _profile(base / "profile")
    return {
        "graph": "router -> agent -> tool -> agent (3 sequential model calls)",
        "backends": (
            "in-process scripted chat models, 200 ms latency each (asyncio.sleep); reasoning "
            "tier = [openai:primary, vllm:secondary]; the primary refuses connections after "
            "half of its expected calls"
        ),
        "guardrails_enabled": load_settings().guardrails.enabled,
        "loadavg_1m_before": round(load_before, 2),
        "load": main,
        "load_wall_s_all_repeats": [r["wall_s"] for r in runs],
        "sweep": sweep,
        "cpu_ms_per_conversation_sequential": round(sequential_cpu, 2),
        # the event loop's thread cannot go faster than its own CPU time
        "cpu_bound_floor_s": main["loop_thread_cpu_s"],
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "profile": profile,
        "note": (
            "wall >= max(latency-bound ideal, CPU the event loop must spend); one Python "
            "event loop uses one core, so CPU per conversation x conversations is a floor"
        ),
    }
