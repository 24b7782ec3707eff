"""Two ``tierflow serve`` processes on one database (one SQLite state dir; one PostgreSQL
database): the multitask strategies hold across them, through the store's busy check and
the thread's lease. A run held on server A makes server B reject a second run, B's
enqueued run waits for A's to end, and B's interrupt stops A's run before its own
starts. Nothing is lost: the thread holds every question that ran."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import ConflictError

from tierflow.testing import Reply, ScriptedServer

from .conftest import free_port, start_cli, until_true
from .worker_graph import DIR_ENV

HERE = Path(__file__).parent


def _ask(note: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": note}]}


def _rule(body: dict[str, Any]) -> Reply:
    """Each question calls ``where`` with the question as note (it waits for the file
    ``gate-<note>``), then answers ``done``."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Reply.text("done")
    return Reply.tool_calls([("where", {"note": last["content"]})])


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_multitask_strategies_hold_across_two_server_processes(
    tmp_path: Path, db: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres").new_database("two") if db == "postgres" else None
    with ScriptedServer() as backend:
        backend.set_default(_rule)
        config = tmp_path / "tierflow.toml"
        config.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            '[tiers.t]\nbackends = ["vllm:scripted-model"]\n'
            f'[backends.vllm]\nbase_url = "{backend.base_url}"\ntool_calling = "native"\n'
            "[telemetry]\nenabled = false\n" + (f'[state]\ndatabase_url = "{url}"\n' if url else "")
        )
        env = {**os.environ, "PYTHONPATH": str(HERE), DIR_ENV: str(tmp_path)}
        ports = [free_port(), free_port()]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for name, port in zip("ab", ports, strict=True):
                args = ["serve", "--config", str(config), "--port", str(port)]
                args += ["--graph", "clerk=worker_graph:factory"]
                procs.append(start_cli(args, env, tmp_path, tmp_path / f"{name}.log"))
            for port, proc in zip(ports, procs, strict=True):
                await until_true(lambda p=port, pr=proc: _ok(p, pr), "a server never started")
            a, b = (get_client(url=f"http://127.0.0.1:{p}", api_key=None) for p in ports)
            where = tmp_path / "where"

            def ran(note: str) -> bool:
                return where.exists() and f" {note}\n" in where.read_text()

            thread_id = (await a.threads.create())["thread_id"]
            first = await a.runs.create(thread_id, "clerk", input=_ask("q1"))
            await until_true(lambda: ran("q1"), "the first run never reached its tool")
            # reject (the default): B sees A's run through the shared store
            with pytest.raises(ConflictError):
                await b.runs.create(thread_id, "clerk", input=_ask("q2"))
            assert (await b.threads.get(thread_id))["status"] == "busy"
            # enqueue: B's run starts only once A's has ended (the thread's lease)
            (tmp_path / "gate-q3").write_text("")
            queued = await b.runs.create(
                thread_id, "clerk", input=_ask("q3"), multitask_strategy="enqueue"
            )
            (tmp_path / "gate-q1").write_text("")
            await b.runs.join(thread_id, queued["run_id"])
            assert (await b.runs.get(thread_id, first["run_id"]))["status"] == "success"
            assert (await a.runs.get(thread_id, queued["run_id"]))["status"] == "success"
            # interrupt: B stops A's held run, then runs its own
            held = await a.runs.create(thread_id, "clerk", input=_ask("q4"))
            await until_true(lambda: ran("q4"), "the held run never reached its tool")
            (tmp_path / "gate-q5").write_text("")
            values: Any = await b.runs.wait(
                thread_id, "clerk", input=_ask("q5"), multitask_strategy="interrupt"
            )
            assert (await a.runs.get(thread_id, held["run_id"]))["status"] == "interrupted"
            questions = [m["content"] for m in values["messages"] if m["type"] == "human"]
            assert questions == ["q1", "q3", "q4", "q5"]  # nothing lost, in order
            notes = [line.split()[1] for line in where.read_text().splitlines()]
            assert notes == ["q1", "q3", "q4", "q5"]  # q3 only after q1; q2 never ran
        finally:
            for note in ("q1", "q4"):
                (tmp_path / f"gate-{note}").write_text("")
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _ok(port: int, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "tierflow serve exited"
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ok", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
