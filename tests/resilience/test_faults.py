"""The fault matrix: every fault a production endpoint produces, injected into the first
backend of a tier (OpenAI-shaped and Mistral-shaped, each through its real client), in a
full run through ``Runner``. Each run must end with the fallback's answer, leave a
checkpoint that the next question on the thread builds on, and say in its record what
happened to the faulty backend (outcome, failure class, retries, breaker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tierflow.testing import Fault, Reply, ScriptedServer
from tierflow.testing.sockets import closed_port

from .conftest import HEALTHY, Rig, make_rig


@dataclass(frozen=True)
class Case:
    fault: Fault | None  # None: nothing listens on the faulty backend's port
    failure: str  # Attempt.failure of the faulty backend
    retries: int  # with max_attempts 2 in retry-first mode: 1 if retryable
    status: int | None = None
    stream: bool = False  # run with token streaming (the stream faults need it)
    breaker: str | None = None  # the faulty backend's breaker after the first run
    gave_up: str = "retries spent"
    api_key: str | None = None  # the faulty server's key (the backend sends "sk-test")


CASES = {
    "500": Case(Fault.status(500), "server", 1, 500),
    "502": Case(Fault.status(502), "server", 1, 502),
    "503": Case(Fault.status(503), "server", 1, 503),
    "429": Case(Fault.status(429), "rate_limited", 1, 429),
    "429-retry-after": Case(Fault.status(429, retry_after=0.05), "rate_limited", 1, 429),
    "429-retry-after-too-long": Case(
        Fault.status(429, retry_after=30), "rate_limited", 0, 429, gave_up="Retry-After 30s"
    ),
    "refused": Case(None, "connect", 0, breaker="open", gave_up="breaker opened"),
    "stall": Case(Fault.stall(seconds=10), "timeout", 1),
    "reset-mid-stream": Case(Fault.reset(2), "dropped", 1, stream=True),
    "malformed-json": Case(Fault.malformed(), "invalid_response", 0, gave_up="not retryable"),
    "truncated-sse": Case(Fault.truncated_stream(2), "dropped", 1, stream=True),
    "sse-without-finish": Case(Fault.unfinished_stream(2), "dropped", 1, stream=True),
    "invalid-tool-json": Case(Fault.invalid_tool_json(), "invalid_response", 0, gave_up="not"),
    "empty-choices": Case(Fault.empty_choices(), "invalid_response", 0, gave_up="not"),
    "401": Case(Fault.status(401), "auth", 0, 401, breaker="open", gave_up="not", api_key="right"),
}


@pytest.mark.parametrize("flavor", ["openai", "mistral"])
@pytest.mark.parametrize("name", list(CASES))
async def test_fault_ends_with_the_fallback_and_an_intact_checkpoint(
    tmp_path: Path, healthy: ScriptedServer, flavor: str, name: str
) -> None:
    case = CASES[name]
    faulty: ScriptedServer | None = None
    if case.fault is None:
        url = f"http://127.0.0.1:{closed_port()}/v1"
    else:
        faulty = ScriptedServer(flavor=flavor, api_key=case.api_key)  # type: ignore[arg-type]
        faulty.set_default(case.fault)  # every request to it fails the same way
        url = faulty.base_url
    try:
        rig = make_rig(tmp_path / "state", flavor, url, healthy)
        await _first_run(rig, case, faulty)
        await _second_run_sees_the_history(rig)
    finally:
        if faulty is not None:
            faulty.stop()


async def _first_run(rig: Rig, case: Case, faulty: ScriptedServer | None) -> None:
    rig.healthy.enqueue(Reply.text("Paris is the capital of France."))
    events: list[dict[str, Any]] = []
    record = await rig.runner.ask(
        "What is the capital of France?",
        graph="direct",
        thread_id="t1",
        on_event=events.append if case.stream else None,
        stream_tokens=case.stream,
    )
    assert record.answer == "Paris is the capital of France."
    assert not record.degraded
    step = record.steps[-1]
    assert step.backend == HEALTHY
    assert step.fallback_from == rig.faulty_id
    first = step.attempts[0]
    assert (first.backend, first.outcome, first.failure) == (rig.faulty_id, "failed", case.failure)
    assert first.retries == case.retries == len(first.retry_reasons) == len(first.retry_delays_s)
    assert first.status_code == case.status
    assert first.gave_up is not None and first.gave_up.startswith(case.gave_up)
    assert first.breaker == case.breaker
    assert step.fallback_reason is not None
    assert step.fallback_reason.startswith(f"{rig.faulty_id}: {first.reason}")
    if faulty is not None:
        assert len(faulty.requests) == 1 + case.retries
    if case.retries and case.fault is not None and case.fault.retry_after is not None:
        assert first.retry_delays_s == [case.fault.retry_after]  # honoured exactly
    if case.stream:
        _assert_restarts_announced(events, rig, case)


def _assert_restarts_announced(events: list[dict[str, Any]], rig: Rig, case: Case) -> None:
    restarts = [e for e in events if e["event"] == "stream_restarted"]
    # one before the retry on the same backend, one before the fallback
    assert [(e["from_backend"], e["to_backend"]) for e in restarts] == [
        (rig.faulty_id, rig.faulty_id),
        (rig.faulty_id, HEALTHY),
    ][: case.retries + 1]
    assert all(e["discarded_chars"] > 0 and e["node"] == "generalist" for e in restarts)
    last = max(i for i, e in enumerate(events) if e["event"] == "stream_restarted")
    before = "".join(e["text"] for e in events[:last] if e["event"] == "token")
    after = "".join(e["text"] for e in events[last:] if e["event"] == "token")
    assert before  # the broken streams did reach the listener...
    assert after == "Paris is the capital of France."  # ...and the restart says to drop them


async def _second_run_sees_the_history(rig: Rig) -> None:
    rig.healthy.enqueue(Reply.text("About two million people."))
    record = await rig.runner.ask("And its population?", graph="direct", thread_id="t1")
    assert record.answer == "About two million people."
    sent = rig.healthy.requests[-1].body["messages"]
    texts = [str(m.get("content")) for m in sent]
    assert "What is the capital of France?" in texts
    assert "Paris is the capital of France." in texts
    assert texts[-1] == "And its population?"
