"""A tier used as a LangChain chat model (bind_tools, with_structured_output, ainvoke,
astream, and inside a custom LangGraph node) still walks its chain with retries and
breakers, and says in ``response_metadata`` who answered and why the others did not.
Real OpenAI and Mistral clients against ScriptedServers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import START, MessagesState, StateGraph
from pydantic import BaseModel

from tierflow.models.backends import build_backend
from tierflow.models.tiers import Tier
from tierflow.record import Attempt
from tierflow.resilience import ResidencyExhausted
from tierflow.settings import BackendRef
from tierflow.testing import Fault, Reply, ScriptedServer
from tierflow.tools import tool

from .conftest import fast_settings

Q = [HumanMessage("Weather in Paris?")]


@tool
def get_weather(city: str) -> str:
    """Forecast for a city.

    Args:
        city: City name.
    """
    return f"sunny in {city}"


def _tier(tmp_path: Path, *servers: ScriptedServer) -> Tier:
    """A tier over OpenAI-compatible backends ``vllm:b0``, ``vllm:b1``... at ``servers``."""
    settings = fast_settings(tmp_path / "state", resilience={"retry": {"max_attempts": 1}})
    backends = []
    for i, srv in enumerate(servers):
        vllm = settings.backends.vllm.model_copy(update={"base_url": srv.base_url})
        one = settings.model_copy(
            update={"backends": settings.backends.model_copy(update={"vllm": vllm})}
        )
        backends.append(build_backend(BackendRef.parse(f"vllm:b{i}"), one))
    return Tier(name="reasoning", backends=backends)


def _attempts(message: AIMessage) -> list[Attempt]:
    return [Attempt.model_validate(a) for a in message.response_metadata["tierflow"]["attempts"]]


async def test_bind_tools_falls_back_and_the_answer_records_both_attempts(
    tmp_path: Path,
) -> None:
    with ScriptedServer() as primary, ScriptedServer(flavor="mistral") as fallback:
        primary.enqueue(Fault.status(500))
        fallback.enqueue(Reply.tool_calls([("get_weather", {"city": "Paris"})]))
        settings = fast_settings(
            tmp_path / "state",
            backends={
                "vllm": {"base_url": primary.base_url},
                "mistral": {"base_url": fallback.base_url, "api_key": "k"},
            },
            resilience={"retry": {"max_attempts": 1}},
        )
        chain = ("vllm:primary", "mistral:mistral-large-latest")
        backends = [build_backend(BackendRef.parse(b), settings) for b in chain]
        tier = Tier(name="reasoning", backends=backends)
        assert isinstance(tier, BaseChatModel)

        reply = await tier.bind_tools([get_weather], tool_choice="any").ainvoke(Q)

        to_primary, to_fallback = primary.requests[0].body, fallback.requests[0].body
    assert isinstance(reply, AIMessage)
    [call] = reply.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Paris"})
    meta = reply.response_metadata["tierflow"]
    assert (meta["tier"], meta["backend"], meta["partial"]) == (
        "reasoning",
        "mistral:mistral-large-latest",
        False,
    )
    first, second = _attempts(reply)
    assert (first.backend, first.outcome, first.status_code, first.failure) == (
        "vllm:primary",
        "failed",
        500,
        "server",
    )
    assert (second.backend, second.outcome) == ("mistral:mistral-large-latest", "ok")
    # natively, each formatted by its backend's own client: OpenAI has no "any"
    for body in (to_primary, to_fallback):
        assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
        assert body["tools"][0]["function"]["parameters"] == get_weather.parameters
    assert (to_primary["tool_choice"], to_fallback["tool_choice"]) == ("required", "any")


async def test_an_open_breaker_is_skipped_and_recorded_without_a_request(tmp_path: Path) -> None:
    with ScriptedServer(api_key="right") as bad, ScriptedServer() as good:
        good.set_default(Reply.text("fine"))
        tier = _tier(tmp_path, bad, good)  # no key sent: 401 opens the breaker at once
        await tier.ainvoke(Q)
        before = len(bad.requests)

        reply = await tier.ainvoke(Q)

        assert len(bad.requests) == before
    assert reply.content == "fine"
    assert [a.outcome for a in _attempts(reply)] == ["breaker_open", "ok"]


class Forecast(BaseModel):
    city: str
    sunny: bool


async def test_with_structured_output_validates_and_moves_on_when_invalid(
    tmp_path: Path,
) -> None:
    with ScriptedServer() as primary, ScriptedServer() as fallback:
        primary.enqueue(Reply.text("not json"), Reply.text("still not json"))
        fallback.enqueue(
            Reply.json({"city": "Paris", "sunny": True}),
            Reply.json({"city": "Lyon", "sunny": False}),
        )
        tier = _tier(tmp_path, primary, fallback)

        value = await tier.with_structured_output(Forecast).ainvoke(Q)
        raw = await tier.with_structured_output(Forecast, include_raw=True).ainvoke(Q)

        body = fallback.requests[0].body
    assert value == Forecast(city="Paris", sunny=True)
    assert body["response_format"]["json_schema"]["strict"] is True  # the tier's strict schema
    assert raw["parsed"] == Forecast(city="Lyon", sunny=False)
    assert raw["parsing_error"] is None
    invalid, ok = _attempts(raw["raw"])
    assert (invalid.outcome, invalid.failure) == ("failed", "invalid_output")
    assert (ok.backend, ok.outcome) == ("vllm:b1", "ok")


async def test_astream_and_a_custom_langgraph_node_get_the_same_record(tmp_path: Path) -> None:
    with ScriptedServer() as primary, ScriptedServer() as fallback:
        primary.set_default(Fault.status(503))
        fallback.set_default(Reply.text("hello from b1"))
        tier = _tier(tmp_path, primary, fallback)

        chunks = [c async for c in tier.astream(Q)]

        async def node(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await tier.ainvoke(state["messages"])]}

        graph: StateGraph[MessagesState] = StateGraph(MessagesState)
        graph.add_node("model", node)
        graph.add_edge(START, "model")
        out = await graph.compile().ainvoke({"messages": Q})

    assert "".join(str(c.content) for c in chunks) == "hello from b1"
    assert chunks[-1].response_metadata["tierflow"]["backend"] == "vllm:b1"
    answer = out["messages"][-1]
    assert answer.content == "hello from b1"
    assert [a.outcome for a in _attempts(answer)] == ["failed", "ok"]


async def test_a_sensitive_call_keeps_residency_and_raises_with_the_attempts(
    tmp_path: Path,
) -> None:
    with ScriptedServer() as hosted:
        hosted.set_default(Reply.text("hosted answer"))
        settings = fast_settings(
            tmp_path / "state", backends={"openai": {"base_url": hosted.base_url, "api_key": "k"}}
        )
        hosted_backend = build_backend(BackendRef.parse("openai"), settings)
        tier = Tier(name="reasoning", backends=[hosted_backend])

        with pytest.raises(ResidencyExhausted) as info:
            await tier.bind(sensitive=True).ainvoke(Q)
        plain = await tier.ainvoke(Q)

        requests = len(hosted.requests)
    [skipped] = info.value.attempts
    assert (skipped.outcome, skipped.reason) == ("skipped", "residency: sensitive data")
    assert plain.content == "hosted answer" and requests == 1  # only the non-sensitive call
