"""RetryPolicy's arithmetic, Retry-After parsing, and the one error classifier over the
errors both SDKs really raise (collected from real clients against a scripted server)."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_mistralai import ChatMistralAI
from langchain_openai import ChatOpenAI

from tierflow.resilience import (
    Failure,
    FailureKind,
    RetryPolicy,
    classify,
    parse_retry_after,
    retry_after_from,
)
from tierflow.settings import load_settings
from tierflow.testing import Fault, ScriptedServer
from tierflow.testing.sockets import closed_port


def test_backoff_is_full_jitter_within_exponential_bounds() -> None:
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=4.0)
    rng = random.Random(1234)
    for retry, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        waits = [policy.backoff(retry, rng) for _ in range(400)]
        assert all(0.0 <= w <= cap for w in waits)
        # full jitter spreads over the whole range, not around the cap
        assert min(waits) < cap * 0.1 and max(waits) > cap * 0.9
    a = [RetryPolicy().backoff(3, random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]  # a seeded RNG makes it reproducible


def test_retry_after_is_honoured_unless_it_asks_too_much() -> None:
    policy = RetryPolicy(max_retry_after_s=20.0)

    def failure(after: float | None) -> Failure:
        return Failure(
            kind=FailureKind.RATE_LIMITED, reason="429", error_type="X", retry_after_s=after
        )

    assert policy.delay(1, failure(3.5)) == 3.5
    assert policy.delay(1, failure(0)) == 0
    assert policy.delay(1, failure(20.01)) is None  # do not wait: fall back instead
    assert 0 <= (policy.delay(2, failure(None), random.Random(0)) or 0) <= 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), ("0.25", 0.25), (" 3 ", 3.0), ("-5", 0.0), ("soon", None), ("", None)],
)
def test_parse_retry_after_seconds(value: str, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = time.time()
    later = datetime.fromtimestamp(now, UTC) + timedelta(seconds=90)
    assert parse_retry_after(format_datetime(later, usegmt=True), now=now) == pytest.approx(
        90, abs=1
    )
    earlier = datetime.fromtimestamp(now, UTC) - timedelta(hours=1)
    assert parse_retry_after(format_datetime(earlier, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now=1445412480.0) == 0.0


def test_retry_after_ms_wins_over_seconds() -> None:
    headers = httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})
    assert retry_after_from(headers) == 1.5
    assert retry_after_from(httpx.Headers({"retry-after": "9"})) == 9.0
    assert retry_after_from(httpx.Headers({})) is None


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match=">= 0"):
        RetryPolicy(backoff_base_s=-1)


def test_settings_reach_the_policies_field_by_field() -> None:
    from tierflow.resilience import breaker_for, retry_policy_for, tier_retry_policy

    settings = load_settings(
        tiers={"reasoning": {"backends": ["openai"], "retry": {"max_attempts": 5}}},
        resilience={
            "retry": {"backoff_base_s": 0.1},
            "backends": {"openai": {"retry": {"max_attempts": 2}, "breaker": {"cooldown_s": 5}}},
        },
    )
    backend = retry_policy_for(settings, "openai:gpt-4o")
    assert (backend.max_attempts, backend.backoff_base_s) == (2, 0.1)
    tier = tier_retry_policy(settings, settings.tiers["reasoning"])
    assert tier is not None and (tier.max_attempts, tier.backoff_base_s) == (5, 0.1)
    assert tier_retry_policy(settings, settings.tiers["router"]) is None
    breaker = breaker_for(settings, "openai:gpt-4o")
    assert (breaker.policy.cooldown_s, breaker.policy.failure_threshold) == (5, 3)


# -- the classifier, on errors the real clients raise ----------------------------------------


def _client(flavor: str, url: str) -> BaseChatModel:
    timeout = httpx.Timeout(0.3, connect=0.3)
    if flavor == "openai":
        return ChatOpenAI(base_url=url, api_key="k", model="m", max_retries=0, timeout=timeout)
    client = httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer k"}, timeout=timeout)
    return ChatMistralAI(endpoint=url, api_key="k", model="m", max_retries=0, async_client=client)


async def _error(flavor: str, fault: Fault | None, *, stream: bool = False) -> BaseException:
    if fault is None:
        return await _raise(_client(flavor, f"http://127.0.0.1:{closed_port()}/v1"), stream)
    key = "right" if fault.status_code == 401 else None  # the client sends "k": a 401
    with ScriptedServer(flavor=flavor, api_key=key) as srv:  # type: ignore[arg-type]
        srv.set_default(fault)
        return await _raise(_client(flavor, srv.base_url), stream)


async def _raise(model: BaseChatModel, stream: bool) -> BaseException:
    try:
        if stream:
            async for _ in model.astream("hi"):
                pass
        else:
            await model.ainvoke("hi")
    except Exception as exc:
        return exc
    finally:  # pools must not outlive this test's event loop
        if isinstance(model, ChatOpenAI):
            await model.root_async_client.close()
        elif isinstance(model, ChatMistralAI):
            await model.async_client.aclose()
    raise AssertionError("no error raised")


@pytest.mark.parametrize("flavor", ["openai", "mistral"])
@pytest.mark.parametrize(
    ("fault", "stream", "kind", "status", "after"),
    [
        (Fault.status(503, retry_after=2), False, FailureKind.SERVER, 503, 2.0),
        (Fault.status(502), False, FailureKind.SERVER, 502, None),
        (Fault.status(408), False, FailureKind.SERVER, 408, None),
        (Fault.status(409), False, FailureKind.SERVER, 409, None),
        (Fault.status(429, retry_after=1), False, FailureKind.RATE_LIMITED, 429, 1.0),
        (Fault.status(401), False, FailureKind.AUTH, 401, None),
        (Fault.status(403), False, FailureKind.AUTH, 403, None),
        (Fault.status(400), False, FailureKind.CLIENT, 400, None),
        (Fault.status(404), False, FailureKind.CLIENT, 404, None),
        (Fault.status(422, retry_after=1), False, FailureKind.CLIENT, 422, None),
        (None, False, FailureKind.CONNECT, None, None),
        (Fault.stall(5), False, FailureKind.TIMEOUT, None, None),
        (Fault.drop(), False, FailureKind.DROPPED, None, None),
        (Fault.reset(2), True, FailureKind.DROPPED, None, None),
        (Fault.truncated_stream(2), True, FailureKind.DROPPED, None, None),
        (Fault.malformed(), False, FailureKind.INVALID_RESPONSE, None, None),
        (Fault.malformed(), True, FailureKind.INVALID_RESPONSE, None, None),
        (Fault.empty_choices(), False, FailureKind.INVALID_RESPONSE, None, None),
    ],
    ids=[
        "503+retry-after",
        "502",
        "408",
        "409",
        "429+retry-after",
        "401",
        "403",
        "400",
        "404",
        "422",
        "refused",
        "stall",
        "drop",
        "reset-mid-stream",
        "truncated-stream",
        "malformed",
        "malformed-stream",
        "empty-choices",
    ],
)
async def test_one_classifier_for_both_sdks(
    flavor: str,
    fault: Fault | None,
    stream: bool,
    kind: FailureKind,
    status: int | None,
    after: float | None,
) -> None:
    exc = await _error(flavor, fault, stream=stream)
    failure = classify(exc)
    assert (failure.kind, failure.status_code, failure.retry_after_s) == (kind, status, after)
    assert failure.retryable == (
        kind in {"connect", "timeout", "dropped", "rate_limited", "server"}
    )
    assert failure.reason.startswith(type(exc).__name__)
    assert failure.error_type == type(exc).__name__


def test_plain_errors_are_classified_too() -> None:
    assert classify(ConnectionRefusedError()).kind is FailureKind.CONNECT
    assert classify(ConnectionResetError()).kind is FailureKind.DROPPED
    assert classify(TimeoutError()).kind is FailureKind.TIMEOUT
    assert classify(json.JSONDecodeError("x", "doc", 0)).kind is FailureKind.INVALID_RESPONSE
    assert classify(RuntimeError("boom")).kind is FailureKind.ERROR
    assert not classify(RuntimeError("boom")).retryable
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    timeout = httpx.ConnectTimeout("slow handshake", request=request)
    assert classify(timeout).kind is FailureKind.CONNECT
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = httpx.ReadTimeout("slow", request=request)
    assert classify(wrapped).kind is FailureKind.TIMEOUT
    assert classify(wrapped).reason == "RuntimeError: outer (ReadTimeout: slow)"
