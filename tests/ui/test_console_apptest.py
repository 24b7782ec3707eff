"""The console's page logic in-process (``streamlit.testing.v1.AppTest``) against a real
``tierflow serve`` over a scripted backend: quicker than the browser, same code paths."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.server.conftest import REFUNDED
from tests.ui.conftest import UI_APP, UiServer
from tierflow.testing import Reply


@pytest.fixture(scope="module")
def srv(shared_server: UiServer) -> UiServer:
    return shared_server


def console(srv: UiServer, monkeypatch: pytest.MonkeyPatch, graph: str) -> AppTest:
    monkeypatch.setenv("TIERFLOW_SERVER_URL", srv.url)
    at = AppTest.from_file(str(UI_APP), default_timeout=30)
    at.run()
    at.sidebar.selectbox(key="graph_pick").select(graph).run()
    at.sidebar.button[0].click().run()  # New thread
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def test_a_blocked_question_shows_the_guardrails_reason(
    srv: UiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = console(srv, monkeypatch, "chat")
    at.chat_input[0].set_value("x" * 20_001).run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("Blocked by a guardrail: ")
    assert "20000" in error.value.replace(",", "").replace("_", "")


def test_two_parallel_calls_need_a_decision_each(
    srv: UiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    REFUNDED.clear()
    at = console(srv, monkeypatch, "clerk")
    srv.backend.enqueue(
        Reply.tool_calls([("refund", {"order_id": "P1"}), ("refund", {"order_id": "P2"})]),
        Reply.text("one of two refunded"),
    )
    at.chat_input[0].set_value("refund P1 and P2").run()
    approve = [b for b in at.button if b.key and b.key.startswith("approve-")]
    reject = [b for b in at.button if b.key and b.key.startswith("reject-")]
    assert len(approve) == len(reject) == 2  # one card per call
    approve[0].click().run()
    assert REFUNDED == []  # nothing resumes until every call has its decision
    next(b for b in at.button if b.key == reject[1].key).click().run()
    assert not at.exception
    assert "one of two refunded" in texts(at)
    assert REFUNDED == ["P1"]


def test_a_refused_run_shows_its_one_line_reason(
    srv: UiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = console(srv, monkeypatch, "clerk")
    srv.backend.enqueue(Reply.tool_calls([("refund", {"order_id": "Q1"})]))
    at.chat_input[0].set_value("refund Q1").run()
    assert any(b.key and b.key.startswith("approve-") for b in at.button)
    at.chat_input[0].set_value("something else").run()  # while the call awaits approval
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("The run failed: ")
    assert "\n" not in error.value and "Traceback" not in error.value
    assert any(b.key and b.key.startswith("approve-") for b in at.button)  # still pending


def test_regenerate_asks_the_last_question_again(
    srv: UiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = console(srv, monkeypatch, "chat")
    srv.backend.enqueue(Reply.text("first try"), Reply.text("second try"))
    at.chat_input[0].set_value("say something").run()
    assert "first try" in texts(at)
    at.sidebar.button(key="regenerate").click().run()
    assert not at.exception
    assert "second try" in texts(at)
    asked = [str(r.body["messages"][-1]["content"]) for r in srv.backend.requests[-2:]]
    assert asked == ["say something", "say something"]
