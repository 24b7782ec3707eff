"""Serve: the same graph through ``tierflow serve`` (in-process worker, then 1 and 2
``tierflow worker`` processes on the DBOS queue) against the in-process Runner, with N
concurrent clients, on scripted backends that answer in 200 ms.

Each run is one agent whose model asks for the ``lookup`` tool twice, then answers: three
sequential model calls, so the latency-bound ideal is 0.6 s a run. The model is a
``ScriptedServer`` (OpenAI-compatible HTTP, ``Reply.delay`` of 200 ms: its handler thread
sleeps before answering) in a process of its own, so its CPU is in no figure. Clients are
closed loops: ``concurrency`` of them, each doing ``runs_per_client`` runs one after the
other, each run on a new thread. Server setups use ``langgraph-sdk`` (``threads.create``,
then ``runs.wait``: the latency is the ``runs.wait`` call); the Runner setup calls
``Runner.ask`` in one event loop. CPU per run is the process CPU time (user + system,
from /proc) of the processes that execute runs: the bench process for the Runner setup
(nothing else runs there), the API process and the worker processes for the servers
(the clients' CPU is reported apart).

``tierflow serve`` takes its graphs from the registry, so the API process is the CLI's
``serve`` command started by a two-line launcher that registers this module's graph as
``bench`` first; the workers are plain ``tierflow worker --graph bench=...``.

Everything listens on 127.0.0.1; every process started here is stopped (SIGTERM, then
SIGKILL after a bounded wait) and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.graph import START, StateGraph

from tierflow import Agent, BuildContext, add_agent, tool
from tierflow.state import GraphState

LATENCY_S = 0.2
MODEL_CALLS = 3  # tool call, tool call, answer
LEVELS = (5, 10, 25, 50, 100, 200)
RUNS_PER_CLIENT = 2
SETUPS = ("runner", "serve", "serve-dbos-1", "serve-dbos-2")
LABELS = {
    "runner": "(a) in-process Runner (Runner.ask, one event loop)",
    "serve": "(b) tierflow serve, in-process worker",
    "serve-dbos-1": "(c) tierflow serve --worker-engine dbos, 1 tierflow worker",
    "serve-dbos-2": "(d) tierflow serve --worker-engine dbos, 2 tierflow workers",
}
GRAPH = "bench"
ANSWER = "k is 42."
QUESTION = "What is k?"
CORES = 2
#: Goals of issue 11.
CPU_GOAL = 1.15
SCALE_GOAL = 1.8
P99_GOAL = 1.5
LEVEL_TIMEOUT_S = 90.0
START_TIMEOUT_S = 60.0


@tool
def lookup(key: str) -> str:
    """Look up a key.

    Args:
        key: The key.
    """
    return f"{key} = 42"


def factory(ctx: BuildContext) -> StateGraph[GraphState]:
    """One agent with the ``lookup`` tool (importable by ``tierflow worker --graph``)."""
    agent = Agent(name="clerk", tier="t", tools=[lookup], instructions="Use lookup.")
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph


# -- the scripted backend, in its own process -------------------------------------------


def backend_main(latency: float) -> None:
    """Serve the script (two tool calls, then the answer, each after ``latency``) until
    stdin closes; print the base URL first."""
    from tierflow.testing import Reply, ScriptedServer

    def rule(body: dict[str, Any]) -> Reply:
        done = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        if done < MODEL_CALLS - 1:
            return Reply.tool_calls([("lookup", {"key": f"k{done}"})], delay=latency)
        return Reply.text(ANSWER, delay=latency)

    with ScriptedServer() as server:
        server.set_default(rule)
        print(server.base_url, flush=True)
        sys.stdin.read()  # the parent closes it (or dies) to stop us


@contextlib.contextmanager
def _backend(latency: float) -> Iterator[str]:
    code = f"from tierflow.bench.serve import backend_main; backend_main({latency!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the scripted backend did not start (got {url!r})")
        yield url
    finally:
        _stop([proc])


def _stop(procs: Sequence[subprocess.Popen[Any]], grace: float = 20.0) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                if p.stdin:
                    p.stdin.close()
                p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# -- CPU time of processes -----------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


# -- the setups ------------------------------------------------------------------------------


def _config(work: Path, backend_url: str, *, worker: str, concurrency: int) -> Path:
    path = work / "tierflow.toml"
    path.write_text(
        f'state_dir = "{work / "state"}"\n'
        '[tiers.t]\nbackends = ["vllm:scripted-model"]\n'
        f'[backends.vllm]\nbase_url = "{backend_url}"\ntool_calling = "native"\n'
        "[telemetry]\nenabled = false\n"
        # Admission never limits the ladder: every client's run executes at once.
        f'[server]\nworker = "{worker}"\nmax_concurrency = {concurrency}\n'
        f"max_queue = {4 * concurrency}\n"
    )
    return path


@dataclass
class Level:
    concurrency: int
    runs: int
    latencies: list[float] = field(default_factory=list)
    #: Why runs failed: exception type (and HTTP status), or "timed out".
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    #: The machine's 1-minute load average when the level ended (the cores are shared).
    loadavg_1m: float = 0.0

    def figures(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        ok = len(lat)

        def pct(q: float) -> float | None:
            return round(lat[min(ok - 1, int(q * ok))], 3) if ok else None

        return {
            "concurrency": self.concurrency,
            "runs": self.runs,
            "completed": ok,
            "failed": self.runs - ok,
            "wall_s": round(self.wall_s, 3),
            "throughput_runs_s": round(ok / self.wall_s, 2) if self.wall_s else None,
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p99_s": pct(0.99),
            "max_s": round(lat[-1], 3) if lat else None,
            "cpu_ms_per_run": round(self.cpu_s * 1000 / ok, 2) if ok else None,
            "client_cpu_ms_per_run": round(self.client_cpu_s * 1000 / ok, 2) if ok else None,
            "errors": dict(self.errors),
            "loadavg_1m": round(self.loadavg_1m, 2),
        }


async def _closed_loop(
    level: Level, per_client: int, one: Any, cpu: Any, deadline_s: float
) -> None:
    """``level.concurrency`` clients, each running ``per_client`` runs in a row."""

    async def client(i: int) -> None:
        for _ in range(per_client):
            try:
                latency = await one(i)
            except Exception as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                level.errors[type(exc).__name__ + (f" {status}" if status else "")] += 1
                continue
            if latency is None:
                level.errors["wrong answer"] += 1
            else:
                level.latencies.append(latency)

    cpu0, mine0, wall0 = cpu(), time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(client(i)) for i in range(level.concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
        level.errors["timed out"] = level.runs - len(level.latencies) - sum(level.errors.values())
    level.wall_s = time.perf_counter() - wall0
    level.cpu_s = cpu() - cpu0
    level.client_cpu_s = time.process_time() - mine0
    level.loadavg_1m = os.getloadavg()[0]


async def _runner_levels(
    config: Path, levels: Sequence[int], per_client: int, deadline_s: float
) -> list[Level]:
    from tierflow import Runner, load_settings

    out = []
    async with Runner(load_settings(config), graphs={GRAPH: factory}) as runner:
        await runner.ask(QUESTION, graph=GRAPH, thread_id="warm-up")

        async def one(_: int) -> float | None:
            started = time.perf_counter()
            record = await runner.ask(QUESTION, graph=GRAPH, thread_id=str(uuid.uuid4()))
            ok = record.status == "completed" and record.answer == ANSWER
            return time.perf_counter() - started if ok else None

        for n in levels:
            level = Level(n, n * per_client)
            await _closed_loop(level, per_client, one, time.process_time, deadline_s)
            level.client_cpu_s = 0.0  # the clients are the Runner's own loop here
            out.append(level)
    return out


def _launch_serve(config: Path, port: int, engine: str, log: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys\n"
        "from tierflow.graphs.registry import register_graph\n"
        "from tierflow.bench.serve import factory\n"
        f"register_graph({GRAPH!r}, factory)\n"
        f"sys.argv = ['tierflow', 'serve', '--config', {str(config)!r}, '--port', '{port}',"
        f" '--host', '127.0.0.1', '--worker-engine', {engine!r}]\n"
        "from tierflow.cli.app import main\n"
        "main()\n"
    )
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, cwd=config.parent
    )


def _launch_worker(config: Path, name: str, log: Path) -> subprocess.Popen[bytes]:
    args = ["worker", "--config", str(config), "--graph", f"{GRAPH}=tierflow.bench.serve:factory"]
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "tierflow", *args, "--id", name],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ok(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"tierflow serve exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ok", timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("tierflow serve did not answer /ok in time")
        time.sleep(0.1)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while b"ready" not in log.read_bytes():
        if proc.poll() is not None:
            raise RuntimeError(f"tierflow worker exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("tierflow worker never got ready")
        time.sleep(0.1)


async def _server_levels(
    url: str, pids: Sequence[int], levels: Sequence[int], per_client: int, deadline_s: float
) -> list[Level]:
    from langgraph_sdk import get_client

    question: dict[str, Any] = {"messages": [{"role": "user", "content": QUESTION}]}
    clients = [get_client(url=url, api_key=None) for _ in range(max(levels))]

    async def one(i: int) -> float | None:
        c = clients[i]
        thread = await c.threads.create()
        started = time.perf_counter()
        values: Any = await c.runs.wait(thread["thread_id"], GRAPH, input=question)
        ok = values["messages"][-1]["content"] == ANSWER
        return time.perf_counter() - started if ok else None

    def cpu() -> float:
        return sum(cpu_seconds(p) for p in pids)

    out = []
    try:
        await one(0)  # warm-up: compile, open, import
        for n in levels:
            level = Level(n, n * per_client)
            await _closed_loop(level, per_client, one, cpu, deadline_s)
            out.append(level)
            if level.errors.get("timed out"):
                break  # its runs still hold the server: higher levels would measure that
    finally:
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    return out


def _server_setup(
    work: Path,
    backend_url: str,
    engine: str,
    workers: int,
    levels: Sequence[int],
    per_client: int,
    deadline_s: float,
) -> list[Level]:
    config = _config(work, backend_url, worker=engine, concurrency=max(levels))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = _launch_serve(config, port, engine, work / "serve.log")
        procs.append(api)
        _wait_ok(url, api, work / "serve.log")  # the queue's tables exist before workers
        for i in range(workers):
            log = work / f"worker-{i}.log"
            procs.append(_launch_worker(config, f"bench-worker-{i}", log))
            _wait_ready(procs[-1], log)
        return asyncio.run(
            _server_levels(url, [p.pid for p in procs], levels, per_client, deadline_s)
        )
    finally:
        _stop(procs[1:])  # workers first: they drain, then the API
        _stop(procs[:1])


def measure(
    setups: Sequence[str] = SETUPS,
    levels: Sequence[int] = LEVELS,
    runs_per_client: int = RUNS_PER_CLIENT,
    latency: float = LATENCY_S,
    deadline_s: float = LEVEL_TIMEOUT_S,
) -> dict[str, list[dict[str, Any]]]:
    """Each setup at each concurrency level: throughput, p50/p99, CPU per run."""
    out: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, _backend(latency) as backend_url:
        for setup in setups:
            work = Path(tmp) / setup
            work.mkdir()
            print(f"  {setup}…", file=sys.stderr, flush=True)
            if setup == "runner":
                config = _config(work, backend_url, worker="inprocess", concurrency=max(levels))
                result = asyncio.run(_runner_levels(config, levels, runs_per_client, deadline_s))
            elif setup == "serve":
                result = _server_setup(
                    work, backend_url, "inprocess", 0, levels, runs_per_client, deadline_s
                )
            elif setup.startswith("serve-dbos-"):
                workers = int(setup.rsplit("-", 1)[1])
                result = _server_setup(
                    work, backend_url, "dbos", workers, levels, runs_per_client, deadline_s
                )
            else:
                raise ValueError(f"unknown setup {setup!r}")
            out[setup] = [lv.figures() for lv in result]
    return out


# -- the goals -------------------------------------------------------------------------------


def _clean(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The levels where every run completed (a failed level's CPU per run means nothing)."""
    return [r for r in rows if r["failed"] == 0 and r["completed"]]


