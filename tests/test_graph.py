"""The default graph on scripted tiers: routing, fallback records, threads, degradation."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import StateGraph

from tierflow import Agent, BuildContext, Route, router_graph
from tierflow.errors import UnknownGraph, UserError
from tierflow.models.tiers import Tier
from tierflow.runner import Runner
from tierflow.settings import TierflowSettings
from tierflow.state import GraphState
from tierflow.testing import ScriptedBackend, ScriptedChatModel, scripted_tier


def _three_routes(ctx: BuildContext) -> StateGraph[GraphState]:
    def agent(name: str) -> Agent:
        return Agent(name=name, tier="reasoning", instructions=f"You are the {name}.")

    routes = {
        "general": Route(description="anything else", agent=agent("generalist")),
        "code": Route(description="programming", agent=agent("coder")),
        "data": Route(description="numbers and data", agent=agent("analyst")),
    }
    return router_graph(ctx.tiers, routes)


def _runner(settings: TierflowSettings, router: ScriptedChatModel, reasoning: Tier) -> Runner:
    return Runner(
        settings,
        tiers={"router": scripted_tier("router", router), "reasoning": reasoning},
        graphs={"default": _three_routes},
    )


async def test_router_picks_the_specialist_and_steps_record_the_fallback(
    settings: TierflowSettings,
) -> None:
    router = ScriptedChatModel().enqueue({"route": "code"})
    hosted = ScriptedBackend(
        ScriptedChatModel(),
        id="mistral:mistral-large-latest",
        local=False,
        unavailable="no API key (set MISTRAL_API_KEY)",
    )
    local = ScriptedBackend(ScriptedChatModel().enqueue("def f(): ..."), id="local")
    runner = _runner(settings, router, Tier(name="reasoning", backends=[hosted, local]))
    events: list[dict[str, object]] = []

    record = await runner.ask("Write a function", on_event=events.append)

    assert record.route == "code"
    assert record.answer == "def f(): ..."
    assert not record.degraded
    assert [s.node for s in record.steps] == ["router", "coder"]
    coder = record.steps[1]
    assert (coder.tier, coder.backend, coder.fallback_from) == (
        "reasoning",
        "local",
        "mistral:mistral-large-latest",
    )
    assert coder.fallback_reason == "mistral:mistral-large-latest: no API key (set MISTRAL_API_KEY)"
    assert len(record.trace_id) == 32 and record.trace_id != "0" * 32
    assert record.usage.output_tokens == sum(s.usage.output_tokens for s in record.steps) > 0
    assert [(e["event"], e["node"]) for e in events] == [
        ("node_started", "router"),
        ("node_finished", "router"),
        ("node_started", "coder"),
        ("node_finished", "coder"),
    ]
    # the router saw the route list and only the question, under a JSON schema
    call = router.calls[0]
    assert isinstance(call.messages[0], SystemMessage) and "- code:" in str(
        call.messages[0].content
    )
    schema = call.kwargs["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["route"]["enum"] == ["general", "code", "data"]


async def test_thread_continues_the_conversation_from_the_checkpoint(
    settings: TierflowSettings,
) -> None:
    router = ScriptedChatModel(default='{"route": "general"}')
    answerer = ScriptedChatModel().enqueue("Nice to meet you, Ada.", "Your name is Ada.")
    first = await _runner(settings, router, scripted_tier("reasoning", answerer)).ask(
        "My name is Ada.", thread_id="t1"
    )
    # a fresh runner (new process, same state dir) continues the same thread
    second = await _runner(settings, router, scripted_tier("reasoning", answerer)).ask(
        "What is my name?", thread_id="t1"
    )
    assert first.thread_id == second.thread_id == "t1"
    sent = answerer.calls[1].messages
    assert [type(m) for m in sent] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert sent[1].content == "My name is Ada." and sent[2].content == "Nice to meet you, Ada."
    assert [s.node for s in second.steps] == ["router", "generalist"]  # this run's steps only


async def test_router_down_still_answers_on_the_default_route(settings: TierflowSettings) -> None:
    router = ScriptedChatModel().enqueue(ConnectionError("refused"))
    runner = _runner(settings, router, scripted_tier("reasoning", ScriptedChatModel(default="ok")))
    record = await runner.ask("hello")
    assert record.route == "general" and record.answer == "ok"
    assert record.steps[0].degraded and not record.degraded


async def test_reasoning_tier_down_gives_a_marked_degraded_answer(
    settings: TierflowSettings,
) -> None:
    router = ScriptedChatModel(default='{"route": "data"}')
    reasoning = scripted_tier("reasoning", ScriptedChatModel().enqueue(TimeoutError("stalled")))
    record = await _runner(settings, router, reasoning).ask("sum 1+1")
    assert record.degraded
    assert record.answer.startswith("[degraded]")
    assert "TimeoutError: stalled" in record.answer
    step = record.steps[-1]
    assert step.degraded and step.backend is None


@pytest.mark.parametrize("question", ["", "   \n"])
async def test_empty_question_is_a_user_error(settings: TierflowSettings, question: str) -> None:
    with pytest.raises(UserError, match="empty"):
        await Runner(settings).ask(question)


async def test_unknown_graph(settings: TierflowSettings) -> None:
    with pytest.raises(UnknownGraph, match=r"unknown graph 'nope' \(available: .*default, direct"):
        await Runner(settings).ask("hi", graph="nope")
