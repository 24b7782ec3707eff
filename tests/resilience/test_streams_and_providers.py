"""A stream that breaks with no backend left ends partial; a conversation that starts on
OpenAI (``call_...`` tool-call ids) moves to Mistral-shaped servers without a 422; a bad
tool-call JSON on the last backend goes to the agent instead of failing the turn."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import START, StateGraph

from tierflow import Agent, BuildContext, add_agent, tool
from tierflow.models.backends import build_backend
from tierflow.models.tiers import Tier
from tierflow.resilience import PARTIAL_MARK
from tierflow.runner import Runner
from tierflow.settings import BackendRef, TierflowSettings
from tierflow.state import GraphState
from tierflow.testing import Fault, Reply, ScriptedServer

from .conftest import fast_settings

NINE = re.compile(r"^[A-Za-z0-9]{9}$")


@tool
def get_weather(city: str) -> str:
    """Weather for a city.

    Args:
        city: City name.
    """
    return f"sunny in {city}"


def _one_agent_runner(settings: TierflowSettings, tier: Tier, agent: Agent) -> Runner:
    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        graph: StateGraph[GraphState] = StateGraph(GraphState)
        graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
        return graph

    return Runner(settings, tiers={agent.tier: tier}, graphs={"one": factory})


async def test_a_broken_stream_with_no_backend_left_ends_partial(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        srv.set_default(Fault.truncated_stream(3, text="the answer starts well and then"))
        settings = fast_settings(
            tmp_path / "state", backends={"openai": {"base_url": srv.base_url, "api_key": "k"}}
        )
        tier = Tier(
            name="reasoning", backends=[build_backend(BackendRef.parse("openai"), settings)]
        )
        runner = Runner(settings, tiers={"reasoning": tier})
        events: list[dict[str, Any]] = []
        record = await runner.ask(
            "Tell me.", graph="direct", on_event=events.append, stream_tokens=True
        )
        mark = PARTIAL_MARK.format(backend="openai:gpt-4o")
        assert record.answer == "the answer starts " + mark
        step = record.steps[-1]
        assert step.partial and step.degraded and record.degraded
        assert step.backend == "openai:gpt-4o"
        assert [a.outcome for a in step.attempts] == ["partial"]
        assert step.attempts[0].retries == 1 and step.attempts[0].failure == "dropped"
        restarts = [e for e in events if e["event"] == "stream_restarted"]
        assert len(restarts) == 1 and restarts[0]["discarded_chars"] == len("the answer starts ")

        # Without streaming nothing was received: a clean degraded answer, not a partial one.
        plain = await runner.ask("Tell me.", graph="direct")
        assert plain.answer.startswith("[degraded]") and not plain.steps[-1].partial


async def test_openai_tool_call_ids_reach_a_mistral_shaped_vllm_normalised(
    tmp_path: Path,
) -> None:
    history = [
        HumanMessage("Weather in Paris?"),
        AIMessage(
            "",
            tool_calls=[
                {
                    "name": "get_weather",
                    "args": {"city": "Paris"},
                    "id": "call_abcdefghij0123456789wxyz",
                }
            ],
        ),
        ToolMessage(
            [{"type": "text", "text": "sunny"}], tool_call_id="call_abcdefghij0123456789wxyz"
        ),
    ]
    with ScriptedServer(flavor="mistral") as mistral_vllm:  # vLLM serving a Mistral model
        mistral_vllm.enqueue(Reply.text("It is sunny."))
        settings = fast_settings(
            tmp_path / "state", backends={"vllm": {"base_url": mistral_vllm.base_url}}
        )
        backend = build_backend(BackendRef.parse("vllm:mistralai/Ministral-8B"), settings)
        backend.tool_mode = "native"
        result = await Tier(name="t", backends=[backend]).acall(history)
        assert result.message.content == "It is sunny."  # no 422
        sent = mistral_vllm.requests[-1].body["messages"]
    call_id = sent[1]["tool_calls"][0]["id"]
    assert NINE.match(call_id) and sent[2]["tool_call_id"] == call_id
    assert sent[2]["content"] == "sunny"
    original = history[1]
    assert isinstance(original, AIMessage)
    assert original.tool_calls[0]["id"] == "call_abcdefghij0123456789wxyz"  # not mutated


async def test_a_conversation_started_on_openai_moves_to_mistral(tmp_path: Path) -> None:
    with ScriptedServer(flavor="openai") as openai, ScriptedServer(flavor="mistral") as mistral:
        openai.enqueue(Reply.tool_calls([("get_weather", {"city": "Paris"})]))
        openai.set_default(Fault.status(503))  # then OpenAI goes down
        mistral.enqueue(Reply.text("It is sunny in Paris."))
        settings = fast_settings(
            tmp_path / "state",
            backends={
                "openai": {"base_url": openai.base_url, "api_key": "k"},
                "mistral": {"base_url": mistral.base_url, "api_key": "k"},
            },
        )
        tier = Tier(
            name="reasoning",
            backends=[build_backend(BackendRef.parse(i), settings) for i in ("openai", "mistral")],
        )
        agent = Agent(
            name="weather", instructions="Use tools.", tier="reasoning", tools=[get_weather]
        )
        record = await _one_agent_runner(settings, tier, agent).ask(
            "Weather in Paris?", graph="one"
        )
        assert record.answer == "It is sunny in Paris."
        assert [s.backend for s in record.steps] == [
            "openai:gpt-4o",
            "mistral:mistral-large-latest",
        ]
        assert record.steps[1].attempts[0].failure == "server"
        # OpenAI's own id was call_..., the Mistral server (which 422s on those) got 9 chars
        first_reply = openai.requests[0]
        assert first_reply.body["messages"][-1]["content"] == "Weather in Paris?"
        sent = mistral.requests[-1].body["messages"]
        calls = [m for m in sent if m.get("tool_calls")]
        results = [m for m in sent if m["role"] == "tool"]
        assert len(calls) == 1 and len(results) == 1
        assert NINE.match(calls[0]["tool_calls"][0]["id"])
        assert results[0]["tool_call_id"] == calls[0]["tool_calls"][0]["id"]
        assert results[0]["content"] == "sunny in Paris"


async def test_bad_tool_json_on_the_last_backend_goes_to_the_agent(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        srv.enqueue(Fault.invalid_tool_json(name="get_weather"), Reply.text("Sorry, fixed."))
        settings = fast_settings(
            tmp_path / "state", backends={"openai": {"base_url": srv.base_url, "api_key": "k"}}
        )
        tier = Tier(name="t", backends=[build_backend(BackendRef.parse("openai"), settings)])
        agent = Agent(name="weather", instructions="Use tools.", tier="t", tools=[get_weather])
        record = await _one_agent_runner(settings, tier, agent).ask("Weather?", graph="one")
        assert record.answer == "Sorry, fixed."
        assert record.steps[0].attempts[0].outcome == "ok"  # not a failure: nothing else left
        tool_results = [m for m in srv.requests[-1].body["messages"] if m["role"] == "tool"]
        assert tool_results[0]["content"].startswith("ERROR (invalid_arguments)")
