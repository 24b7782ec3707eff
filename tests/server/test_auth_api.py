"""Who may do what on a server with API keys: no key or a wrong key gets 401 on every
route, and a thread belongs to the key that created it (another key gets 404 for it: it
cannot read, stream, resume, cancel or delete it). Through ``langgraph-sdk`` and raw HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tierflow.server.auth import key_id
from tierflow.testing import Reply

from .conftest import QUESTION, RELEASE, Served, hold_run, serving

ALICE, BOB = "key-alice-0123456789", "key-bob-9876543210"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("auth-state"), api_keys=frozenset({ALICE, BOB})) as srv:
        yield srv


def as_(served: Served, key: str | None) -> LangGraphClient:
    return get_client(url=served.url, api_key=key)


def _routes(thread: str, run: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route of the API but the health check and the docs."""
    return [
        ("POST", "/assistants/search", {}),
        ("GET", "/assistants/clerk", None),
        ("GET", "/assistants/clerk/schemas", None),
        ("POST", "/threads", {}),
        ("POST", "/threads/search", {}),
        ("GET", f"/threads/{thread}", None),
        ("PATCH", f"/threads/{thread}", {"metadata": {"x": 1}}),
        ("GET", f"/threads/{thread}/state", None),
        ("POST", f"/threads/{thread}/history", {}),
        ("POST", f"/threads/{thread}/runs", {"assistant_id": "clerk", "input": QUESTION}),
        ("POST", f"/threads/{thread}/runs/wait", {"assistant_id": "clerk", "input": QUESTION}),
        ("POST", f"/threads/{thread}/runs/stream", {"assistant_id": "clerk", "input": QUESTION}),
        ("GET", f"/threads/{thread}/runs", None),
        ("GET", f"/threads/{thread}/runs/{run}", None),
        ("GET", f"/threads/{thread}/runs/{run}/record", None),
        ("GET", f"/threads/{thread}/runs/{run}/join", None),
        ("GET", f"/threads/{thread}/runs/{run}/stream", None),
        ("POST", f"/threads/{thread}/runs/{run}/cancel", {}),
        ("DELETE", f"/threads/{thread}", None),
    ]


async def _alices_run(served: Served) -> tuple[str, str]:
    alice = as_(served, ALICE)
    thread = (await alice.threads.create())["thread_id"]
    served.backend.enqueue(Reply.text("hi Alice"))
    run = await alice.runs.create(thread, "clerk", input=QUESTION)
    await alice.runs.join(thread, run["run_id"])
    return str(thread), str(run["run_id"])


@pytest.mark.parametrize(("key", "why"), [(None, "missing API key"), ("nope", "invalid API key")])
async def test_no_key_or_a_wrong_key_gets_401_on_every_route(
    served: Served, key: str | None, why: str
) -> None:
    thread, run = await _alices_run(served)
    headers = {"x-api-key": key} if key else {}
    async with httpx.AsyncClient(base_url=served.url, headers=headers) as http:
        for method, path, body in _routes(thread, run):
            response = await http.request(method, path, json=body)
            assert response.status_code == 401, (method, path, response.text)
            assert why in response.json()["detail"], (method, path)
        assert (await http.get("/ok")).status_code == 200  # probes need no key
    # nothing was changed by the refused calls
    alice = as_(served, ALICE)
    assert (await alice.threads.get(thread))["metadata"].get("x") is None


async def test_another_keys_thread_does_not_exist_for_it(served: Served) -> None:
    thread, run = await _alices_run(served)
    async with httpx.AsyncClient(base_url=served.url, headers={"x-api-key": BOB}) as http:
        for method, path, body in _routes(thread, run):
            if not path.startswith(f"/threads/{thread}"):
                continue
            response = await http.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
    bob = as_(served, BOB)
    found = await bob.threads.search(limit=100)
    assert thread not in {t["thread_id"] for t in found}
    # still Alice's, untouched, and owned by her key's id (never the key itself)
    alice = as_(served, ALICE)
    mine = await alice.threads.get(thread)
    assert mine["thread_id"] == thread
    assert ALICE not in str(mine) and key_id(ALICE) != ALICE
    assert [r["run_id"] for r in await alice.runs.list(thread)] == [run]


async def test_a_key_past_its_run_limit_gets_429_and_other_keys_do_not(tmp_path: Path) -> None:
    with serving(tmp_path, api_keys=frozenset({ALICE, BOB}), max_runs_per_key=1) as srv:
        alice, bob = as_(srv, ALICE), as_(srv, BOB)
        held = await hold_run(alice, srv, (await alice.threads.create())["thread_id"])
        other = (await alice.threads.create())["thread_id"]
        async with httpx.AsyncClient(base_url=srv.url, headers={"x-api-key": ALICE}) as http:
            body = {"assistant_id": "clerk", "input": QUESTION}
            r = await http.post(f"/threads/{other}/runs", json=body)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert "limit 1" in r.json()["detail"]
            metrics = (await http.get("/metrics")).text
        assert 'tierflow_runs_rejected_total{reason="key_limit"} 1.0' in metrics
        srv.backend.enqueue(Reply.text("hello bob"))
        bobs = (await bob.threads.create())["thread_id"]
        values: Any = await bob.runs.wait(bobs, "clerk", input=QUESTION)
        assert values["messages"][-1]["content"] == "hello bob"
        srv.backend.enqueue(Reply.text("done"))
        RELEASE.set()
        await alice.runs.join(held["thread_id"], held["run_id"])
