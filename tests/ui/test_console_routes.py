"""The server's /console routes over HTTP (no browser): feedback (and its event in the run's
trace, exported over OTLP to a real receiver on loopback), backends, the guardrail
playground, document upload; each honours API keys (another key's thread is a 404)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

from tests.server.conftest import free_port
from tests.ui.conftest import UiServer, ui_server
from tierflow import telemetry
from tierflow.testing import Reply
from tierflow.ui.client import END, Console, RequestFailed

ALICE, BOB = "alice-key", "bob-key"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    with ui_server(tmp_path_factory.mktemp("console-routes"), frozenset({ALICE, BOB})) as s:
        yield s


def http(srv: UiServer, key: str | None = ALICE) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"x-api-key": key} if key else {}, timeout=20)


def finished_run(srv: UiServer, key: str | None = ALICE) -> tuple[str, str]:
    srv.backend.enqueue(Reply.text("an answer"))
    with http(srv, key) as c:
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


def test_streamed_tokens_arrive_before_the_run_ends_and_keys_keep_threads_apart(
    srv: UiServer,
) -> None:
    srv.backend.enqueue(Reply.text("one two three four five six seven eight nine ten"))
    alice, bob = Console(srv.url, ALICE), Console(srv.url, BOB)
    thread_id = alice.create_thread("chat", "count")
    events = alice.stream(thread_id, "chat", question="count")
    seen: list[tuple[str, Any]] = []
    while (item := events.get(timeout=20)) is not END:
        seen.append(item)
    partial = [d[0]["content"] for e, d in seen if e == "messages/partial" and d[0]["content"]]
    assert len(set(partial)) >= 3  # the answer grew in several steps
    assert partial[0] != partial[-1] and partial[-1].startswith(partial[0])
    assert seen[-1][0] == "updates"  # the run's end came after the tokens
    assert thread_id in [t["thread_id"] for t in alice.threads()]
    assert thread_id not in [t["thread_id"] for t in bob.threads()]
    with pytest.raises(RequestFailed) as caught:
        bob.thread(thread_id)
    assert caught.value.status == 404


def _feedback_on_a_traced_server(folder: Path, otlp_port: int) -> tuple[str, dict[str, Any]]:
    """A run and its feedback on a server whose spans go over OTLP/HTTP to ``otlp_port``
    (each span sent as it ends); the run's id and record."""
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{otlp_port}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with (
            telemetry.use_providers(tracer_provider=provider),
            ui_server(folder, telemetry=True) as traced,
        ):
            thread_id, run_id = finished_run(traced, key=None)
            with http(traced, None) as c:
                record = c.get(f"/threads/{thread_id}/runs/{run_id}/record").json()
                got = c.post(
                    f"/console/threads/{thread_id}/runs/{run_id}/feedback",
                    json={"score": "up", "comment": "clear"},
                ).json()
        assert got["traced"] is True
        return run_id, record
    finally:
        provider.shutdown()


async def _through_oteltap(folder: Path) -> tuple[str, dict[str, Any], list[Span]]:
    port = free_port()
    spans: list[Span] = []
    arrived = asyncio.Event()

    async def collect(receiver: OtelTapHttpProtobufReceiver) -> None:
        async for span in receiver.stream_traces():
            spans.append(span)
            if span.name == "tierflow.feedback":
                arrived.set()

    settings = OtelTapHttpProtobufReceiverSettings(http_port=port)  # binds 127.0.0.1 only
    async with OtelTapHttpProtobufReceiver(settings) as receiver:
        task = asyncio.create_task(collect(receiver))
        run_id, record = await asyncio.to_thread(_feedback_on_a_traced_server, folder, port)
        # the export was acknowledged; oteltap hands spans over by polling: a bounded wait
        await asyncio.wait_for(arrived.wait(), timeout=10)
        task.cancel()
    return run_id, record, spans


def test_feedback_goes_to_the_runs_trace_over_otlp(tmp_path: Path) -> None:
    run_id, record, spans = asyncio.run(_through_oteltap(tmp_path))
    in_trace = [s for s in spans if s.trace_id.hex() == record["trace_id"]]
    names = {s.name for s in in_trace}
    assert "tierflow.feedback" in names
    assert names - {"tierflow.feedback"}, names  # the run's own spans share the trace
    (span,) = [s for s in in_trace if s.name == "tierflow.feedback"]
    (event,) = span.events
    assert event.name == "feedback"
    assert {a.key: a.value.string_value for a in event.attributes} == {
        "tierflow.run_id": run_id,
        "feedback.score": "up",
        "feedback.comment": "clear",
    }
