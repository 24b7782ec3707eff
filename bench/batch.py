"""Batch: ``tierflow batch`` with 1 and 2 worker processes on the same questions.

Each question is one model call (the ``direct`` graph) to an ``openai:`` backend that is a
``ScriptedServer`` with 200 ms latency, in its own process so its threads do not share a
GIL with the batch. With ``CONCURRENCY`` questions in flight the latency-bound ideal is
``QUESTIONS / CONCURRENCY * 0.2`` s; past it the run is CPU-bound on one event loop, which
is what ``--processes 2`` spreads over both cores. Each command runs as a user would run
it (a subprocess, cold start included); a two-question batch measures the start-up
(spawning and importing the workers), so the rate net of start-up is also given.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTIONS = 600
CONCURRENCY = 64
LATENCY_S = 0.2
ROUNDS = 3

_SERVER = """
import sys, time
from tierflow.testing import Reply, ScriptedServer

def answer(body):
    asked = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    return Reply.text("answer to " + asked, delay=float(sys.argv[1]))

server = ScriptedServer(api_key="sk-bench")
server.set_default(answer)
print(server.base_url, flush=True)
sys.stdin.read()  # until the benchmark closes stdin
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _batch(folder: Path, env: dict[str, str], n: int, processes: int) -> dict[str, float]:
    questions = folder / f"in-{n}.jsonl"
    questions.write_text(
        "".join(json.dumps({"question": f"question {k}"}) + "\n" for k in range(n))
    )
    out = folder / f"out-{n}-{processes}.jsonl"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "tierflow", "batch", str(questions), "-q"]
    command += ["-g", "direct", "-n", str(CONCURRENCY), "-p", str(processes), "-o", str(out)]
    cpu, started = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"tierflow batch failed: {done.stderr.strip()[-300:]}")
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == n and all(r["answer"].startswith("answer to ") for r in results)
    return {"wall_s": wall, "cpu_s": _children_cpu() - cpu}


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(LATENCY_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            (folder / "tierflow.toml").write_text(
                '[tiers.reasoning]\nbackends = ["openai:gpt-4o"]\n[telemetry]\nenabled = false\n'
            )
            env = {
                **os.environ,
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": url,
                "XDG_STATE_HOME": str(folder / "state"),
            }
            load_before = os.getloadavg()[0]
            # Interleaved rounds (1, 2, 1, 2, ...): the machine's other load hits both alike.
            starts: dict[int, list[float]] = {1: [], 2: []}
            runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
            for _ in range(ROUNDS):
                for processes in (1, 2):
                    starts[processes].append(_batch(folder, env, 2, processes)["wall_s"])
                    runs[processes].append(_batch(folder, env, QUESTIONS, processes))
            figures: dict[str, Any] = {}
            for processes in (1, 2):
                wall = statistics.median(r["wall_s"] for r in runs[processes])
                cpu = statistics.median(r["cpu_s"] for r in runs[processes])
                start = statistics.median(starts[processes])
                figures[f"processes_{processes}"] = {
                    "wall_s": round(wall, 2),
                    "questions_per_s": round(QUESTIONS / wall, 1),
                    "cpu_ms_per_question": round(1000 * cpu / QUESTIONS, 1),
                    "startup_s": round(start, 2),
                    "questions_per_s_after_startup": round(
                        QUESTIONS / max(wall - start + LATENCY_S, 1e-9), 1
                    ),
                    "walls_s": [round(r["wall_s"], 2) for r in runs[processes]],
                }
            figures["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        finally:
            server.communicate("")
    one, two = figures["processes_1"], figures["processes_2"]
    return {
        "questions": QUESTIONS,
        "concurrency": CONCURRENCY,
        "model_latency_ms": int(LATENCY_S * 1000),
        "model_calls_per_question": 1,
        "latency_bound_ideal_s": round(QUESTIONS / CONCURRENCY * LATENCY_S, 2),
        "cpus": os.cpu_count(),
        **figures,
        "speedup_wall": round(one["wall_s"] / two["wall_s"], 2),
        "speedup_after_startup": round(
            two["questions_per_s_after_startup"] / one["questions_per_s_after_startup"], 2
        ),
        "note": "medians of interleaved rounds; wall includes start-up (a 2-question "
        "batch: spawning and importing the workers); cpu is the batch's processes, not "
        "the scripted server's (which shares the 2 cores); load_average_1min is the "
        "machine's before and after (other jobs share it)",
    }
