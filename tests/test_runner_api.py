"""The builder's surface of the Runner: one agent with no graph, typed stream events,
an approval decision per tool call, and a runner left open that still exits cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage

from tierflow import Agent, Runner, tool
from tierflow.runner import NodeFinished, NodeStarted, RunFinished, Token, ToolCallEvent
from tierflow.settings import TierflowSettings
from tierflow.testing import ScriptedChatModel, scripted_tier

REFUNDED: list[str] = []


@tool(requires_approval=True)
def refund(order_id: str) -> str:
    """Refund an order.

    Args:
        order_id: The order.
    """
    REFUNDED.append(order_id)
    return f"refunded {order_id}"


def _calls(*calls: tuple[str, dict[str, Any]]) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[
            {"name": n, "args": a, "id": f"c{i}", "type": "tool_call"}
            for i, (n, a) in enumerate(calls)
        ],
    )


CLERK = Agent(name="clerk", instructions="Refund what is asked.", tier="t", tools=[refund])


async def test_ask_runs_one_agent_with_no_graph(settings: TierflowSettings) -> None:
    model = ScriptedChatModel().enqueue("four")
    runner = Runner(settings, tiers={"t": scripted_tier("t", model)})
    agent = Agent(name="helper", instructions="Be brief.", tier="t")

    record = await runner.ask("What is 2+2?", agent=agent, thread_id="a1")

    assert record.answer == "four" and record.status == "completed"
    assert [s.node for s in record.steps] == ["helper"]
    assert str(model.calls[0].messages[0].content) == "Be brief."  # the agent's instructions


async def test_stream_yields_typed_events_then_the_record(settings: TierflowSettings) -> None:
    REFUNDED.clear()
    model = ScriptedChatModel().enqueue(_calls(("refund", {"order_id": "A1"})))
    runner = Runner(settings, tiers={"t": scripted_tier("t", model)})

    events = [e async for e in runner.stream("refund A1", agent=CLERK)]

    assert isinstance(events[0], NodeStarted) and events[0].node == "clerk"
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    assert [(c.tool, c.args) for c in calls] == [("refund", {"order_id": "A1"})]
    assert any(isinstance(e, NodeFinished) and e.node == "clerk" for e in events)
    last = events[-1]
    assert isinstance(last, RunFinished) and last.record.status == "awaiting_approval"
    assert all(e.type for e in events)  # every event says what it is


async def test_streamed_tokens_arrive_before_the_record(settings: TierflowSettings) -> None:
    model = ScriptedChatModel().enqueue("hello there")
    runner = Runner(settings, tiers={"t": scripted_tier("t", model)})

    events = [
        e async for e in runner.stream("hi", agent=Agent(name="a", instructions="x", tier="t"))
    ]

    tokens = "".join(e.text for e in events if isinstance(e, Token))
    assert tokens == "hello there"
    assert isinstance(events[-1], RunFinished) and events[-1].record.answer == "hello there"


async def test_each_tool_call_gets_its_own_decision(settings: TierflowSettings) -> None:
    REFUNDED.clear()
    model = ScriptedChatModel().enqueue(
        _calls(
            ("refund", {"order_id": "A1"}),
            ("refund", {"order_id": "B2"}),
            ("refund", {"order_id": "C3"}),
        ),
        "done",
    )
    runner = Runner(settings, tiers={"t": scripted_tier("t", model)})

    paused = await runner.ask("refund three orders", agent=CLERK, thread_id="d1")
    assert paused.status == "awaiting_approval" and REFUNDED == []
    # one approval card per call, each naming its call
    ids = {c["args"]["order_id"]: c["id"] for p in paused.pending_approval for c in p["calls"]}
    assert sorted(ids) == ["A1", "B2", "C3"]

    done = await runner.resume(
        "d1",
        decisions={
            ids["A1"]: "approve",
            ids["B2"]: "reject",
            ids["C3"]: {"action": "approve", "args": {"order_id": "C3-corrected"}},
        },
    )

    assert done.status == "completed" and done.answer == "done"
    assert sorted(REFUNDED) == ["A1", "C3-corrected"]  # B2 was rejected
    outcomes = {c.id: (c.ok, c.error) for c in done.steps[0].tool_calls}
    assert outcomes[ids["A1"]] == (True, None)
    assert outcomes[ids["B2"]][0] is False and "rejected" in str(outcomes[ids["B2"]][1])
    # the model read each outcome
    read = [str(m.content) for m in model.calls[1].messages]
    assert any("refunded C3-corrected" in t for t in read)
    assert any("rejected" in t for t in read)


async def test_one_decision_applies_to_every_waiting_call(settings: TierflowSettings) -> None:
    REFUNDED.clear()
    model = ScriptedChatModel().enqueue(
        _calls(("refund", {"order_id": "A1"}), ("refund", {"order_id": "B2"})), "both done"
    )
    runner = Runner(settings, tiers={"t": scripted_tier("t", model)})
    paused = await runner.ask("refund two orders", agent=CLERK, thread_id="d2")
    assert len(paused.pending_approval) == 2

    done = await runner.resume("d2", "approve")

    assert done.status == "completed" and sorted(REFUNDED) == ["A1", "B2"]


def test_a_runner_left_open_exits_cleanly(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from tierflow import Agent, Runner
        from tierflow.settings import load_settings
        from tierflow.testing import ScriptedChatModel, scripted_tier

        async def main():
            model = ScriptedChatModel().enqueue("hi")
            tiers = {"t": scripted_tier("t", model)}
            runner = Runner(load_settings(state_dir="state"), tiers=tiers)
            await runner.__aenter__()  # opened, never closed
            record = await runner.ask("hello", agent=Agent(name="a", instructions="x", tier="t"))
            print(record.status)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "completed")
    assert done.stderr == ""
