"""The README's examples run, with scripted tiers standing in for models:
examples/triage.py (three nodes and a custom tool), examples/plain_langgraph.py (the
default graph under plain LangGraph: an injection blocked, a budget stop and its
continuation) and examples/one_agent.py (ask, stream, ToolContext)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver

from tierflow import Runner, TierflowSettings
from tierflow.models.tiers import Tier
from tierflow.testing import ScriptedBackend, ScriptedChatModel, scripted_tier

EXAMPLES = Path(__file__).parents[1] / "examples"
EXAMPLE = EXAMPLES / "triage.py"


async def test_triage_example_keeps_billing_local_and_uses_its_tool(
    settings: TierflowSettings,
) -> None:
    triage_graph = runpy.run_path(str(EXAMPLE))["triage_graph"]
    hosted = ScriptedChatModel(default="hosted answer")
    lookup = AIMessage(
        content="",
        tool_calls=[
            {
                "name": "invoice_status",
                "args": {"invoice_id": "INV-1042"},
                "id": "c1",
                "type": "tool_call",
            }
        ],
    )
    local = ScriptedChatModel().enqueue(lookup, "INV-1042 was paid twice; a refund is pending.")
    reasoning = Tier(
        name="reasoning",
        backends=[
            ScriptedBackend(hosted, id="mistral:mistral-large-latest", local=False),
            ScriptedBackend(local, id="local"),
        ],
    )
    routing = ScriptedChatModel().enqueue({"route": "billing"}, {"route": "tech"})
    runner = Runner(
        settings,
        tiers={"router": scripted_tier("router", routing), "reasoning": reasoning},
        graphs={"triage": triage_graph},
    )

    record = await runner.ask("Invoice INV-1042 was charged twice", graph="triage")

    assert record.route == "billing"
    assert record.answer == "INV-1042 was paid twice; a refund is pending."
    assert hosted.calls == []  # residency: the billing agent is local_only
    assert record.steps[1].attempts[0].reason == "residency: caller is local_only"
    call = record.steps[1].tool_calls[0]
    assert (call.name, call.ok) == ("invoice_status", True)
    assert '"status": "paid twice"' in str(local.calls[1].messages[-1].content)

    record = await runner.ask("The app crashes on start", graph="triage")
    assert (record.route, record.answer) == ("tech", "hosted answer")


def _example(name: str) -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLES / name))


def _calls(*calls: tuple[str, dict[str, Any]]) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[
            {"name": n, "args": a, "id": f"c{i}", "type": "tool_call"}
            for i, (n, a) in enumerate(calls)
        ],
    )


async def test_plain_langgraph_example_blocks_the_injection_before_any_model_call(
    settings: TierflowSettings,
) -> None:
    example = _example("plain_langgraph.py")
    router, reasoning = ScriptedChatModel(), ScriptedChatModel()
    tiers = {"router": scripted_tier("router", router), "reasoning": scripted_tier("r", reasoning)}

    record = await example["ask_blocked"](settings=settings, tiers=tiers)

    assert record.status == "blocked" and record.steps == []
    assert "prompt injection" in record.answer
    assert router.calls == [] and reasoning.calls == []
    assert [(g.stage, g.name, g.action) for g in record.guardrails if g.action == "block"] == [
        ("input", "injection", "block")
    ]


async def test_plain_langgraph_example_stops_on_its_budget_and_continues(
    settings: TierflowSettings,
) -> None:
    example = _example("plain_langgraph.py")
    router = ScriptedChatModel(default='{"route": "data"}')  # if the semantic router hesitates
    france = (
        "SELECT COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE c.country = 'FR'"
    )
    # the answer's number comes from the query's result (the grounding rule)
    reasoning = ScriptedChatModel().enqueue(
        _calls(("sql_query", {"query": france})), "79 orders came from France."
    )
    tiers = {"router": scripted_tier("router", router), "reasoning": scripted_tier("r", reasoning)}
    saver = InMemorySaver()

    reason, waiting_at = await example["stop_on_budget"](saver, settings=settings, tiers=tiers)

    assert reason == "budget exceeded: model_calls 1 of 1"
    assert waiting_at == ("analyst",)  # after its tool ran, before the second model call
    assert len(reasoning.calls) == 1

    record = await example["continue_run"](saver, settings=settings, tiers=tiers)

    assert record.status == "completed" and record.answer == "79 orders came from France."
    assert record.route == "data" and len(reasoning.calls) == 2 and record.verified
    [query] = [c for s in record.steps for c in s.tool_calls]
    assert (query.name, query.ok) == ("sql_query", True)  # ran once, not again on resume


async def test_one_agent_example_asks_streams_and_fills_the_tool_context(
    settings: TierflowSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _example("one_agent.py")
    model = ScriptedChatModel().enqueue(
        _calls(("save_note", {"text": "demo on Friday"})),
        "Saved.",
        _calls(("save_note", {"text": "bring the adapter"})),
        "Saved it too.",
    )
    runner = Runner(settings, tiers={"reasoning": scripted_tier("reasoning", model)})

    first = await example["ask"](runner, "Note: the demo is on Friday.", "n1")
    second = await example["stream"](runner, "Note: bring the adapter.", "n1")

    assert (first.status, first.answer) == ("completed", "Saved.")
    assert (second.status, second.answer) == ("completed", "Saved it too.")
    # the tool read the thread id from its ToolContext; the model never saw the parameter
    assert example["NOTES"] == {"n1": ["demo on Friday", "bring the adapter"]}
    tool_spec = model.calls[0].kwargs["tools"][0]["function"]
    assert set(tool_spec["parameters"]["properties"]) == {"text"}
    printed = capsys.readouterr().out
    assert "[notetaker on tier reasoning]" in printed
    assert "[calls save_note {'text': 'bring the adapter'}]" in printed
    assert "[save_note ok]" in printed and "Saved it too." in printed
