"""The agent tool loop on scripted tiers: parallel calls, errors as text, constrained and
native modes, recovery of text tool calls, limits, structured output, approvals."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import START, StateGraph
from pydantic import BaseModel

from tierflow import Agent, AgentLimits, BuildContext, Runner, TierflowSettings, add_agent, tool
from tierflow.models.tiers import Tier
from tierflow.state import GraphState
from tierflow.testing import ScriptedBackend, ScriptedChatModel, scripted_tier

CALLS: list[str] = []


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First number.
        b: Second number.
    """
    CALLS.append(f"add({a},{b})")
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise ValueError(f"cannot do {reason}")


@tool(requires_approval=True)
def refund(order_id: str) -> str:
    """Refund an order (needs a human's approval).

    Args:
        order_id: The order to refund.
    """
    CALLS.append(f"refund({order_id})")
    return f"refunded {order_id}"


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def calls_msg(*calls: tuple[str, dict[str, Any]]) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[
            {"name": n, "args": a, "id": f"call_{i}", "type": "tool_call"}
            for i, (n, a) in enumerate(calls)
        ],
    )


def one_agent(agent: Agent, tier: Tier, settings: TierflowSettings) -> Runner:
    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        graph: StateGraph[GraphState] = StateGraph(GraphState)
        graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
        return graph

    return Runner(settings, tiers={agent.tier: tier}, graphs={"one": factory})


def _agent(*tools: Any, **kw: Any) -> Agent:
    return Agent(name="worker", instructions="Use tools.", tier="t", tools=tools, **kw)


async def test_parallel_tool_calls_then_answer(settings: TierflowSettings) -> None:
    started = {"x": asyncio.Event(), "y": asyncio.Event()}

    @tool(timeout_s=5)
    async def wait_for(me: str, other: str) -> str:
        """Wait for the other call to start (only possible if both run concurrently).

        Args:
            me: This call's name.
            other: The other call's name.
        """
        started[me].set()
        await asyncio.wait_for(started[other].wait(), timeout=2)
        return f"{me} saw {other}"

    model = ScriptedChatModel().enqueue(
        calls_msg(("wait_for", {"me": "x", "other": "y"}), ("wait_for", {"me": "y", "other": "x"})),
        "both ran",
    )
    events: list[dict[str, Any]] = []
    record = await one_agent(_agent(wait_for), scripted_tier("t", model), settings).ask(
        "go", graph="one", on_event=events.append
    )
    assert record.answer == "both ran"
    step = record.steps[0]
    assert [c.ok for c in step.tool_calls] == [True, True]
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", c.id) for c in step.tool_calls)
    second_call = model.calls[1].messages
    results = [m for m in second_call if isinstance(m, ToolMessage)]
    assert sorted(str(m.content) for m in results) == ["x saw y", "y saw x"]
    kinds = [e["event"] for e in events]
    assert kinds.count("tool_call") == 2 and kinds.count("tool_result") == 2
    assert model.calls[0].kwargs["tools"][0]["function"]["name"] == "wait_for"


async def test_tool_errors_and_bad_arguments_reach_the_model_as_text(
    settings: TierflowSettings,
) -> None:
    model = ScriptedChatModel().enqueue(
        calls_msg(("explode", {"reason": "magic"}), ("add", {"a": "one", "b": 2}), ("nope", {})),
        "I could not finish.",
    )
    record = await one_agent(_agent(explode, add), scripted_tier("t", model), settings).ask(
        "go", graph="one"
    )
    results = {
        m.name: str(m.content) for m in model.calls[1].messages if isinstance(m, ToolMessage)
    }
    assert results["explode"] == "ERROR (ValueError): cannot do magic"
    assert results["add"].startswith(
        "ERROR (invalid_arguments): a: Input should be a valid integer"
    )
    assert "expected arguments: a, b" in results["add"]
    assert results["nope"].startswith("ERROR (unknown_tool): no tool 'nope' (tools: explode, add)")
    assert CALLS == []
    assert [c.ok for c in record.steps[0].tool_calls] == [False, False, False]
    assert record.steps[0].tool_calls[0].error == "ValueError: cannot do magic"
    assert record.answer == "I could not finish." and not record.degraded


