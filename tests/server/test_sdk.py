"""``tierflow serve``'s API driven by the official client, ``langgraph-sdk``, against the
real server on 127.0.0.1 and scripted backends over HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from typer.testing import CliRunner

from tierflow.cli.app import app as cli
from tierflow.testing import Reply, ScriptedServer

from .conftest import HOLDING, REFUNDED, RELEASE, Served, free_port, serving

QUESTION = {"messages": [{"role": "user", "content": "hello"}]}


def client(served: Served) -> LangGraphClient:
    return get_client(url=served.url, api_key=None)


async def _thread(c: LangGraphClient, **metadata: Any) -> str:
    thread = await c.threads.create(metadata=metadata or None)
    return str(thread["thread_id"])


async def _until(c: LangGraphClient, thread_id: str, run_id: str, *statuses: str) -> str:
    """Poll the run's status (bounded) until it is one of ``statuses``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = str((await c.runs.get(thread_id, run_id))["status"])
        if status in statuses:
            return status
    raise AssertionError(f"run {run_id} never reached {statuses}")


async def _hold(c: LangGraphClient, served: Served, thread_id: str) -> dict[str, Any]:
    """A run on ``waiter`` that stays running (in its ``hold`` tool) until RELEASE."""
    HOLDING.clear()
    RELEASE.clear()
    served.backend.enqueue(Reply.tool_calls([("hold", {"label": "x"})]))
    run = await c.runs.create(thread_id, "waiter", input=QUESTION)
    assert HOLDING.wait(15), "the run never reached its tool"
    return dict(run)


async def test_assistants_are_the_graphs(served: Served) -> None:
    c = client(served)
    found = await c.assistants.search(limit=100)
    names = {a["assistant_id"] for a in found}
    assert {"clerk", "waiter", "default"} <= names
    clerk = await c.assistants.get("clerk")
    assert clerk["graph_id"] == "clerk" and clerk["name"] == "clerk"
    by_uuid = await c.assistants.get(clerk["metadata"]["uuid"])
    assert by_uuid["assistant_id"] == "clerk"
    schemas = await c.assistants.get_schemas("clerk")
    assert schemas["graph_id"] == "clerk"
    assert "messages" in schemas["input_schema"]["properties"]
    with pytest.raises(NotFoundError):
        await c.assistants.get("nope")


async def test_threads_create_get_search_update_delete(served: Served) -> None:
    c = client(served)
    thread_id = await _thread(c, team="blue")
    got = await c.threads.get(thread_id)
    assert got["metadata"] == {"team": "blue"} and got["status"] == "idle"
    await c.threads.update(thread_id, metadata={"stage": "two"})
    assert (await c.threads.get(thread_id))["metadata"] == {"team": "blue", "stage": "two"}
    found = await c.threads.search(metadata={"stage": "two"})
    assert [t["thread_id"] for t in found] == [thread_id]
    served.backend.enqueue(Reply.text("hi"))
    await c.runs.wait(thread_id, "clerk", input=QUESTION)
    await c.threads.delete(thread_id)
    with pytest.raises(NotFoundError):
        await c.threads.get(thread_id)
    with pytest.raises(NotFoundError):
        await c.runs.list(thread_id)
    # its checkpoints went with it: the same id starts a fresh conversation
    await c.threads.create(thread_id=thread_id)
    assert (await c.threads.get_state(thread_id))["values"] == {}
    served.backend.enqueue(Reply.text("hi again"))
    values = await c.runs.wait(thread_id, "clerk", input=QUESTION)
    assert [m["type"] for m in values["messages"]] == ["human", "ai"]


async def test_wait_returns_the_state_and_every_run_has_a_record(served: Served) -> None:
    c = client(served)
    thread_id = await _thread(c)
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
    thread_id = await _thread(c)
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
    thread_id = await _thread(c)
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
    thread_id = await _thread(c)
    run = await _hold(c, served, thread_id)
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
    thread_id = await _thread(c)
    HOLDING.clear()
    RELEASE.clear()
    served.backend.enqueue(Reply.tool_calls([("hold", {"label": "x"})]))
    parts = c.runs.stream(thread_id, "waiter", input=QUESTION, on_disconnect="cancel")
    async for part in parts:
        assert part.event == "metadata"
        run_id = part.data["run_id"]
        break
    await parts.aclose()  # the client goes away mid-run

    assert await _until(c, thread_id, run_id, "interrupted", "success") == "interrupted"
    RELEASE.set()


async def test_join_and_join_stream_follow_a_background_run(served: Served) -> None:
    c = client(served)
    thread_id = await _thread(c)
    run = await _hold(c, served, thread_id)
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
    thread_id = await _thread(c)
    first = await _hold(c, served, thread_id)

    with pytest.raises(ConflictError) as caught:
        await c.runs.create(thread_id, "waiter", input=QUESTION, multitask_strategy="reject")

    assert "busy" in str(caught.value) and "\n" not in str(caught.value)
    served.backend.enqueue(Reply.text("first done"))
    RELEASE.set()
    assert await _until(c, thread_id, first["run_id"], "success", "error") == "success"
    assert len(await c.runs.list(thread_id)) == 1  # nothing half-written


