"""Crash safety: a run killed mid-way continues from its checkpoint without repeating a
tool call that completed, and nothing already said in the conversation is lost.

The kill test is all real: `python -m tierflow ask` in a subprocess, an OpenAI-shaped
scripted HTTP server on 127.0.0.1, SIGKILL, then `ask --thread ID` in a new process on the
same SQLite checkpoint file. This module is also the graph the subprocess runs
(``--graph test_resume:factory``), so it must stay importable without side effects.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.graph import START, StateGraph
from pydantic import PrivateAttr
from typer.testing import CliRunner

from tierflow import Agent, BuildContext, add_agent, tool
from tierflow.cli import app
from tierflow.errors import UserError
from tierflow.runner import Runner
from tierflow.settings import TierflowSettings
from tierflow.state import GraphState
from tierflow.testing import Fault, Reply, ScriptedChatModel, ScriptedServer, scripted_tier

COUNTER_ENV = "RESUME_TEST_COUNTER_FILE"
TESTS_DIR = Path(__file__).parent


@tool
def bump(note: str) -> str:
    """Record a side effect; counts its own invocations in the file named by the env var.

    Args:
        note: What to record.
    """
    path = Path(os.environ[COUNTER_ENV])
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return f"bumped to {count} ({note})"


def factory(ctx: BuildContext) -> StateGraph[GraphState]:
    """One agent with the counting tool (run by the subprocess as test_resume:factory)."""
    agent = Agent(name="clerk", tier="reasoning", tools=[bump], instructions="Use bump.")
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph


def _count(path: Path) -> int:
    return int(path.read_text()) if path.exists() else 0


def _ask(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tierflow", "ask", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_mid_run_then_ask_thread_resumes_without_repeating_the_tool(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "count"
    with ScriptedServer(flavor="openai", api_key="sk-test") as srv:
        # a short lease: the killed process's lease on the thread expires fast
        (tmp_path / "tierflow.toml").write_text(
            '[tiers.reasoning]\nbackends = ["openai:gpt-4o"]\n[state]\nlease_ttl_s = 1.0\n'
        )
        env = {
            **os.environ,
            # the graph module's folder (not the repo root: it would shadow the package)
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
            COUNTER_ENV: str(counter),
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": srv.base_url,
            "XDG_STATE_HOME": str(tmp_path / "state"),
        }
        # The model asks for the tool, then the call after the tool result stalls.
        srv.enqueue(Reply.tool_calls([("bump", {"note": "once"})]), Fault.stall(60))
        first = _ask(
            tmp_path, env, "--graph", "test_resume:factory", "-t", "k1", "--json", "please bump"
        )
        try:
            # Request 2 is the model call after the tool: the tool ran and (durability
            # "sync") its step was committed before that call started.
            deadline = time.monotonic() + 30
            while not srv.wait_for_requests(2, timeout=0.2):
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the run never reached its second call"
            assert _count(counter) == 1
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate()
        assert first.returncode == -signal.SIGKILL

        srv.enqueue(Reply.text("Bumped once; all done."))
        # --wait: the killed run's lease holds the thread until it expires
        second = _ask(tmp_path, env, "-t", "k1", "--wait", "--json")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        record = json.loads(out)
        assert record["thread_id"] == "k1" and record["status"] == "completed"
        assert record["answer"] == "Bumped once; all done." and not record["degraded"]
        # the run's steps from before the kill are still there, with the tool call's outcome
        assert [s["node"] for s in record["steps"]] == ["clerk", "clerk"]
        assert record["steps"][0]["tool_calls"][0]["ok"] is True

        assert _count(counter) == 1  # the completed tool call was not repeated
        assert len(srv.requests) == 3
        sent = srv.requests[2].body["messages"]
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
        assert sent[1]["content"] == "please bump"
        assert sent[3]["content"] == "bumped to 1 (once)"
        assert sent == srv.requests[1].body["messages"]  # the same history as before the kill


class StallsAfterTool(ScriptedChatModel):
    """Answers from its queue, but the call after a tool result hangs until released."""

    _reached: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)
    _release: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        if isinstance(messages[-1], ToolMessage) and not self._release.is_set():
            self._reached.set()
            await self._release.wait()  # a stalled backend
        return self._generate(messages, stop, None, **kw)


def _call(name: str, args: dict[str, Any]) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": args, "id": "abcdefghi", "type": "tool_call"}],
    )


async def test_an_interrupted_run_is_detected_and_resumed(
    settings: TierflowSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "count"
    monkeypatch.setenv(COUNTER_ENV, str(counter))
    model = StallsAfterTool()
    model.enqueue(_call("bump", {"note": "once"}), "All done.")
    tiers = {"reasoning": scripted_tier("reasoning", model)}

    def runner() -> Runner:  # a new runner each time: a new process on the same files
        return Runner(settings, tiers=tiers, graphs={"bumper": factory})

    run = asyncio.create_task(runner().ask("please bump", graph="bumper", thread_id="r1"))
    await asyncio.wait_for(model._reached.wait(), timeout=10)
    run.cancel()  # the run dies while waiting for the model, after the tool completed
    with pytest.raises(asyncio.CancelledError):
        await run
    assert _count(counter) == 1

    with pytest.raises(UserError, match=r"unfinished run \(stopped or interrupted before clerk\)"):
        await runner().ask("a new question", graph="bumper", thread_id="r1")
    with pytest.raises(UserError, match="no run waiting for approval"):
        await runner().resume("r1", "approve")

    model._release.set()
    record = await runner().resume("r1")
    assert (record.status, record.answer, record.thread_id) == ("completed", "All done.", "r1")
    assert _count(counter) == 1
    sent = model.calls[-1].messages
    assert isinstance(sent[1], HumanMessage) and sent[1].content == "please bump"
    assert isinstance(sent[-1], ToolMessage) and sent[-1].content == "bumped to 1 (once)"

    # the thread is idle again: a new question continues the conversation
    model.enqueue("Hello again.")
    again = await runner().ask("hi", graph="bumper", thread_id="r1")
    assert again.answer == "Hello again." and [s.node for s in again.steps] == ["clerk"]


NOT_A_FACTORY = 42


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ("no_such_module_xyz:factory", "cannot import 'no_such_module_xyz' (ModuleNotFoundError"),
        ("test_resume:nothing", "'test_resume' has no attribute 'nothing'"),
        ("test_resume:NOT_A_FACTORY", "'NOT_A_FACTORY' is not a graph factory"),
        ("test_resume:", "expected 'module.path:factory'"),
    ],
)
def test_graph_by_import_path_errors_are_one_line(graph: str, message: str) -> None:
    result = CliRunner().invoke(app, ["ask", "--graph", graph, "hi"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: graph ") and message in lines[0]