def _total_cpu_ms(rows: Sequence[dict[str, Any]]) -> float | None:
    rows = _clean(rows)
    runs = sum(r["completed"] for r in rows)
    cpu = sum(r["cpu_ms_per_run"] * r["completed"] for r in rows)
    return round(cpu / runs, 2) if runs else None


def goals(results: dict[str, list[dict[str, Any]]], latency: float = LATENCY_S) -> dict[str, Any]:
    """Issue 11's goals, each met or missed with its figure (CPU from the clean levels)."""
    ideal = MODEL_CALLS * latency
    out: dict[str, Any] = {"latency_bound_ideal_s": round(ideal, 3)}
    base = _total_cpu_ms(results.get("runner", []))
    overhead = {}
    for setup in ("serve", "serve-dbos-1", "serve-dbos-2"):
        if setup not in results:
            continue
        cpu = _total_cpu_ms(results[setup])
        ratio = round(cpu / base, 2) if base and cpu else None
        overhead[setup] = {
            "cpu_ms_per_run": cpu,
            "runner_cpu_ms_per_run": base,
            "ratio": ratio,
            "goal": CPU_GOAL,
            "met": ratio is not None and ratio <= CPU_GOAL,
        }
    out["cpu_overhead_vs_runner"] = overhead
    one, two = results.get("serve-dbos-1"), results.get("serve-dbos-2")
    if one and two:
        by_level = {}
        for a in one:
            b = next((r for r in two if r["concurrency"] == a["concurrency"]), None)
            if b is None or a["failed"] or b["failed"]:  # a broken level says nothing here
                continue
            ta, tb = a["throughput_runs_s"], b["throughput_runs_s"]
            by_level[str(a["concurrency"])] = round(tb / ta, 2) if ta and tb else None
        top = max((int(k) for k, v in by_level.items() if v is not None), default=None)
        ratio = by_level[str(top)] if top is not None else None
        out["two_workers_vs_one"] = {
            "throughput_ratio_by_level": by_level,
            "at_concurrency": top,
            "ratio": ratio,
            "goal": SCALE_GOAL,
            "met": ratio is not None and ratio >= SCALE_GOAL,
        }
    p99 = {}
    for setup, rows in results.items():
        cpu = _total_cpu_ms(rows)
        # Little's law: the concurrency 2 cores sustain at the ideal latency.
        carried = CORES / (cpu / 1000) * ideal if cpu else None
        clean = _clean(rows)
        within = [r for r in clean if carried is not None and r["concurrency"] <= carried]
        row = within[-1] if within else (clean[0] if clean else None)
        bend = next(
            (
                r["concurrency"]
                for r in rows
                if r["failed"] or r["p99_s"] is None or r["p99_s"] > P99_GOAL * ideal
            ),
            None,
        )
        p99s = row["p99_s"] if row else None
        ratio = round(p99s / ideal, 2) if p99s and ideal else None
        p99[setup] = {
            "carryable_concurrency": round(carried, 1) if carried else None,
            "judged_at_concurrency": row["concurrency"] if row else None,
            "p99_s": p99s,
            "ratio_to_ideal": ratio,
            "goal": P99_GOAL,
            "met": ratio is not None and ratio <= P99_GOAL,
            "p99_bends_at_concurrency": bend,
        }
    out["p99_vs_ideal"] = p99
    return out