async def test_constrained_mode_for_local_backends(settings: TierflowSettings) -> None:
    model = ScriptedChatModel().enqueue(
        {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
        {"answer": "2 + 3 = 5"},
    )
    tier = Tier(name="t", backends=[ScriptedBackend(model, tool_mode="constrained")])
    record = await one_agent(_agent(add), tier, settings).ask("2+3?", graph="one")
    assert record.answer == "2 + 3 = 5" and CALLS == ["add(2,3)"]
    fmt = model.calls[0].kwargs["response_format"]
    schema = fmt["json_schema"]["schema"]
    assert schema["anyOf"][0]["properties"]["tool_calls"]["items"]["anyOf"][0]["properties"][
        "name"
    ] == {"type": "string", "enum": ["add"]}
    assert "tools" not in model.calls[0].kwargs
    # tool calls and results were replayed as plain turns, not tool messages
    second = model.calls[1].messages
    assert not any(isinstance(m, ToolMessage) for m in second)
    assert isinstance(second[-1], HumanMessage) and second[-1].content == "[result of add]\n5"
    assert "- add(a: integer, b: integer): Add two integers." in str(second[0].content)


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n</tool_call>',
        'Let me compute.\n```json\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n```',
        '[{"function": {"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 1}"}}]',
    ],
    ids=["tagged", "fenced", "openai-shaped"],
)
async def test_tool_calls_written_as_text_are_recovered(
    settings: TierflowSettings, text: str
) -> None:
    model = ScriptedChatModel().enqueue(text, "2")
    record = await one_agent(_agent(add), scripted_tier("t", model), settings).ask(
        "1+1", graph="one"
    )
    assert CALLS == ["add(1,1)"] and record.answer == "2"


async def test_tool_rounds_are_bounded(settings: TierflowSettings) -> None:
    loop = calls_msg(("add", {"a": 1, "b": 1}))
    model = ScriptedChatModel().enqueue(loop, loop, "done")
    agent = _agent(add, limits=AgentLimits(max_tool_rounds=2))
    record = await one_agent(agent, scripted_tier("t", model), settings).ask("loop", graph="one")
    assert len(CALLS) == 2 and record.answer == "done"
    assert "tools" in model.calls[1].kwargs and "tools" not in model.calls[2].kwargs


class Verdict(BaseModel):
    label: str
    score: int


async def test_structured_output_gets_one_repair(settings: TierflowSettings) -> None:
    model = ScriptedChatModel().enqueue("label is good, score high", {"label": "good", "score": 9})
    agent = Agent(name="judge", instructions="Judge.", tier="t", output_type=Verdict)
    record = await one_agent(agent, scripted_tier("t", model), settings).ask(
        "judge it", graph="one"
    )
    assert Verdict.model_validate_json(record.answer) == Verdict(label="good", score=9)
    assert "did not match the required schema" in str(model.calls[1].messages[-1].content)
    assert model.calls[1].kwargs["response_format"]["json_schema"]["strict"] is True


async def test_fallback_mid_conversation_moves_to_plain_turns(settings: TierflowSettings) -> None:
    hosted = ScriptedChatModel().enqueue(
        calls_msg(("add", {"a": 4, "b": 4})), ConnectionError("gone")
    )
    local = ScriptedChatModel().enqueue({"answer": "8"})
    tier = Tier(
        name="t",
        backends=[
            ScriptedBackend(hosted, id="mistral:large", local=False),
            ScriptedBackend(local, id="local", tool_mode="constrained"),
        ],
    )
    record = await one_agent(_agent(add), tier, settings).ask("4+4", graph="one")
    assert record.answer == "8"
    assert [s.backend for s in record.steps] == ["mistral:large", "local"]
    assert record.steps[1].fallback_reason == "mistral:large: ConnectionError: gone"
    replay = local.calls[0].messages
    assert json.loads(str(replay[-2].content)) == {
        "tool_calls": [{"name": "add", "arguments": {"a": 4, "b": 4}}]
    }


