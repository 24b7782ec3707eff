"""``tierflow bench console``: the Streamlit console in headless Chromium, over a real
``tierflow serve`` (uvicorn on loopback) whose backend is a ``ScriptedServer``.

Measures the time to open a thread of 200 messages (100 questions and answers): from the
click on its title in the sidebar until its last answer shows and the page is idle
(goal: under 1 s). ``--screenshots`` also saves the README's pictures in ``docs/img/``.

Needs the ``ui`` extra, the ``playwright`` package and Debian's ``chromium`` on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
MESSAGES = 200
REPEATS = 5
SHOTS = Path("docs/img")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(state: Path) -> Iterator[tuple[str, Any]]:
    import uvicorn
    from langgraph.graph import START, StateGraph

    from tierflow import Agent, Runner, tool
    from tierflow.agents.node import add_agent
    from tierflow.graphs.context import BuildContext
    from tierflow.server import create_app
    from tierflow.settings import load_settings
    from tierflow.state import GraphState
    from tierflow.testing import ScriptedServer

    @tool(requires_approval=True)
    def refund(order_id: str) -> str:
        """Refund an order.

        Args:
            order_id: The order.
        """
        return f"refunded {order_id}"

    def one(agent: Agent) -> Any:
        def factory(ctx: BuildContext) -> StateGraph[GraphState]:
            """One agent."""
            builder: StateGraph[GraphState] = StateGraph(GraphState)
            builder.add_edge(START, add_agent(builder, agent, ctx.tiers))
            return builder

        return factory

    with ScriptedServer() as backend:
        settings = load_settings(
            False,
            state_dir=state,
            tiers={"t": {"backends": ["vllm:scripted-model"]}},
            backends={
                "vllm": {"base_url": backend.base_url, "tool_calling": "native"},
                "local": {"base_url": backend.base_url},
            },
            telemetry={"enabled": False},
        )
        graphs = {
            "chat": one(Agent(name="chat", instructions="Answer.", tier="t")),
            "clerk": one(Agent(name="clerk", instructions="Refund.", tier="t", tools=[refund])),
        }
        port = _port()
        app = create_app(Runner(settings, graphs=graphs), api_keys=None)
        uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        while not uv.started:
            thread.join(0.01)
        try:
            yield f"http://127.0.0.1:{port}", backend
        finally:
            uv.should_exit = True
            thread.join(10)


@contextlib.contextmanager
def _console(server_url: str) -> Iterator[str]:
    app = Path(__file__).resolve().parents[1] / "ui" / "app.py"
    if not app.exists():  # installed layout
        import importlib.util

        spec = importlib.util.find_spec("tierflow.ui")
        assert spec is not None and spec.origin is not None
        app = Path(spec.origin).parent / "app.py"
    port = _port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
        "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    env = {**os.environ, "TIERFLOW_SERVER_URL": server_url}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)  # the port is not open yet
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _thread(server_url: str, backend: Any, title: str, messages: int) -> str:
    from langgraph_sdk import get_sync_client

    from tierflow.testing import Reply

    client = get_sync_client(url=server_url, api_key=None)
    thread = client.threads.create(metadata={"title": title, "graph": "chat"})
    tid = str(thread["thread_id"])
    for i in range(messages // 2):
        backend.enqueue(Reply.text(f"answer number {i}"))
        question: dict[str, Any] = {"messages": [{"role": "user", "content": f"q{i}"}]}
        client.runs.wait(tid, "chat", input=question)
    return tid


def _open_times(page: Any, url: str, title: str, messages: int) -> list[float]:
    last = f"answer number {messages // 2 - 1}"
    times = []
    for _ in range(REPEATS):
        page.goto(url)
        page.wait_for_selector(IDLE, timeout=30_000)
        button = page.get_by_test_id("stSidebar").get_by_role("button", name=title, exact=True)
        started = time.perf_counter()
        button.click()
        page.get_by_text(last, exact=True).wait_for(timeout=30_000)
        page.wait_for_selector(IDLE, timeout=30_000)
        times.append((time.perf_counter() - started) * 1000)
    return times


def _screenshots(page: Any, url: str, backend: Any) -> None:
    from tierflow.testing import Reply

    SHOTS.mkdir(parents=True, exist_ok=True)

    def fresh(graph: str) -> None:
        page.goto(url)
        page.wait_for_selector(IDLE, timeout=30_000)
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
        page.get_by_role("option", name=graph, exact=True).click()
        page.get_by_test_id("stSidebar").get_by_role("button", name="New thread").click()
        page.wait_for_selector(IDLE, timeout=30_000)

    def ask(question: str) -> None:
        page.get_by_test_id("stChatInputTextArea").fill(question)
        page.keyboard.press("Enter")

    fresh("chat")
    backend.enqueue(Reply.text("Orders from France: **42** (of 310)."))
    ask("How many orders came from customers in France?")
    page.get_by_text("Orders from France").first.wait_for(timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.get_by_test_id("stExpander").first.click()
    page.get_by_text("latency").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)  # the expander's opening animation
    page.screenshot(path=str(SHOTS / "console-chat.png"))
    fresh("clerk")
    backend.enqueue(Reply.tool_calls([("refund", {"order_id": "A-1042"})]))
    ask("Refund order A-1042")
    page.get_by_text("Approve tool call").first.wait_for(timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.screenshot(path=str(SHOTS / "console-approval.png"))
    page.goto(f"{url}/backends")
    page.get_by_text("Backends").first.wait_for(timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.screenshot(path=str(SHOTS / "console-backends.png"))
    page.goto(f"{url}/guardrails")
    page.wait_for_selector(IDLE, timeout=30_000)
    page.get_by_label("Text").fill(
        "Mail ada.lovelace@example.com the refund, card 4111 1111 1111 1111"
    )
    page.get_by_label("Text").press("Control+Enter")
    page.wait_for_selector(IDLE, timeout=30_000)
    page.get_by_test_id("stMain").get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name="output", exact=True).click()
    page.wait_for_selector(IDLE, timeout=30_000)
    page.get_by_role("button", name="Check").click()
    page.get_by_test_id("stDataFrame").wait_for(timeout=30_000)
    page.get_by_text("<EMAIL_1>").first.wait_for(timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.wait_for_timeout(1000)  # the data grid draws on a canvas after it mounts
    page.screenshot(path=str(SHOTS / "console-guardrails.png"))


def run(screenshots: bool = False) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not on PATH (make sysdeps installs Debian's)")
    with (
        tempfile.TemporaryDirectory() as state,
        _server(Path(state)) as (server_url, backend),
        _console(server_url) as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        _thread(server_url, backend, "A long thread", MESSAGES)
        _thread(server_url, backend, "A short thread", 2)
        times = _open_times(page, url, "A long thread", MESSAGES)
        short = _open_times(page, url, "A short thread", 2)
        if screenshots:
            _screenshots(page, url, backend)
        browser.close()
    return {
        "thread_messages": MESSAGES,
        "open_thread_ms": {
            "median": round(statistics.median(times), 1),
            "max": round(max(times), 1),
            "all": [round(t, 1) for t in times],
        },
        "open_2_message_thread_ms": {
            "median": round(statistics.median(short), 1),
            "max": round(max(short), 1),
        },
        "load_average_1m": round(os.getloadavg()[0], 2),  # the machine is shared
        "goal_ms": 1000,
        "goal_met": max(times) < 1000,
        "note": "click on the thread title -> its last answer shown and the script idle, "
        "headless Chromium, console and server on one 2-core machine shared with other jobs",
    }


def main() -> None:
    from tierflow.bench.record import record_results

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--screenshots", action="store_true", help="also save docs/img/*.png")
    args = parser.parse_args()
    command = "python -m tierflow.bench.console" + (" --screenshots" if args.screenshots else "")
    record_results("console", run(args.screenshots), Path("bench/results"), command=command)


if __name__ == "__main__":
    main()