def run() -> dict[str, Any]:
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = measure()
    return {
        "graph": "one agent: tool call, tool call, answer (3 sequential model calls)",
        "backend": (
            "ScriptedServer (OpenAI-compatible HTTP on 127.0.0.1, its own process), "
            f"{int(LATENCY_S * 1000)} ms per reply (Reply.delay)"
        ),
        "setups": LABELS,
        "clients": (
            "closed loop: N concurrent clients, each "
            f"{RUNS_PER_CLIENT} runs in a row, each on a new thread; servers through "
            "langgraph-sdk (one client each: threads.create, then runs.wait, the latency "
            "being runs.wait), the Runner through Runner.ask in one event loop"
        ),
        "runs_per_level": {str(n): n * RUNS_PER_CLIENT for n in LEVELS},
        "cpu": (
            "process CPU (user+system, /proc) of the bench process for the Runner, of the "
            "API and worker processes for the servers; client_cpu: the sdk clients"
        ),
        "server_settings": (
            f"[server] max_concurrency = {max(LEVELS)}, max_queue = {4 * max(LEVELS)} "
            "(admission never limits the ladder); telemetry off; defaults otherwise"
        ),
        "loadavg_before": [round(x, 2) for x in load_before],
        "results": results,
        "goals": goals(results),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "duration_s": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tierflow.bench.serve [--setups a,b] [--levels 5,10] [--runs-per-client N]``:
    a partial run printed as JSON (not recorded), to reproduce or profile one setup."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m tierflow.bench.serve")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated setups")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="client counts")
    parser.add_argument("--runs-per-client", type=int, default=RUNS_PER_CLIENT)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the setups this many times, their order reversed every other round "
        "(on a shared machine, interleaving is what makes two setups comparable)",
    )
    args = parser.parse_args(argv)
    setups = [s for s in args.setups.split(",") if s]
    unknown = set(setups) - set(SETUPS)
    if unknown:
        parser.error(f"unknown setup(s) {', '.join(sorted(unknown))}; known: {', '.join(SETUPS)}")
    levels = [int(n) for n in args.levels.split(",") if n]
    if args.rounds == 1:
        results = measure(setups, levels, args.runs_per_client)
        print(json.dumps({"results": results, "goals": goals(results)}, indent=1))
        return
    rounds = []
    for i in range(args.rounds):
        for setup in setups if i % 2 == 0 else setups[::-1]:
            rows = measure([setup], levels, args.runs_per_client)[setup]
            rounds.append({"round": i, "setup": setup, "levels": rows})
    print(
        json.dumps(
            {
                "command": " ".join(["python -m tierflow.bench.serve", *(argv or sys.argv[1:])]),
                "rounds": rounds,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
