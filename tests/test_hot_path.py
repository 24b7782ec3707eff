"""What the hot-path cuts of issue 15 keep true (CPU figures are in bench/results/, not here):
the lease store keeps one connection and still works after a fork, the run policy is
reused only while what it was built from is the same, the embedder does not busy-wait."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

from langgraph.graph import START, StateGraph

from tierflow import Agent, Runner, load_settings
from tierflow.agents import add_agent
from tierflow.graphs.context import BuildContext
from tierflow.graphs.registry import GraphEntry
from tierflow.runner.lease import SqliteThreadLeases
from tierflow.state import GraphState
from tierflow.testing import ScriptedChatModel, scripted_tier


def _in_child(path: str, queue: multiprocessing.Queue[object]) -> None:
    import asyncio

    leases = _SHARED[0]
    assert str(leases.path) == path

    async def take() -> bool:
        return await leases.acquire("forked", "child", 30)

    try:
        taken = asyncio.run(take())
        queue.put((taken, leases._pid == os.getpid()))  # its own connection
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(repr(exc))


_SHARED: list[SqliteThreadLeases] = []


async def test_lease_store_keeps_one_connection_and_reopens_after_fork(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite"
    leases = SqliteThreadLeases(path)
    assert await leases.acquire("t", "a", 30)
    first = leases._conn
    await leases.release("t", "a")
    assert leases._conn is first  # not reopened per statement
    assert leases.holder("t") is None
    # A forked child must not share the parent's connection: it opens its own.
    _SHARED[:] = [leases]
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[object] = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(str(path), queue))
    child.start()
    child.join(30)
    assert queue.get(timeout=5) == (True, True)
    assert leases.holder("forked") == "child"  # written to the same file
    assert not await leases.acquire("forked", "parent", 30)  # and honoured here
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    leases.close()
    assert leases._conn is None
    assert await leases.acquire("again", "a", 30)  # a closed store opens again


def _factory(ctx: BuildContext) -> StateGraph[GraphState]:
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    agent = Agent(name="a", tier="reasoning", instructions="Answer.")
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph


def test_run_policy_is_reused_only_for_the_same_entry_settings_and_budget(
    tmp_path: Path,
) -> None:
    tiers = {"reasoning": scripted_tier("reasoning", ScriptedChatModel(default="ok"))}
    runner = Runner(load_settings(False, state_dir=tmp_path), tiers=tiers, graphs={"g": _factory})
    policy = runner.policy("g")
    assert runner.policy("g") is policy
    # another budget, other settings or a replaced entry: a new policy
    budget = runner.budget.model_copy(update={"max_model_calls": 3})
    assert runner.graphs.policy("g", runner.settings, budget).budget.max_model_calls == 3
    other = load_settings(False, state_dir=tmp_path, guardrails={"enabled": False})
    assert runner.graphs.policy("g", other, runner.budget).stages["input"] == []
    runner.graphs._own["g"] = GraphEntry(_factory)
    assert runner.policy("g") is not policy
    assert runner.policy("g").stages["input"]  # the default input stage


def test_embedder_does_not_busy_wait() -> None:
    from tierflow.models.embeddings import MiniLMEmbedder

    options = MiniLMEmbedder()._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