async def test_approval_pauses_then_approve_runs_the_tool(settings: TierflowSettings) -> None:
    model = ScriptedChatModel().enqueue(calls_msg(("refund", {"order_id": "A1"})), "Refunded A1.")
    runner = one_agent(_agent(refund), scripted_tier("t", model), settings)
    paused = await runner.ask("refund A1", graph="one", thread_id="r1")
    assert paused.status == "awaiting_approval" and not paused.degraded and paused.answer == ""
    assert paused.pending_approval[0]["calls"][0]["name"] == "refund"
    assert CALLS == []
    with pytest.raises(Exception, match="waiting for approval"):
        await runner.ask("something else", graph="one", thread_id="r1")
    done = await runner.resume("r1", "approve")
    assert done.status == "completed" and done.answer == "Refunded A1."
    assert CALLS == ["refund(A1)"]
    assert done.steps[0].tool_calls[0].ok is True


async def test_reject_tells_the_model_and_runs_nothing(settings: TierflowSettings) -> None:
    model = ScriptedChatModel().enqueue(calls_msg(("refund", {"order_id": "B2"})), "Not refunded.")
    runner = one_agent(_agent(refund), scripted_tier("t", model), settings)
    await runner.ask("refund B2", graph="one", thread_id="r2")
    done = await runner.resume("r2", "reject")
    assert CALLS == [] and done.answer == "Not refunded."
    result = next(m for m in model.calls[1].messages if isinstance(m, ToolMessage))
    assert str(result.content) == "ERROR (rejected): a human reviewer rejected this call"
    with pytest.raises(Exception, match="no run waiting for approval"):
        await runner.resume("r2", "approve")


async def test_required_first_forces_a_tool_call_then_allows_an_answer(
    settings: TierflowSettings,
) -> None:
    local = ScriptedChatModel().enqueue(
        {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, {"answer": "3"}
    )
    tier = Tier(name="t", backends=[ScriptedBackend(local, tool_mode="constrained")])
    agent = _agent(add, tool_choice="required_first")
    record = await one_agent(agent, tier, settings).ask("1+2", graph="one")
    assert record.answer == "3"
    first = local.calls[0].kwargs["response_format"]["json_schema"]["schema"]
    assert "anyOf" not in first and first["required"] == ["tool_calls"]
    assert "anyOf" in local.calls[1].kwargs["response_format"]["json_schema"]["schema"]

    hosted = ScriptedChatModel().enqueue(calls_msg(("add", {"a": 2, "b": 2})), "4")
    await one_agent(agent, scripted_tier("t", hosted), settings).ask("2+2", graph="one")
    assert hosted.calls[0].kwargs["tool_choice"] == "required"
    assert "tool_choice" not in hosted.calls[1].kwargs


async def test_unavailable_tool_is_withdrawn_and_the_run_ends_cleanly(
    settings: TierflowSettings,
) -> None:
    from tierflow.tools import ToolError

    @tool
    def search(query: str) -> str:
        """Search the web.

        Args:
            query: What to look for.
        """
        raise ToolError("no network", type="search_unavailable")

    local = ScriptedChatModel().enqueue(
        {"tool_calls": [{"name": "search", "arguments": {"query": "ecb"}}]},
        {"answer": "Search is unavailable right now, so I cannot check the news."},
    )
    tier = Tier(name="t", backends=[ScriptedBackend(local, tool_mode="constrained")])
    record = await one_agent(_agent(search), tier, settings).ask("ECB news?", graph="one")
    assert record.answer.startswith("Search is unavailable") and not record.degraded
    second = local.calls[1].kwargs["response_format"]["json_schema"]["schema"]
    assert second["required"] == ["answer"]  # the failed tool is no longer offered
    assert record.steps[0].tool_calls[0].error == "search_unavailable: no network"


async def test_tool_call_json_is_never_returned_as_the_answer(settings: TierflowSettings) -> None:
    loop = calls_msg(("explode", {"reason": "x"}))
    text_call = '{"name": "explode", "arguments": {"reason": "x"}}'
    model = ScriptedChatModel().enqueue(loop, text_call)
    agent = _agent(explode, limits=AgentLimits(max_tool_rounds=1))
    record = await one_agent(agent, scripted_tier("t", model), settings).ask("go", graph="one")
    assert record.answer == (
        "I could not complete this request: explode failed (ValueError: cannot do x)."
    )
    assert record.degraded
