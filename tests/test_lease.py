"""Thread leases: one run at a time on a thread, across processes.

The interface is tested in process on a real SQLite file; the guarantee is tested with
real processes (`python -m tierflow ask --thread T`) against a scripted OpenAI-shaped HTTP
server whose replies the test releases, so two runs overlap for sure. This module is also
the graph the subprocesses run (``--graph test_lease:factory``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, StateGraph
from pydantic import PrivateAttr

from tierflow import Agent, BuildContext, add_agent
from tierflow.errors import LeaseLost, ThreadBusy
from tierflow.runner import Runner
from tierflow.runner.lease import PostgresThreadLeases, SqliteThreadLeases
from tierflow.settings import TierflowSettings, load_settings
from tierflow.state import GraphState
from tierflow.testing import Reply, ScriptedChatModel, ScriptedServer, scripted_tier

TESTS_DIR = Path(__file__).parent
BUSY = "thread 'T' is busy with another run; try again, or use --wait"


def factory(ctx: BuildContext) -> StateGraph[GraphState]:
    """One agent, no tools (run by the subprocesses as test_lease:factory)."""
    agent = Agent(name="clerk", tier="reasoning", instructions="Answer briefly.")
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph


# -- the interface, in process --------------------------------------------------------


async def test_acquire_renew_release_on_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite"
    one, two = SqliteThreadLeases(path), SqliteThreadLeases(path)  # two "processes"
    assert await one.acquire("t", "a", 30)
    assert not await two.acquire("t", "b", 30)
    assert await two.acquire("t", "a", 30)  # the holder may take it again
    assert await two.acquire("u", "b", 30)  # another thread is independent
    assert not await one.renew("t", "b", 30)
    assert await one.renew("t", "a", 30)
    await two.release("t", "b")  # not the holder: nothing happens
    assert one.holder("t") == "a"
    await two.release("t", "a")
    assert one.holder("t") is None
    assert not await one.renew("t", "a", 30)  # released: nothing to renew
    assert await one.acquire("t", "b", 30)


async def test_postgres_leases_take_renew_release_and_expire(postgres: Any) -> None:
    url = postgres.new_database("leases")
    one, two = PostgresThreadLeases(url), PostgresThreadLeases(url)  # two "machines"
    assert await one.acquire("t", "a", 30)
    assert not await two.acquire("t", "b", 30)
    assert await two.acquire("t", "a", 30)  # the holder may take it again
    assert not await one.renew("t", "b", 30)
    assert await one.renew("t", "a", 30)
    await two.release("t", "b")  # not the holder: nothing happens
    assert not await two.acquire("t", "b", 30)
    await two.release("t", "a")
    assert await two.acquire("t", "b", 0.3)  # released: free for another
    deadline = time.monotonic() + 10
    while not await one.acquire("t", "c", 30):  # b never renews: expires on the db clock
        assert time.monotonic() < deadline, "the lease never expired"
        await asyncio.sleep(0.05)
    # a runner with a database URL takes its leases there
    runner = Runner(load_settings(False, state={"database_url": url}))
    assert isinstance(runner.leases, PostgresThreadLeases)
    with pytest.raises(ThreadBusy):
        async with runner.hold("t"):
            pass


async def test_an_unrenewed_lease_expires(tmp_path: Path) -> None:
    leases = SqliteThreadLeases(tmp_path / "leases.sqlite")
    started = time.monotonic()
    assert await leases.acquire("t", "crashed", 0.5)
    assert not await leases.acquire("t", "next", 30)
    while not await leases.acquire("t", "next", 30):  # polls the database's clock
        assert time.monotonic() - started < 5, "the lease never expired"
        await asyncio.sleep(0.02)
    assert time.monotonic() - started >= 0.45
    assert leases.holder("t") == "next"


async def test_hold_rejects_waits_and_is_reentrant(tmp_path: Path) -> None:
    leases = SqliteThreadLeases(tmp_path / "leases.sqlite")
    entered, leave = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        # the same task holding it again: no second acquire
        async with leases.hold("T"), leases.hold("T", strategy="reject"):
            order.append("first")
            entered.set()
            await leave.wait()

    async def second() -> None:
        async with leases.hold("T", strategy="wait", wait_s=10):
            order.append("second")

    one = asyncio.create_task(first())
    await entered.wait()
    with pytest.raises(ThreadBusy) as busy:
        async with leases.hold("T", strategy="reject"):
            pass
    assert str(busy.value) == BUSY and busy.value.thread_id == "T"
    with pytest.raises(ThreadBusy, match=r"still busy after 0\.2 s"):
        async with leases.hold("T", strategy="enqueue", wait_s=0.2):
            pass
    two = asyncio.create_task(second())
    leave.set()
    await asyncio.gather(one, two)
    assert order == ["first", "second"]
    assert leases.holder("T") is None  # released at the end


async def test_hold_renews_and_a_cancelled_holder_releases(tmp_path: Path) -> None:
    leases = SqliteThreadLeases(tmp_path / "leases.sqlite")
    inside = asyncio.Event()

    async def run() -> None:
        async with leases.hold("T", ttl_s=0.5):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run())
    await inside.wait()
    holder = leases.holder("T")
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # three TTLs: only renewals keep it
        assert leases.holder("T") == holder
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leases.holder("T") is None


async def test_a_lost_lease_stops_the_run(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite"
    leases = SqliteThreadLeases(path)
    with pytest.raises(LeaseLost, match="another run took the thread"):
        async with leases.hold("T", ttl_s=0.3):
            # Another process takes the thread (as after a stall longer than the TTL).
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE leases SET holder = 'thief' WHERE thread_id = 'T'")
            await asyncio.Event().wait()
    assert leases.holder("T") == "thief"


class Gated(ScriptedChatModel):
    """Answers from its queue; the first call waits until the test opens the gate."""

    _reached: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)
    _gate: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        self._reached.set()
        await self._gate.wait()
        return self._generate(messages, stop, None, **kw)


async def test_runner_ask_and_resume_hold_the_thread(settings: TierflowSettings) -> None:
    model = Gated()
    model.enqueue("First answer.", "Second answer.")
    tiers = {"reasoning": scripted_tier("reasoning", model)}

    def runner() -> Runner:  # a runner each: as two processes on the same state dir
        return Runner(settings, tiers=tiers, graphs={"clerk": factory})

    first = asyncio.create_task(runner().ask("question one", graph="clerk", thread_id="T"))
    await model._reached.wait()
    with pytest.raises(ThreadBusy, match=BUSY):
        await runner().ask("question two", graph="clerk", thread_id="T")
    with pytest.raises(ThreadBusy, match=BUSY):
        await runner().resume("T")
    second = asyncio.create_task(
        runner().ask("question two", graph="clerk", thread_id="T", on_busy="wait")
    )
    model._gate.set()
    one, two = await asyncio.gather(first, second)
    assert (one.answer, two.answer) == ("First answer.", "Second answer.")
    sent = [m.content for m in model.calls[-1].messages[1:]]
    assert sent == ["question one", "First answer.", "question two"]


# -- the guarantee, with real processes -----------------------------------------------


def _env(tmp_path: Path, srv: ScriptedServer, ttl_s: float = 30.0) -> dict[str, str]:
    (tmp_path / "tierflow.toml").write_text(
        f'[tiers.reasoning]\nbackends = ["openai:gpt-4o"]\n\n[state]\nlease_ttl_s = {ttl_s}\n'
    )
    return {
        **os.environ,
        # the graph module's folder (not the repo root: it would shadow the package)
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": srv.base_url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "TIERFLOW_TELEMETRY__ENABLED": "false",
    }


def _ask(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tierflow", "ask", "--graph", "test_lease:factory", "--json", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_requests(srv: ScriptedServer, n: int, *procs: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while not srv.wait_for_requests(n, timeout=0.1):
        for p in procs:
            assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, f"the server never got {n} requests"


def _question(srv: ScriptedServer, i: int) -> str:
    return str(srv.requests[i].body["messages"][-1]["content"])


def _thread(tmp_path: Path, thread_id: str = "T") -> list[tuple[str, Any]]:
    path = tmp_path / "state" / "tierflow" / "checkpoints.sqlite"
    with SqliteSaver.from_conn_string(str(path)) as saver:
        saved = saver.get_tuple({"configurable": {"thread_id": thread_id}})
    assert saved is not None
    return [(m.type, m.content) for m in saved.checkpoint["channel_values"]["messages"]]


def test_two_processes_one_thread_the_second_is_rejected(tmp_path: Path) -> None:
    gate = threading.Event()
    with ScriptedServer(flavor="openai", api_key="sk-test") as srv:
        env = _env(tmp_path, srv)
        srv.enqueue(Reply.text("The only answer.", until=gate))
        procs = {q: _ask(tmp_path, env, "-t", "T", q) for q in ("question one", "question two")}
        try:
            # Whichever run took the lease is now inside its model call, held by the gate;
            # the other is rejected without reaching the model.
            _wait_requests(srv, 1)
            winner = _question(srv, 0)
            (loser,) = set(procs) - {winner}
            _, err = procs[loser].communicate(timeout=30)
            assert procs[loser].returncode == 1
            assert err.strip().splitlines() == [f"error: {BUSY}"]
            assert procs[winner].poll() is None
        finally:
            gate.set()
        out, err = procs[winner].communicate(timeout=30)
        assert procs[winner].returncode == 0, err
        record = json.loads(out)
        assert (record["status"], record["answer"]) == ("completed", "The only answer.")
        assert len(srv.requests) == 1
    assert _thread(tmp_path) == [("human", winner), ("ai", "The only answer.")]


def test_two_processes_with_wait_both_complete_in_order(tmp_path: Path) -> None:
    gate = threading.Event()
    with ScriptedServer(flavor="openai", api_key="sk-test") as srv:
        env = _env(tmp_path, srv)
        srv.enqueue(Reply.text("First answer.", until=gate), Reply.text("Second answer."))
        procs = {
            q: _ask(tmp_path, env, "-t", "T", "--wait", q) for q in ("question one", "question two")
        }
        try:
            _wait_requests(srv, 1, *procs.values())
            first = _question(srv, 0)
            (second,) = set(procs) - {first}
            assert procs[second].poll() is None  # waiting for the thread
        finally:
            gate.set()
        outs = {q: p.communicate(timeout=30) for q, p in procs.items()}
        for q, p in procs.items():
            assert p.returncode == 0, outs[q][1]
        assert json.loads(outs[first][0])["answer"] == "First answer."
        assert json.loads(outs[second][0])["answer"] == "Second answer."
        # the second run started from the first run's checkpoint
        sent = [(m["role"], m["content"]) for m in srv.requests[1].body["messages"]][1:]
        assert sent == [
            ("user", first),
            ("assistant", "First answer."),
            ("user", second),
        ]
    assert _thread(tmp_path) == [
        ("human", first),
        ("ai", "First answer."),
        ("human", second),
        ("ai", "Second answer."),
    ]


def test_a_killed_holders_lease_expires_and_the_next_run_proceeds(tmp_path: Path) -> None:
    never = threading.Event()
    with ScriptedServer(flavor="openai", api_key="sk-test") as srv:
        env = _env(tmp_path, srv, ttl_s=1.0)
        srv.enqueue(Reply.text("never sent", until=never))
        first = _ask(tmp_path, env, "-t", "T", "question one")
        try:
            _wait_requests(srv, 1, first)
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate()
        killed_at = time.monotonic()
        assert first.returncode == -signal.SIGKILL
        leases = SqliteThreadLeases(tmp_path / "state" / "tierflow" / "leases.sqlite")
        assert leases.holder("T") is not None  # renewed < 1/3 s ago by the killed process

        # Continue the killed run (its question is checkpointed): it waits out the TTL.
        srv.enqueue(Reply.text("Recovered."))
        second = _ask(tmp_path, env, "-t", "T", "--wait")
        out, err = second.communicate(timeout=30)
        assert second.returncode == 0, err
        record = json.loads(out)
        assert (record["status"], record["answer"]) == ("completed", "Recovered.")
        assert time.monotonic() - killed_at < 15
        assert leases.holder("T") is None
    assert _thread(tmp_path) == [("human", "question one"), ("ai", "Recovered.")]
