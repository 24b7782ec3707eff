"""Where one run's CPU goes: ``tierflow bench profile [--tag TAG]``.

The run is the issue's task shape on the defaults (``bench/orchestration.py``'s graph:
router -> specialist asking for one tool call -> tool -> answer; scripted models that
answer instantly): the default guardrails (the injection classifier included), tracing on
(tierflow's own SDK provider, no exporter), the SQLite checkpointer at ``durability="sync"``.
No ``tierflow.toml`` is read, so the figures are the defaults'.

It writes, into the results folder:

- ``profile-TAG.svg``: a flame graph of the runs, sampled by py-spy (every thread: the
  event loop, the SQLite connection's thread, onnxruntime's), attached to this process
  after the warm-up, so start-up and model loading are not in it;
- ``profile-TAG.txt``: cProfile's top functions of the event-loop thread, by cumulative
  and by own CPU time (deterministic, but blind to other threads);
- ``profile-TAG.json``: process CPU per run without any profiler attached, how much of it
  the event-loop thread spent, and the load average (other work on a shared machine
  inflates CPU time too; compare tags measured at similar load, or interleaved).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tierflow import Runner, load_settings
from tierflow.bench.orchestration import tierflow_setup

WARMUP = 30
BLOCKS = 10  # CPU per run: median of blocks
BLOCK = 30
SAMPLED = 300  # runs py-spy samples
PROFILED = 200  # runs under cProfile
SAMPLE_RATE = 250  # Hz: py-spy's default (100) gives few samples of a ~15 ms run
TOP = 40


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


async def _cpu_per_run(runner: Runner, n: int, prefix: str) -> tuple[float, float]:
    """(process CPU ms per run, event-loop thread CPU ms per run) over ``n`` runs."""
    cpu, own = time.process_time(), time.thread_time()
    for i in range(n):
        record = await runner.ask("q", graph="bench", thread_id=f"{prefix}{i}")
        assert record.answer == "done" and record.steps[1].tool_calls[0].ok
    return (time.process_time() - cpu) * 1000 / n, (time.thread_time() - own) * 1000 / n


async def _sampled(runner: Runner, svg: Path) -> str:
    """Run ``SAMPLED`` runs under py-spy; returns what happened (or why not)."""
    exe = _py_spy()
    if exe is None:
        return "py-spy not installed (pip install -e '.[dev]'): no flame graph"
    args = ["record", "--pid", str(os.getpid()), "--rate", str(SAMPLE_RATE), "--nonblocking"]
    spy = await asyncio.create_subprocess_exec(
        exe,
        *args,
        *["--threads", "--format", "flamegraph", "-o", str(svg)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    await asyncio.sleep(1.0)  # py-spy attaches
    if spy.returncode is not None:
        out = await spy.stdout.read() if spy.stdout else b""
        return f"py-spy could not attach: {out.decode().strip()[-300:]}"
    await _cpu_per_run(runner, SAMPLED, "spy")
    spy.send_signal(signal.SIGINT)  # py-spy writes the graph on Ctrl-C
    try:
        out, _ = await asyncio.wait_for(spy.communicate(), 60)
    except TimeoutError:
        spy.kill()
        return "py-spy did not finish writing"
    last = [line for line in out.decode().splitlines() if line.strip()][-1:] or [""]
    return f"py-spy, {SAMPLE_RATE} Hz, {SAMPLED} runs: {last[0].strip()}"


def _top(profile: cProfile.Profile, runs: int) -> str:
    out = io.StringIO()
    out.write(f"cProfile of {runs} runs, event-loop thread only (CPU s for all runs)\n")
    for key in ("cumulative", "tottime"):
        out.write(f"\n=== top {TOP} by {key} ===\n")
        stats = pstats.Stats(profile, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(TOP)
    return out.getvalue()


async def _profile(state_dir: Path, results: Path, tag: str) -> dict[str, Any]:
    graphs, tiers = tierflow_setup()
    settings = load_settings(False, state_dir=state_dir)
    async with Runner(settings, tiers=tiers, graphs=graphs) as runner:
        await _cpu_per_run(runner, WARMUP, "warm")
        blocks = [await _cpu_per_run(runner, BLOCK, f"b{b}-") for b in range(BLOCKS)]
        sampler = await _sampled(runner, results / f"profile-{tag}.svg")
        # CPU time of this thread, not wall time: waiting (epoll, other processes on the
        # machine) is not cost.
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        await _cpu_per_run(runner, PROFILED, "prof")
        profile.disable()
    (results / f"profile-{tag}.txt").write_text(_top(profile, PROFILED))
    process = [p for p, _ in blocks]
    loop = [t for _, t in blocks]
    return {
        "graph": "router -> specialist -> one tool call -> answer (scripted, instant models)",
        "settings": "defaults (no tierflow.toml): default guardrails incl. the injection "
        "classifier, tracing on without exporter, SQLite checkpointer, durability sync",
        "runs": BLOCKS * BLOCK,
        "cpu_ms_per_run_p50": round(statistics.median(process), 2),
        "cpu_ms_per_run_min": round(min(process), 2),
        "event_loop_thread_cpu_ms_per_run_p50": round(statistics.median(loop), 2),
        "flame_graph": f"profile-{tag}.svg",
        "top_functions": f"profile-{tag}.txt",
        "sampler": sampler,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "note": "CPU per run is measured with no profiler attached (median of "
        f"{BLOCKS} blocks of {BLOCK}); other threads (SQLite, onnxruntime, to_thread) are "
        "the difference between process and event-loop-thread CPU",
    }


def run(results: Path, tag: str = "now") -> dict[str, Any]:
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_profile(Path(tmp), results, tag))
