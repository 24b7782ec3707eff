"""Assistants, threads, bad bodies and the command itself, through ``langgraph-sdk``
against the real server on 127.0.0.1 and scripted backends over HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError
from typer.testing import CliRunner

from tierflow.cli.app import app as cli
from tierflow.testing import Reply, ScriptedServer

from .conftest import (
    QUESTION,
    RELEASE,
    Served,
    client,
    free_port,
    hold_run,
    new_thread,
    serving,
)


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
    thread_id = await new_thread(c, team="blue")
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


async def test_the_placeholder_vault_never_leaves_the_server(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
    served.backend.enqueue(Reply.text("noted"))
    email = {"messages": [{"role": "user", "content": "Mail me at ada.l@example.com"}]}

    parts = [
        p
        async for p in c.runs.stream(
            thread_id, "clerk", input=email, stream_mode=["values", "updates"]
        )
    ]
    state = await c.threads.get_state(thread_id)
    history = await c.threads.get_history(thread_id)

    # clerk's input stage redacts PII (conftest): the thread keeps the placeholder
    assert state["values"]["messages"][0]["content"] == "Mail me at <EMAIL_1>"
    assert "ada.l@example.com" not in json.dumps(state)
    # and the vault that maps it back is in no state, update or checkpoint sent
    assert "guard_vault" not in json.dumps([[p.data for p in parts], state, history])


async def test_bad_bodies_name_the_field(served: Served) -> None:
    c = client(served)
    thread_id = await new_thread(c)
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
    assert "tierflow_queue_depth 0.0" in metrics
    assert len(await c.runs.list(thread_id)) == 0  # nothing half-written


async def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    with serving(tmp_path / "state", max_queue=1) as small:
        c = client(small)
        first = await hold_run(c, small, await new_thread(c))
        other = await new_thread(c)
        async with httpx.AsyncClient(base_url=small.url) as http:
            body = {"assistant_id": "waiter", "input": QUESTION}
            r = await http.post(f"/threads/{other}/runs", json=body)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert "queue is full" in r.json()["detail"]
            metrics = (await http.get("/metrics")).text
        assert 'tierflow_runs_rejected_total{reason="queue_full"} 1.0' in metrics
        assert "tierflow_queue_depth 1.0" in metrics
        assert await c.runs.list(other) == []  # nothing half-written
        small.backend.enqueue(Reply.text("done"))
        RELEASE.set()
        await c.runs.join(first["thread_id"], first["run_id"])


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_threads_runs_and_checkpoints_outlive_the_server(
    tmp_path: Path, db: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres").new_database("restart") if db == "postgres" else None
    with serving(tmp_path / "state", database_url=url) as first:
        c = client(first)
        thread_id = await new_thread(c, team="red")
        first.backend.enqueue(Reply.text("remembered"))
        await c.runs.wait(thread_id, "clerk", input=QUESTION)
        running = await hold_run(c, first, await new_thread(c))
    # stopping the server cancelled the held run: interrupted, never left "running"
    with serving(tmp_path / "state", database_url=url) as second:
        c = client(second)
        thread = await c.threads.get(thread_id)
        assert thread["metadata"]["team"] == "red"
        assert thread["values"]["messages"][-1]["content"] == "remembered"
        (run,) = await c.runs.list(thread_id)
        assert run["status"] == "success" and run["kwargs"]["record"]["answer"] == "remembered"
        held = await c.runs.get(running["thread_id"], running["run_id"])
        assert held["status"] == "interrupted"


def test_tierflow_serve_answers_the_sdk(tmp_path: Path) -> None:
    """The command itself, in its own process, with a config file naming the backends."""
    with ScriptedServer() as backend:
        (tmp_path / "tierflow.toml").write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            '[tiers.router]\nbackends = ["vllm:router-model"]\n'
            '[tiers.reasoning]\nbackends = ["vllm:big-model"]\n'
            f'[backends.vllm]\nbase_url = "{backend.base_url}"\n'
            'tool_calling = "native"\n'  # the free tool loop, not the small-model workflows
            "[router]\nsemantic = false\n"
            "[telemetry]\nenabled = false\n"
        )
        backend.enqueue(Reply.json({"route": "data"}), Reply.text("forty-two"))
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
                thread_id = await new_thread(c)
                values = dict(await c.runs.wait(thread_id, "default", input=QUESTION))
                (run,) = await c.runs.list(thread_id)
                return {"values": values, "record": run["kwargs"]["record"]}

            got = asyncio.run(ask())
        finally:
            proc.terminate()
            proc.wait(10)
    assert got["values"]["messages"][-1]["content"] == "forty-two"
    assert got["record"]["route"] == "data" and got["record"]["answer"] == "forty-two"


def test_serve_refuses_a_public_address_without_keys() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TIERFLOW_API_KEYS" in lines[0]
