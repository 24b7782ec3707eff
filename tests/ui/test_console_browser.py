"""The console in a real browser (headless Chromium): a real ``tierflow serve`` over a
scripted backend, a real ``streamlit run`` subprocess, one of each for the module."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_sync_client
from playwright.sync_api import expect

from tests.server.conftest import REFUNDED
from tests.ui.conftest import Screenshot, UiServer, streamlit_console
from tierflow.testing import Fault, Reply

IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


@pytest.fixture(scope="module")
def served(shared_server: UiServer) -> Iterator[tuple[UiServer, str]]:
    with streamlit_console(shared_server.url) as url:
        yield shared_server, url


@pytest.fixture(scope="module")
def page(browser: Any, served: tuple[UiServer, str]) -> Iterator[Any]:
    p = browser.new_page(viewport={"width": 1280, "height": 900})
    yield p
    p.close()


def idle(page: Any) -> None:
    page.wait_for_selector(IDLE, timeout=20_000)


def fresh(page: Any, url: str, graph: str = "chat") -> None:
    """The console from scratch (a reload), on a new thread of ``graph``."""
    page.goto(url)
    idle(page)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name=graph, exact=True).click()
    sidebar.get_by_role("button", name="New thread").click()
    idle(page)


def ask(page: Any, question: str) -> None:
    page.get_by_test_id("stChatInputTextArea").fill(question)
    page.keyboard.press("Enter")


def sdk(srv: UiServer) -> Any:
    return get_sync_client(url=srv.url, api_key=None)


def test_ask_streams_the_answer_and_shows_the_step(
    served: tuple[UiServer, str], page: Any, screenshot: Screenshot
) -> None:
    srv, url = served
    srv.backend.enqueue(Reply.text("The answer is forty-two."))
    fresh(page, url)
    ask(page, "what is the answer?")
    page.get_by_text("The answer is forty-two.").first.wait_for(timeout=20_000)
    page.get_by_text("run budget left").first.wait_for(timeout=20_000)  # the run ended
    idle(page)
    status = page.get_by_test_id("stExpander").filter(has_text="tier t")
    expect(status.first).to_contain_text("chat · tier t · vllm:scripted-model")
    status.first.click()
    expect(status.first).to_contain_text("model scripted-model")  # the step's model line
    expect(page.get_by_text("run budget left")).to_have_count(1)
    assert screenshot(page, "console-chat").stat().st_size > 0

    # the backend refuses the next question: the step says why, a banner says degraded
    srv.backend.enqueue(Fault.status(400, body={"error": {"message": "bad request body"}}))
    ask(page, "and now?")
    page.get_by_text("Degraded: a tier had no working backend").wait_for(timeout=20_000)
    idle(page)
    failed = page.get_by_test_id("stExpander").filter(has_text="no backend").last
    failed.click()
    expect(failed).to_contain_text("not used: vllm:scripted-model failed")
    assert page.get_by_text("Traceback").count() == 0


def test_approve_edit_and_reject_tool_calls(
    served: tuple[UiServer, str], page: Any, screenshot: Screenshot
) -> None:
    srv, url = served
    REFUNDED.clear()
    fresh(page, url, "clerk")
    srv.backend.enqueue(
        Reply.tool_calls([("refund", {"order_id": "A1"})]), Reply.text("All set for A1")
    )
    ask(page, "refund A1")
    card = page.get_by_text("Approve tool call").first
    card.wait_for(timeout=20_000)
    idle(page)
    screenshot(page, "console-approval")
    page.get_by_role("button", name="Approve").first.click()
    page.get_by_text("All set for A1").first.wait_for(timeout=20_000)
    assert REFUNDED == ["A1"]

    # edit the arguments, then approve: the tool runs with the edited ones
    srv.backend.enqueue(Reply.tool_calls([("refund", {"order_id": "B2"})]), Reply.text("ok B"))
    ask(page, "refund B2")
    area = page.get_by_label("arguments (JSON)").first
    area.wait_for(timeout=20_000)
    idle(page)
    area.fill('{"order_id": "B3"}')
    area.press("Control+Enter")
    idle(page)
    page.get_by_role("button", name="Approve").first.click()
    page.get_by_text("ok B").first.wait_for(timeout=20_000)
    assert REFUNDED == ["A1", "B3"]

    # reject: the tool never runs, the model hears why
    srv.backend.enqueue(Reply.tool_calls([("refund", {"order_id": "C4"})]), Reply.text("not done"))
    ask(page, "refund C4")
    page.get_by_role("button", name="Reject").first.wait_for(timeout=20_000)
    idle(page)
    page.get_by_role("button", name="Reject").first.click()
    page.get_by_text("not done").first.wait_for(timeout=20_000)
    assert REFUNDED == ["A1", "B3"]
    tool_reply = srv.backend.requests[-1].body["messages"][-1]
    assert "rejected" in str(tool_reply["content"])


def test_threads_survive_a_reload_and_can_be_renamed_and_deleted(
    served: tuple[UiServer, str], page: Any
) -> None:
    srv, url = served
    srv.backend.enqueue(Reply.text("kept answer"))
    fresh(page, url)
    ask(page, "a question to keep")
    page.get_by_text("kept answer").first.wait_for(timeout=20_000)
    idle(page)
    page.goto(url)  # a reload: the session is new, the threads are on the server
    idle(page)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_role("button", name="a question to keep").click()
    page.get_by_text("kept answer").first.wait_for(timeout=20_000)
    idle(page)
    sidebar.get_by_label("Rename to").fill("Renamed thread")
    sidebar.get_by_label("Rename to").press("Enter")
    idle(page)
    sidebar.get_by_role("button", name="Rename").click()
    sidebar.get_by_role("button", name="▶ Renamed thread").wait_for(timeout=20_000)
    titles = [t["metadata"].get("title") for t in sdk(srv).threads.search(limit=100)]
    assert "Renamed thread" in titles
    idle(page)
    sidebar.get_by_role("button", name="Delete thread").click()
    expect(sidebar.get_by_role("button", name="Renamed thread")).to_have_count(0)
    titles = [t["metadata"].get("title") for t in sdk(srv).threads.search(limit=100)]
    assert "Renamed thread" not in titles


def test_stop_cancels_the_run_on_the_server(served: tuple[UiServer, str], page: Any) -> None:
    srv, url = served
    held = threading.Event()
    srv.backend.enqueue(Reply.text("too late", until=held))
    fresh(page, url)
    ask(page, "take your time")
    stop = page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop")
    stop.wait_for(timeout=20_000)
    client = sdk(srv)
    thread = max(client.threads.search(limit=100), key=lambda t: str(t["created_at"]))
    deadline = time.monotonic() + 15
    while not client.runs.list(thread["thread_id"]) and time.monotonic() < deadline:
        time.sleep(0.1)  # the run is created by the console's request
    expect(page.get_by_test_id("stChatInputTextArea")).to_be_disabled()  # while it runs
    stop.click()
    page.get_by_text("Stopped: the run was cancelled on the server.").wait_for(timeout=20_000)
    expect(page.get_by_test_id("stChatInputTextArea")).to_be_enabled()
    held.set()
    runs = client.runs.list(thread["thread_id"])
    assert [r["status"] for r in runs] == ["interrupted"]


def test_feedback_is_stored_with_the_run(served: tuple[UiServer, str], page: Any) -> None:
    srv, url = served
    srv.backend.enqueue(Reply.text("rate me"))
    fresh(page, url)
    ask(page, "give feedback")
    page.get_by_text("rate me").first.wait_for(timeout=20_000)
    idle(page)
    page.get_by_test_id("stFeedback").first.locator("button").first.click()
    idle(page)
    page.get_by_placeholder("comment (optional)").fill("spot on")
    page.get_by_placeholder("comment (optional)").press("Enter")
    idle(page)
    page.get_by_role("button", name="Send feedback").click()
    page.get_by_text("feedback up: spot on").wait_for(timeout=20_000)
    client = sdk(srv)
    thread = max(client.threads.search(limit=100), key=lambda t: str(t["created_at"]))
    (run,) = client.runs.list(thread["thread_id"])
    stored = thread["metadata"]["feedback"][run["run_id"]]
    assert (stored["score"], stored["comment"]) == ("up", "spot on")


def test_server_down_shows_a_banner_and_keeps_the_question(
    served: tuple[UiServer, str], page: Any
) -> None:
    srv, url = served
    fresh(page, url)
    srv.stop()
    try:
        ask(page, "are you there?")
        page.get_by_text("Server unreachable").wait_for(timeout=20_000)
        # The banner can come from the page run before the question's own (New thread's,
        # still finishing when the server stopped): wait for the run that keeps it.
        page.get_by_text("Your question is kept").wait_for(timeout=20_000)
        assert page.get_by_text("are you there?").count() >= 1, page.inner_text("body")
        assert page.get_by_text("Traceback").count() == 0
    finally:
        srv.start()
    srv.backend.enqueue(Reply.text("back again"))
    idle(page)
    page.get_by_role("button", name="Retry").click()
    page.get_by_text("back again").first.wait_for(timeout=20_000)


# Bounds, not speed goals: the first `retrieve` loads the embedding model, which takes long
# on a loaded machine.
def upload(page: Any, path: Path) -> None:
    """Choose a file, wait until the uploader lists it (its upload reruns the page), add it."""
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
    page.get_by_test_id("stFileChipName").filter(has_text=path.name).wait_for(timeout=60_000)
    idle(page)
    page.get_by_role("button", name="Add to the index").click()


def test_an_uploaded_document_is_cited_with_its_passage(
    served: tuple[UiServer, str], page: Any, tmp_path: Path
) -> None:
    srv, url = served
    doc = tmp_path / "returns-policy.md"
    doc.write_text("# Returns\n\nItems may be returned within 30 days of delivery.\n")
    page.goto(f"{url}/documents")
    idle(page)
    upload(page, doc)
    page.get_by_text("returns-policy.md: 1 passage(s) added").wait_for(timeout=60_000)
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"not a pdf at all")
    upload(page, bad)
    page.get_by_text("broken.pdf: 'broken.pdf' cannot be read").wait_for(timeout=60_000)
    assert not (srv.state / "docs" / "broken.pdf").exists()

    srv.backend.enqueue(
        Reply.tool_calls([("retrieve", {"query": "return window"})]),
        Reply.text("Within 30 days [returns-policy.md#0]."),
    )
    fresh(page, url, "librarian")
    ask(page, "How long do I have to return an item?")
    page.get_by_text("Within 30 days [").first.wait_for(timeout=60_000)
    idle(page)
    source = page.get_by_test_id("stExpander").filter(has_text="returns-policy.md").first
    source.click()
    expect(source).to_contain_text("returned within 30 days of delivery")


def test_backends_and_guardrail_pages(
    served: tuple[UiServer, str], page: Any, screenshot: Screenshot
) -> None:
    _, url = served
    page.goto(f"{url}/backends")
    page.get_by_test_id("stDataFrame").wait_for(timeout=20_000)
    idle(page)
    screenshot(page, "console-backends")

    page.goto(f"{url}/guardrails")
    idle(page)
    page.get_by_label("Text").fill(
        "Mail ada.lovelace@example.com the refund, card 4111 1111 1111 1111"
    )
    page.get_by_label("Text").press("Control+Enter")
    idle(page)
    page.get_by_test_id("stMain").get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name="output", exact=True).click()
    idle(page)
    page.get_by_role("button", name="Check").click()
    page.get_by_text("<EMAIL_1>").first.wait_for(timeout=20_000)  # the redacted text
    page.get_by_test_id("stDataFrame").wait_for(timeout=20_000)  # every verdict
    idle(page)
    expect(page.get_by_test_id("stMain")).to_contain_text("redact")
    screenshot(page, "console-guardrails")
