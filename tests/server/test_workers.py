"""Runs on ``tierflow worker`` processes through the DBOS queue (``[server] worker =
"dbos"``), all real: the API on uvicorn (127.0.0.1) in this process, two worker
subprocesses, the queue and the store in SQLite files of one state dir (the kill -9 test
also in PostgreSQL: DBOS on the state's database), a ScriptedServer
as the model, ``langgraph-sdk`` as the client, and ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tierflow import Runner
from tierflow.server import create_app
from tierflow.settings import load_settings
from tierflow.testing import Fault, Reply, ScriptedServer

from .conftest import QUESTION, free_port
from .worker_graph import DIR_ENV, factory

HERE = Path(__file__).parent


@dataclass
class Cluster:
    url: str
    backend: ScriptedServer
    work: Path
    workers: list[subprocess.Popen[bytes]]

    def client(self) -> LangGraphClient:
        return get_client(url=self.url, api_key=None)

    def worker(self, pid: int) -> subprocess.Popen[bytes]:
        return next(w for w in self.workers if w.pid == pid)


def _config(tmp: Path, backend: ScriptedServer, database_url: str | None = None) -> Path:
    path = tmp / "tierflow.toml"
    path.write_text(
        f'state_dir = "{tmp / "state"}"\n'
        '[tiers.t]\nbackends = ["vllm:scripted-model"]\n'
        f'[backends.vllm]\nbase_url = "{backend.base_url}"\ntool_calling = "native"\n'
        "[telemetry]\nenabled = false\n"
        '[server]\nworker = "dbos"\nmax_concurrency = 2\nmax_queue = 4\n'
        "worker_lease_s = 1.5\ndrain_s = 2\n"
        # a dead worker's thread lease lapses as fast as its queue lease
        "[state]\nlease_ttl_s = 1.5\n"
        # state, leases and (by default) the DBOS queue in PostgreSQL
        + (f'database_url = "{database_url}"\n' if database_url else "")
    )
    return path


def _start_worker(config: Path, work: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        DIR_ENV: str(work),
    }
    log = (work / f"{name}.log").open("wb")
    args = ["worker", "--config", str(config), "--graph", "clerk=worker_graph:factory"]
    return subprocess.Popen(
        [sys.executable, "-m", "tierflow", *args, "--id", name],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_ready(work: Path, workers: list[subprocess.Popen[bytes]], names: list[str]) -> None:
    deadline = time.monotonic() + 40
    for proc, name in zip(workers, names, strict=True):
        log = work / f"{name}.log"
        while b"ready" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"worker {name} never got ready"
            time.sleep(0.05)


@contextlib.contextmanager
def cluster(tmp: Path, database_url: str | None = None) -> Iterator[Cluster]:
    work = tmp / "work"
    work.mkdir()
    with ScriptedServer() as backend:
        config = _config(tmp, backend, database_url)
        runner = Runner(load_settings(config), graphs={"clerk": factory})
        port = free_port()
        uv = uvicorn.Server(
            uvicorn.Config(create_app(runner), host="127.0.0.1", port=port, log_level="warning")
        )
        api = threading.Thread(target=uv.run, daemon=True)
        api.start()
        workers: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(1000):
                if uv.started:  # the API created the queue's tables before the workers start
                    break
                api.join(0.01)
            assert uv.started, "uvicorn did not start"
            names = ["worker-a", "worker-b"]
            workers = [_start_worker(config, work, n) for n in names]
            _wait_ready(work, workers, names)
            yield Cluster(f"http://127.0.0.1:{port}", backend, work, workers)
        finally:
            (work / "gate").write_text("")
            for proc in workers:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in workers:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            uv.should_exit = True
            api.join(10)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_kill9_mid_run_hands_the_run_over_without_repeating_a_tool_call(
    tmp_path: Path, db: str, request: pytest.FixtureRequest
) -> None:
    # On PostgreSQL the queue is DBOS on the state's database ([server] queue_url unset).
    url = request.getfixturevalue("postgres").new_database("queue") if db == "postgres" else None
    with cluster(tmp_path, url) as cl:
        # Call 1 runs the tool; call 2 (after the tool's result is checkpointed) stalls.
        cl.backend.enqueue(Reply.tool_calls([("count", {"note": "a"})]), Fault.stall(60))
        c = cl.client()
        thread_id = (await c.threads.create())["thread_id"]
        run = await c.runs.create(
            thread_id, "clerk", input=QUESTION, stream_mode=["values", "updates"]
        )
        assert await asyncio.to_thread(cl.backend.wait_for_requests, 2, 30)
        (pid,) = [int(p) for p in _lines(cl.work / "count-pids")]
        victim = cl.worker(pid)
        started = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        assert (await c.runs.get(thread_id, run["run_id"]))["status"] == "running"

        cl.backend.enqueue(Reply.text("Counted once."))
        values: Any = await c.runs.join(thread_id, run["run_id"])
        handed_over = time.monotonic() - started
        assert values["messages"][-1]["content"] == "Counted once."
        assert _lines(cl.work / "count") == ["1"]  # the completed tool call did not repeat
        done = await c.runs.get(thread_id, run["run_id"])
        assert done["status"] == "success"
        assert done["kwargs"]["record"]["status"] == "completed"
        assert len(cl.backend.requests) == 3  # tool call, the stalled call, its retry
        # The stream replays both attempts from the store and ends with the run.
        parts = [p async for p in c.runs.join_stream(thread_id, run["run_id"])]
        attempts = [p.data["attempt"] for p in parts if p.event == "metadata"]
        assert attempts == [1, 2]
        assert parts[-1].event == "values"
        assert parts[-1].data["messages"][-1]["content"] == "Counted once."
        print(f"{db}: kill -9 to completion on the other worker: {handed_over:.2f} s")


async def test_two_workers_share_the_runs(tmp_path: Path) -> None:
    def rule(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return Reply.text("done")
        return Reply.tool_calls([("where", {"note": "x"})])

    with cluster(tmp_path) as cl:
        cl.backend.set_default(rule)
        c = cl.client()
        runs = []
        for _ in range(4):
            thread_id = (await c.threads.create())["thread_id"]
            runs.append(await c.runs.create(thread_id, "clerk", input=QUESTION))
        deadline = time.monotonic() + 30
        while len(_lines(cl.work / "where")) < 8:  # "pid note" per call: 4 calls held
            assert time.monotonic() < deadline, "the runs never all started"
            await asyncio.sleep(0.05)
        pids = {int(p) for p in _lines(cl.work / "where")[::2]}
        assert pids == {w.pid for w in cl.workers}  # each worker holds two runs
        # Backpressure: past [server] max_queue (4), a 429 with Retry-After.
        async with httpx.AsyncClient(base_url=cl.url) as http:
            fifth = (await c.threads.create())["thread_id"]
            body = {"assistant_id": "clerk", "input": QUESTION}
            r = await http.post(f"/threads/{fifth}/runs", json=body)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # Cancelling a run that a worker process executes stops it there.
        cancelled = runs.pop()
        await c.runs.cancel(cancelled["thread_id"], cancelled["run_id"], wait=True)
        gone = await c.runs.get(cancelled["thread_id"], cancelled["run_id"])
        assert gone["status"] == "interrupted"
        (cl.work / "gate").write_text("")
        for run in runs:
            await c.runs.join(run["thread_id"], run["run_id"])
            assert (await c.runs.get(run["thread_id"], run["run_id"]))["status"] == "success"
        async with httpx.AsyncClient(base_url=cl.url) as http:
            deadline = time.monotonic() + 5  # the API notices an ended run within 0.1 s
            while 'tierflow_runs_total{status="success"} 3.0' not in (
                metrics := (await http.get("/metrics")).text
            ):
                assert time.monotonic() < deadline, metrics
                await asyncio.sleep(0.05)
        assert 'tierflow_runs_total{status="interrupted"} 1.0' in metrics
        assert "tierflow_queue_depth 0.0" in metrics


async def test_sigterm_drains_a_run_or_hands_it_back(tmp_path: Path) -> None:
    def rule(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return Reply.text("done")
        note = body["messages"][-1]["content"]
        return Reply.tool_calls([("where", {"note": note})])

    async def start(c: LangGraphClient, note: str) -> dict[str, Any]:
        thread_id = (await c.threads.create())["thread_id"]
        question = {"messages": [{"role": "user", "content": note}]}
        return dict(await c.runs.create(thread_id, "clerk", input=question))

    async def holder(note: str, calls: int = 1) -> int:
        deadline = time.monotonic() + 30
        while True:
            found = [ln for ln in (cl.work / "where").read_text().splitlines() if ln.endswith(note)]
            if len(found) >= calls:
                return int(found[-1].split()[0])
            assert time.monotonic() < deadline, f"run {note} never reached its tool"
            await asyncio.sleep(0.05)

    with cluster(tmp_path) as cl:
        cl.backend.set_default(rule)
        c = cl.client()
        (cl.work / "where").write_text("")
        # Longer than drain_s (2 s): handed back, continued by the other worker.
        long = await start(c, "long")
        first = cl.worker(await holder("long"))
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 15) == 0
        second = await holder("long", calls=2)  # the tool had not completed: it runs again
        assert second != first.pid
        (cl.work / "gate-long").write_text("")
        await c.runs.join(long["thread_id"], long["run_id"])
        assert (await c.runs.get(long["thread_id"], long["run_id"]))["status"] == "success"
        # Within drain_s: finished by the worker that was told to stop.
        short = await start(c, "short")
        assert await holder("short") == second
        last = cl.worker(second)
        last.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        (cl.work / "gate-short").write_text("")
        assert await asyncio.to_thread(last.wait, 15) == 0
        done = await c.runs.get(short["thread_id"], short["run_id"])
        assert done["status"] == "success" and done["kwargs"]["record"]["answer"] == "done"
