"""Parallel tool calls of one round are durable one by one: a process killed (SIGKILL)
while one call still runs keeps the result of the call that finished, and the continued
run re-runs only the unfinished one.

All real: `python -m tierflow ask` in a subprocess against an OpenAI-shaped scripted HTTP
server on 127.0.0.1, SIGKILL, then `ask --thread ID` in a new process on the same SQLite
checkpoint file. This module is also the graph the subprocesses run
(``--graph test_parallel_resume:factory``), so it must stay importable without side effects.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from langgraph.graph import START, StateGraph
from test_resume import _ask, _count  # the same CLI helpers (tests/ is on sys.path)

from tierflow import Agent, BuildContext, add_agent, tool
from tierflow.state import GraphState
from tierflow.testing import Reply, ScriptedServer

DIR_ENV = "PARALLEL_RESUME_TEST_DIR"
TESTS_DIR = Path(__file__).parent


def _bump(path: Path) -> int:
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


@tool
def quick(note: str) -> str:
    """Finish at once, counting each run in a file.

    Args:
        note: What to record.
    """
    return f"quick ran {_bump(Path(os.environ[DIR_ENV]) / 'quick')} time(s)"


@tool
def slow(note: str) -> str:
    """Start (counted), then wait until the release file exists, then finish (counted).

    Args:
        note: What to record.
    """
    folder = Path(os.environ[DIR_ENV])
    _bump(folder / "slow-started")
    deadline = time.monotonic() + 120  # only so a broken test cannot hang forever
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return f"slow finished {_bump(folder / 'slow-finished')} time(s)"


def factory(ctx: BuildContext) -> StateGraph[GraphState]:
    """One agent with both tools (the subprocess runs it as test_parallel_resume:factory)."""
    agent = Agent(name="clerk", tier="reasoning", tools=[quick, slow], instructions="Use tools.")
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph


def _checkpointed(db: Path, text: str) -> bool:
    """Whether a pending write holding ``text`` is in the SQLite checkpoint file."""
    if not db.exists():
        return False
    with sqlite3.connect(db) as conn:
        try:
            (found,) = conn.execute(
                "SELECT count(*) FROM writes WHERE instr(value, CAST(? AS BLOB)) > 0", (text,)
            ).fetchone()
        except sqlite3.OperationalError:  # the table is not created yet
            return False
    return bool(found)


def test_sigkill_mid_round_reruns_only_the_unfinished_call(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    db = tmp_path / "state" / "tierflow" / "checkpoints.sqlite"
    with ScriptedServer(flavor="openai", api_key="sk-test") as srv:
        # a short lease: the killed process's lease on the thread expires fast
        (tmp_path / "tierflow.toml").write_text(
            '[tiers.reasoning]\nbackends = ["openai:gpt-4o"]\n[state]\nlease_ttl_s = 1.0\n'
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
            DIR_ENV: str(work),
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": srv.base_url,
            "XDG_STATE_HOME": str(tmp_path / "state"),
        }
        srv.enqueue(Reply.tool_calls([("quick", {"note": "a"}), ("slow", {"note": "b"})]))
        first = _ask(tmp_path, env, "--graph", "test_parallel_resume:factory", "-t", "p1", "hi")
        try:
            deadline = time.monotonic() + 60
            # quick's result is checkpointed while slow is still running
            while not (_checkpointed(db, "quick ran 1") and _count(work / "slow-started")):
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the round never got under way"
                time.sleep(0.02)
            assert _count(work / "slow-finished") == 0
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate()
        assert first.returncode == -signal.SIGKILL

        (work / "release").write_text("")
        srv.enqueue(Reply.text("Both done."))
        # --wait: the killed run's lease holds the thread until it expires
        second = _ask(tmp_path, env, "-t", "p1", "--wait", "--json")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    record = json.loads(out)
    assert record["status"] == "completed" and record["answer"] == "Both done."
    assert _count(work / "quick") == 1  # the finished call was not repeated
    assert (_count(work / "slow-started"), _count(work / "slow-finished")) == (2, 1)
    calls = {c["name"]: c for c in record["steps"][0]["tool_calls"]}
    assert calls["quick"]["ok"] is True and calls["slow"]["ok"] is True
