"""The server's /console routes over HTTP (no browser): feedback, backends, the guardrail
playground, document upload; each honours API keys (another key's thread is a 404)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ui.conftest import UiServer, ui_server
from tierflow.testing import Reply

ALICE, BOB = "alice-key", "bob-key"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    with ui_server(tmp_path_factory.mktemp("console-routes"), frozenset({ALICE, BOB})) as s:
        yield s


def http(srv: UiServer, key: str | None = ALICE) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"x-api-key": key} if key else {}, timeout=20)


def finished_run(srv: UiServer) -> tuple[str, str]:
    srv.backend.enqueue(Reply.text("an answer"))
    with http(srv) as c:
        thread_id = c.post("/threads", json={}).json()["thread_id"]
        body = {"assistant_id": "chat", "input": {"messages": [{"role": "user", "content": "q"}]}}
        run = c.post(f"/threads/{thread_id}/runs", json=body).json()
        c.get(f"/threads/{thread_id}/runs/{run['run_id']}/join")
    return thread_id, run["run_id"]


def test_feedback_is_kept_with_the_run_and_only_for_its_owner(srv: UiServer) -> None:
    thread_id, run_id = finished_run(srv)
    path = f"/console/threads/{thread_id}/runs/{run_id}/feedback"
    with http(srv) as c:
        got = c.post(path, json={"score": "down", "comment": "wrong total"})
        assert got.status_code == 200, got.text
        meta = c.get(f"/threads/{thread_id}").json()["metadata"]
    assert meta["feedback"][run_id]["score"] == "down"
    assert meta["feedback"][run_id]["comment"] == "wrong total"
    with http(srv, BOB) as c:
        assert c.post(path, json={"score": "up"}).status_code == 404
    with http(srv, None) as c:
        assert c.post(path, json={"score": "up"}).status_code == 401
    with http(srv) as c:
        bad = c.post(path, json={"score": "meh"})
        assert bad.status_code == 422
        assert "score" in bad.json()["message"]
        missing = c.post(f"/console/threads/{thread_id}/runs/nope/feedback", json={"score": "up"})
        assert missing.status_code == 404


def test_backends_table_has_states_tiers_and_breakers(srv: UiServer) -> None:
    with http(srv) as c:
        table = c.get("/console/backends").json()
    rows = {r["backend"]: r for r in table["backends"]}
    row = rows["vllm:scripted-model"]
    assert row["state"] == "reachable", row
    assert row["tiers"] == ["t"]
    assert row["breaker"]["state"] == "closed"
    assert table["tiers"]["t"] == ["vllm:scripted-model"]


def test_guardrail_playground_shows_every_verdict(srv: UiServer) -> None:
    with http(srv) as c:
        out = c.post("/console/guard", json={"text": "mail ada@example.com", "stage": "output"})
        assert out.status_code == 200, out.text
        result = out.json()
        assert c.post("/console/guard", json={"text": "x", "stage": "nowhere"}).status_code == 422
    assert result["result"]["action"] == "redact"
    assert "<EMAIL_1>" in result["result"]["text"]
    assert {v["name"] for v in result["verdicts"]} >= {"pii"}


def test_documents_upload_into_the_retrieval_folder(srv: UiServer) -> None:
    folder = Path(srv.state) / "docs"
    with http(srv) as c:
        ok = c.post(
            "/console/documents", params={"name": "policy.md"}, content=b"# Returns\n30 days."
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["chunks"] >= 1
        wrong = c.post("/console/documents", params={"name": "x.exe"}, content=b"MZ")
        assert wrong.status_code == 415
        broken = c.post("/console/documents", params={"name": "bad.pdf"}, content=b"not a pdf")
        assert broken.status_code == 422
    assert (folder / "policy.md").read_bytes() == b"# Returns\n30 days."
    assert sorted(p.name for p in folder.iterdir()) == ["policy.md"]  # nothing half-written
