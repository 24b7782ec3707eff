"""``tierflow serve --workers 2``: the API starts two ``tierflow worker`` processes, runs
execute there (not in the API), a worker killed with ``kill -9`` is started again under
its id and its runs complete, ten concurrent clients all complete, and stopping the API
stops the workers. All real: the CLI
in a subprocess, a ScriptedServer model, ``langgraph-sdk``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
from langgraph_sdk import get_client

from tierflow.testing import Reply, ScriptedServer

from .conftest import QUESTION, alive, free_port, start_cli, until_true
from .worker_graph import DIR_ENV

HERE = Path(__file__).parent


async def test_serve_starts_supervises_and_stops_its_workers(tmp_path: Path) -> None:
    def rule(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return Reply.text("done")
        return Reply.tool_calls([("where", {"note": "x"})])

    with ScriptedServer() as backend:
        backend.set_default(rule)
        config = tmp_path / "tierflow.toml"
        config.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            '[tiers.t]\nbackends = ["vllm:scripted-model"]\n'
            f'[backends.vllm]\nbase_url = "{backend.base_url}"\ntool_calling = "native"\n'
            "[telemetry]\nenabled = false\n"
            "[server]\nmax_concurrency = 2\nmax_queue = 16\nworker_lease_s = 1.5\ndrain_s = 2\n"
            "[state]\nlease_ttl_s = 1.5\n"
        )
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(HERE), DIR_ENV: str(tmp_path)}
        log = tmp_path / "serve.log"
        args = ["serve", "--config", str(config), "--port", str(port), "--workers", "2"]
        args += ["--graph", "clerk=worker_graph:factory"]
        api = start_cli(args, env, tmp_path, log)
        try:

            def started() -> dict[str, int]:
                text = log.read_text()
                assert api.poll() is None, text
                found = dict(re.findall(r"worker (\S+) started \(pid (\d+)\)", text))
                ready = len(re.findall(r"worker \S+ ready", text))
                return {k: int(v) for k, v in found.items()} if ready >= 2 else {}

            workers = await until_true(started, "the workers never got ready")
            assert len(workers) == 2 and api.pid not in workers.values()
            c = get_client(url=f"http://127.0.0.1:{port}", api_key=None)
            runs = []
            for _ in range(4):
                thread_id = (await c.threads.create())["thread_id"]
                runs.append(await c.runs.create(thread_id, "clerk", input=QUESTION))
            where = tmp_path / "where"

            def calls() -> list[int]:
                pids = [int(p) for p in where.read_text().split()[::2]] if where.exists() else []
                return pids if len(pids) >= 4 else []

            # Two runs on each worker (max_concurrency 2 each), none in the API process.
            assert set(await until_true(calls, "the runs never all started")) == set(
                workers.values()
            )
            # kill -9 one worker: serve starts it again under its id, which takes its runs
            victim_id, victim = next(iter(workers.items()))
            os.kill(victim, signal.SIGKILL)

            def restarted() -> int:
                return started().get(victim_id, victim) != victim and started()[victim_id]

            again = await until_true(restarted, "the killed worker was not started again")
            assert alive(again)
            (tmp_path / "gate").write_text("")
            for run in runs:
                await asyncio.wait_for(c.runs.join(run["thread_id"], run["run_id"]), 30)
                done = await c.runs.get(run["thread_id"], run["run_id"])
                assert done["status"] == "success", done
            # Ten clients at once (the API and both workers write one SQLite store while
            # the API polls it): every run completes, none fails with "database is locked".
            clients = [get_client(url=f"http://127.0.0.1:{port}", api_key=None) for _ in range(10)]

            async def one(client: Any) -> Any:
                thread_id = (await client.threads.create())["thread_id"]
                values: Any = await client.runs.wait(thread_id, "clerk", input=QUESTION)
                return values["messages"][-1]["content"]

            answers = await asyncio.wait_for(asyncio.gather(*(one(x) for x in clients)), 60)
            assert answers == ["done"] * 10
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://127.0.0.1:{port}/ok")).status_code == 200
        finally:
            (tmp_path / "gate").write_text("")
            api.send_signal(signal.SIGTERM)
            code = api.wait(30)
        assert code == 0, log.read_text()
        # Stopping the API stopped its workers.
        for pid in [*workers.values(), again]:
            assert not alive(pid), f"worker {pid} outlived the API"
