from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from tierflow.errors import TierExhausted
from tierflow.models.tiers import Tier, strict_schema
from tierflow.settings import Price
from tierflow.testing import ScriptedBackend, ScriptedChatModel, scripted_tier


class Answer(BaseModel):
    value: int


Q = [HumanMessage("hi")]


async def test_first_backend_answers_without_fallback() -> None:
    a = ScriptedChatModel().enqueue("one")
    result = await scripted_tier("t", a, ScriptedChatModel()).acall(Q)
    assert result.message.content == "one"
    assert result.fallback_from is None and result.fallback_reason is None
    assert [x.outcome for x in result.attempts] == ["ok"]


async def test_unavailable_backend_is_skipped_without_a_call() -> None:
    hosted = ScriptedChatModel().enqueue("never")
    local = ScriptedChatModel().enqueue("from local")
    tier = Tier(
        name="reasoning",
        backends=[
            ScriptedBackend(hosted, id="mistral:x", local=False, unavailable="no API key"),
            ScriptedBackend(local, id="local"),
        ],
    )
    result = await tier.acall(Q)
    assert result.backend.id == "local"
    assert hosted.calls == []
    assert result.fallback_from == "mistral:x"
    assert result.fallback_reason == "mistral:x: no API key"
    assert [(a.backend, a.outcome) for a in result.attempts] == [
        ("mistral:x", "unavailable"),
        ("local", "ok"),
    ]


async def test_failure_moves_the_chain_on_and_records_the_error() -> None:
    broken = ScriptedChatModel().enqueue(ConnectionError("connection refused"))
    ok = ScriptedChatModel().enqueue("fine")
    result = await scripted_tier("t", broken, ok).acall(Q)
    assert result.message.content == "fine"
    failed = result.attempts[0]
    assert failed.outcome == "failed"
    assert failed.error_type == "ConnectionError"
    assert failed.reason == "ConnectionError: connection refused"


async def test_every_backend_down_raises_tier_exhausted_with_each_reason() -> None:
    tier = scripted_tier(
        "reasoning",
        ScriptedChatModel().enqueue(TimeoutError("slow")),
        ScriptedChatModel().enqueue(RuntimeError("boom")),
    )
    with pytest.raises(TierExhausted) as info:
        await tier.acall(Q)
    assert info.value.tier == "reasoning"
    assert [a.reason for a in info.value.attempts] == ["TimeoutError: slow", "RuntimeError: boom"]
    assert [a.outcome for a in info.value.attempts] == ["failed", "failed"]
    assert str(info.value) == (
        "tier 'reasoning' exhausted (scripted:reasoning-0: TimeoutError: slow; "
        "scripted:reasoning-1: RuntimeError: boom)"
    )


async def test_sensitive_calls_never_reach_a_hosted_backend() -> None:
    hosted = ScriptedChatModel(default="hosted")
    local = ScriptedChatModel(default="local")
    tier = Tier(
        name="reasoning",
        backends=[ScriptedBackend(hosted, id="openai:gpt-4o", local=False), ScriptedBackend(local)],
    )
    result = await tier.acall(Q, sensitive=True)
    assert result.message.content == "local"
    assert hosted.calls == []
    assert result.attempts[0].reason == "residency: sensitive data"

    only_hosted = Tier(
        name="r", backends=[ScriptedBackend(hosted, id="openai:gpt-4o", local=False)]
    )
    with pytest.raises(TierExhausted, match="residency"):
        await only_hosted.acall(Q, sensitive=True)
    assert hosted.calls == []


async def test_structured_output_is_constrained_and_validated() -> None:
    model = ScriptedChatModel().enqueue({"value": 42})
    result = await scripted_tier("t", model).acall(Q, output_type=Answer)
    assert result.parsed == Answer(value=42)
    fmt = model.calls[0].kwargs["response_format"]
    assert fmt == strict_schema(Answer)
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert fmt["json_schema"]["schema"]["required"] == ["value"]


async def test_invalid_structured_output_falls_back() -> None:
    bad = ScriptedChatModel().enqueue("not json at all")
    good = ScriptedChatModel().enqueue('```json\n{"value": 7}\n```')
    result = await scripted_tier("t", bad, good).acall(Q, output_type=Answer)
    assert result.parsed == Answer(value=7)
    assert result.attempts[0].reason is not None
    assert result.attempts[0].reason.startswith("invalid output")


async def test_cost_comes_from_the_price_table() -> None:
    model = ScriptedChatModel().enqueue("a b c d")  # 4 output tokens, 1 input token
    tier = Tier(
        name="t",
        backends=[ScriptedBackend(model, id="openai:gpt-4o", local=False)],
        prices={"openai:gpt-4o": Price(input=2.0, output=10.0)},
    )
    result = await tier.acall(Q)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (1, 4)
    assert result.usage.cost_usd == pytest.approx((1 * 2.0 + 4 * 10.0) / 1e6)