async def test_busy_thread_enqueue(served: Served) -> None:
    c = client(served)
    thread_id = await _thread(c)
    first = await _hold(c, served, thread_id)
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
    thread_id = await _thread(c)
    first = await _hold(c, served, thread_id)
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
    thread_id = await _thread(c)
    first = await _hold(c, served, thread_id)
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


async def test_bad_bodies_name_the_field(served: Served) -> None:
    c = client(served)
    thread_id = await _thread(c)
    with pytest.raises(UnprocessableEntityError) as caught:
        await c.runs.create(thread_id, "clerk", input=QUESTION, stream_mode="debug")  # type: ignore[arg-type]
    assert "stream_mode" in str(caught.value)
    with pytest.raises(UnprocessableEntityError) as caught:
        await c.runs.create(thread_id, "clerk", input=QUESTION, multitask_strategy="rollback")
    assert "multitask_strategy" in str(caught.value)
    with pytest.raises(NotFoundError):
        await c.runs.create(thread_id, "no-such-graph", input=QUESTION)
    with pytest.raises(NotFoundError):
        await c.runs.get(thread_id, "no-such-run")
    async with httpx.AsyncClient(base_url=served.url) as http:
        r = await http.post(f"/threads/{thread_id}/runs", json={"input": QUESTION})
        assert r.status_code == 422 and r.json()["message"] == "assistant_id: Field required"
        r = await http.post("/threads", content=b"{not json", headers={"content-type": "x"})
        assert r.status_code == 422
        for bad, field in [
            ({"assistant_id": "clerk", "input": "hi"}, "input"),
            ({"assistant_id": "clerk", "command": {"goto": "x"}}, "command.goto"),
            ({"assistant_id": "clerk", "input": QUESTION, "on_disconnect": "x"}, "on_disconnect"),
        ]:
            r = await http.post(f"/threads/{thread_id}/runs", json=bad)
            assert r.status_code == 422 and r.json()["message"].startswith(f"{field}: "), r.text
        r = await http.post("/threads/search", json=[])
        assert r.status_code == 422 and r.json()["message"].startswith("body: ")
        r = await http.get(f"/threads/{thread_id}/runs", params={"limit": 0})
        assert r.status_code == 422 and r.json()["message"].startswith("limit: ")
        big = {"metadata": {"blob": "x" * 100_000}}
        r = await http.post("/threads", json=big)
        assert r.status_code == 413
        assert (await http.get("/ok")).json() == {"ok": True}
        assert (
            "/threads/{thread_id}/runs/stream" in (await http.get("/openapi.json")).json()["paths"]
        )
        metrics = (await http.get("/metrics")).text
    assert 'tierflow_runs_total{status="success"}' in metrics
    assert "tierflow_queue_depth 0" in metrics
    assert len(await c.runs.list(thread_id)) == 0  # nothing half-written


async def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    with serving(tmp_path / "state", max_queue=1) as small:
        c = client(small)
        first = await _hold(c, small, await _thread(c))
        other = await _thread(c)
        async with httpx.AsyncClient(base_url=small.url) as http:
            body = {"assistant_id": "waiter", "input": QUESTION}
            r = await http.post(f"/threads/{other}/runs", json=body)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert "queue is full" in r.json()["detail"]
            metrics = (await http.get("/metrics")).text
        assert 'tierflow_runs_rejected_total{reason="queue_full"} 1' in metrics
        assert "tierflow_queue_depth 1" in metrics
        assert await c.runs.list(other) == []  # nothing half-written
        small.backend.enqueue(Reply.text("done"))
        RELEASE.set()
        await c.runs.join(first["thread_id"], first["run_id"])


def test_tierflow_serve_answers_the_sdk(tmp_path: Path) -> None:
    """The command itself, in its own process, with a config file naming the backends."""
    with ScriptedServer() as backend:
        (tmp_path / "tierflow.toml").write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            '[tiers.router]\nbackends = ["vllm:router-model"]\n'
            '[tiers.reasoning]\nbackends = ["vllm:big-model"]\n'
            f'[backends.vllm]\nbase_url = "{backend.base_url}"\n'
            "[router]\nsemantic = false\n"
            "[telemetry]\nenabled = false\n"
        )
        backend.enqueue(Reply.json({"route": "data"}), Reply.json({"answer": "42"}))
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tierflow", "serve", "--port", str(port)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().decode()  # printed before uvicorn starts
            assert "serving on" in first, proc.communicate(timeout=10)
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{url}/ok").status_code == 200:
                        break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                    time.sleep(0.05)  # bounded: the process is binding its socket

            async def ask() -> dict[str, Any]:
                c = get_client(url=url, api_key=None)
                thread_id = await _thread(c)
                values = dict(await c.runs.wait(thread_id, "default", input=QUESTION))
                (run,) = await c.runs.list(thread_id)
                return {"values": values, "record": run["kwargs"]["record"]}

            got = asyncio.run(ask())
        finally:
            proc.terminate()
            proc.wait(10)
    assert got["values"]["messages"][-1]["content"] == "42"
    assert got["record"]["route"] == "data" and got["record"]["answer"] == "42"


def test_serve_refuses_a_public_address_without_keys() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TIERFLOW_API_KEYS" in lines[0]
