"""Runs through ``langgraph-sdk`` against the real server: wait, each stream mode, an
approval round trip, cancel, join, and a second run on a busy thread under each
multitask strategy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from langgraph_sdk.errors import ConflictError

from tierflow.testing import Reply

from .conftest import (
    HOLDING,
    QUESTION,
    REFUNDED,
    RELEASE,
    Served,
    client,
    hold_run,
    new_thread,
    until,
)


async def test_wait_returns_the_state_and_every_run_has_a_record(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    served.backend.enqueue(Reply.text("hello there"))

    values = await c.runs.wait(thread_id, "clerk", input=QUESTION)

    assert values["messages"][-1]["content"] == "hello there"
    assert values["messages"][-1]["type"] == "ai"
    (run,) = await c.runs.list(thread_id)
    assert run["status"] == "success"
    record = run["kwargs"]["record"]
    assert record["answer"] == "hello there" and record["status"] == "completed"
    assert record["steps"][0]["backend"] == "vllm:scripted-model"
    async with httpx.AsyncClient(base_url=served.url) as http:
        r = await http.get(f"/threads/{thread_id}/runs/{run['run_id']}/record")
    assert r.status_code == 200 and r.json() == record
    state = await c.threads.get_state(thread_id)
    assert state["values"]["messages"][-1]["content"] == "hello there"
    assert state["next"] == [] and state["checkpoint"]["thread_id"] == thread_id
    history = await c.threads.get_history(thread_id, limit=3)
    assert len(history) == 3
    assert history[0]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("values", {"values"}),
        ("updates", {"updates"}),
        ("messages-tuple", {"messages"}),
        ("messages", {"messages/metadata", "messages/partial", "messages/complete"}),
        ("custom", {"custom"}),
        (["values", "updates", "custom"], {"values", "updates", "custom"}),
    ],
)
async def test_stream_each_mode(served: Served, mode: Any, expected: set[str]) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    served.backend.enqueue(Reply.text("streamed answer"))

    parts = [p async for p in c.runs.stream(thread_id, "clerk", input=QUESTION, stream_mode=mode)]

    events = [p.event for p in parts]
    assert events[0] == "metadata" and parts[0].data["run_id"]
    assert set(events) - {"metadata"} == expected
    if mode == "values":
        assert parts[-1].data["messages"][-1]["content"] == "streamed answer"
    if mode == "messages-tuple":
        texts = [p.data[0]["content"] for p in parts if p.event == "messages"]
        assert "streamed answer" in "".join(texts)
    if mode == "custom":
        kinds = [p.data.get("event") for p in parts if p.event == "custom"]
        assert "node_started" in kinds and "node_finished" in kinds


async def test_approval_round_trip_one_decision_per_call(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    REFUNDED.clear()
    served.backend.enqueue(
        Reply.tool_calls([("refund", {"order_id": "A1"}), ("refund", {"order_id": "B2"})]),
        Reply.text("done"),
    )

    paused = await c.runs.wait(thread_id, "clerk", input=QUESTION)

    cards = [call for i in paused["__interrupt__"] for call in i["value"]["calls"]]
    ids = {call["args"]["order_id"]: call["id"] for call in cards}
    assert sorted(ids) == ["A1", "B2"] and REFUNDED == []
    assert (await c.threads.get(thread_id))["status"] == "interrupted"
    (run,) = await c.runs.list(thread_id)
    assert run["kwargs"]["record"]["status"] == "awaiting_approval"
    # a new question while approvals wait (runs.wait raises httpx's own error type)
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await c.runs.wait(thread_id, "clerk", input=QUESTION)
    assert refused.value.response.status_code == 409

    done = await c.runs.wait(
        thread_id,
        "clerk",
        command={"resume": {ids["A1"]: "approve", ids["B2"]: "reject"}},
    )

    assert done["messages"][-1]["content"] == "done" and "__interrupt__" not in done
    last = (await c.runs.list(thread_id))[0]
    record = last["kwargs"]["record"]
    assert record["status"] == "completed"
    outcomes = {c["id"]: c["ok"] for s in record["steps"] for c in s["tool_calls"]}
    assert outcomes == {ids["A1"]: True, ids["B2"]: False}, record["steps"]
    assert REFUNDED == ["A1"]


async def test_cancel_a_running_run_then_join(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    run = await hold_run(c, served, thread_id)
    assert (await c.threads.get(thread_id))["status"] == "busy"

    await c.runs.cancel(thread_id, run["run_id"], wait=True)

    got = await c.runs.get(thread_id, run["run_id"])
    assert got["status"] == "interrupted"
    assert (await c.threads.get(thread_id))["status"] != "busy"
    RELEASE.set()
    # join on a finished run returns at once with the thread's values
    joined = await c.runs.join(thread_id, run["run_id"])
    assert joined["messages"][0]["content"] == "hello"
    # the cut-off run is unfinished: a question is refused, no input continues it
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await c.runs.wait(thread_id, "waiter", input=QUESTION)
    assert refused.value.response.status_code == 409
    assert "input is null" in refused.value.response.text
    served.backend.enqueue(Reply.text("continued"))
    values = await c.runs.wait(thread_id, "waiter")
    assert values["messages"][-1]["content"] == "continued"
    tool_results = [m["content"] for m in values["messages"] if m["type"] == "tool"]
    assert tool_results == ["released x"]  # the cut-off call ran once, to completion


async def test_a_stream_that_asked_for_it_is_cancelled_when_the_client_leaves(
    served: Served,
) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    HOLDING.clear()
    RELEASE.clear()
    served.backend.enqueue(Reply.tool_calls([("hold", {"label": "x"})]))
    parts = c.runs.stream(thread_id, "waiter", input=QUESTION, on_disconnect="cancel")
    async for part in parts:
        assert part.event == "metadata"
        run_id = part.data["run_id"]
        break
    await parts.aclose()  # the client goes away mid-run

    assert await until(c, thread_id, run_id, "interrupted", "success") == "interrupted"
    RELEASE.set()


async def test_join_and_join_stream_follow_a_background_run(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    run = await hold_run(c, served, thread_id)
    served.backend.enqueue(Reply.text("after the hold"))
    joined = c.runs.join_stream(thread_id, run["run_id"], stream_mode="values")
    RELEASE.set()

    parts = [p async for p in joined]

    assert parts[0].event == "metadata"
    assert parts[-1].event == "values"
    assert parts[-1].data["messages"][-1]["content"] == "after the hold"
    values = await c.runs.join(thread_id, run["run_id"])
    assert values["messages"][-1]["content"] == "after the hold"


async def test_busy_thread_reject(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    first = await hold_run(c, served, thread_id)

    with pytest.raises(ConflictError) as caught:
        await c.runs.create(thread_id, "waiter", input=QUESTION, multitask_strategy="reject")

    assert "busy" in str(caught.value) and "\n" not in str(caught.value)
    served.backend.enqueue(Reply.text("first done"))
    RELEASE.set()
    assert await until(c, thread_id, first["run_id"], "success", "error") == "success"
    assert len(await c.runs.list(thread_id)) == 1  # nothing half-written


async def test_two_runs_racing_on_an_idle_thread_one_is_rejected(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    HOLDING.clear()
    RELEASE.clear()
    served.backend.enqueue(Reply.tool_calls([("hold", {"label": "x"})]), Reply.text("done"))

    results = await asyncio.gather(
        c.runs.create(thread_id, "waiter", input=QUESTION),
        c.runs.create(thread_id, "waiter", input=QUESTION),
        return_exceptions=True,
    )

    refused = [r for r in results if isinstance(r, ConflictError)]
    (accepted,) = [r for r in results if isinstance(r, dict)]
    assert len(refused) == 1
    RELEASE.set()
    assert await until(c, thread_id, accepted["run_id"], "success", "error") == "success"
    assert len(await c.runs.list(thread_id)) == 1


async def test_busy_thread_enqueue(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    first = await hold_run(c, served, thread_id)
    served.backend.enqueue(Reply.text("first done"), Reply.text("second done"))

    second = await c.runs.create(thread_id, "waiter", input=QUESTION, multitask_strategy="enqueue")
    assert second["status"] == "pending"
    RELEASE.set()
    values = await c.runs.join(thread_id, second["run_id"])

    assert (await c.runs.get(thread_id, first["run_id"]))["status"] == "success"
    assert values["messages"][-1]["content"] == "second done"
    asked = [m["content"] for m in values["messages"] if m["type"] == "human"]
    assert asked == ["hello", "hello"]  # both questions kept, in order


async def test_an_enqueued_run_the_thread_refuses_fails_alone(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    first = await hold_run(c, served, thread_id)
    served.backend.enqueue(Reply.text("first done"))
    # accepted while busy; by the time it runs there is no approval to resume
    second = await c.runs.create(
        thread_id, "waiter", command={"resume": "approve"}, multitask_strategy="enqueue"
    )
    RELEASE.set()

    result = await c.runs.join(thread_id, second["run_id"])

    assert result["__error__"]["message"].endswith("has no run waiting for approval")
    got = await c.runs.get(thread_id, second["run_id"])
    assert got["status"] == "error" and got["kwargs"]["record"] is None
    assert (await c.runs.get(thread_id, first["run_id"]))["status"] == "success"
    assert (await c.threads.get(thread_id))["status"] == "error"
    async with httpx.AsyncClient(base_url=served.url) as http:
        r = await http.get(f"/threads/{thread_id}/runs/{second['run_id']}/record")
    assert r.status_code == 409 and "no run waiting for approval" in r.json()["detail"]


async def test_busy_thread_interrupt(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    first = await hold_run(c, served, thread_id)
    served.backend.enqueue(Reply.text("second done"))

    second = await c.runs.create(
        thread_id, "waiter", input=QUESTION, multitask_strategy="interrupt"
    )
    values = await c.runs.join(thread_id, second["run_id"])

    assert (await c.runs.get(thread_id, first["run_id"]))["status"] == "interrupted"
    assert (await c.runs.get(thread_id, second["run_id"]))["status"] == "success"
    assert values["messages"][-1]["content"] == "second done"
    # the cut-off call got an error result, so no backend sees a call without one
    sent = served.backend.requests[-1].body["messages"]
    call_ids = [c["id"] for m in sent for c in m.get("tool_calls") or []]
    answered = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert call_ids and call_ids == answered
    RELEASE.set()
