"""``tierflow bench ui``: the Streamlit console in headless Chromium, over a real
``tierflow serve`` (uvicorn on loopback) whose backend is a ``ScriptedServer``.

Measures
- time to first token: from the Enter that submits a question until the first token of
  the answer shows in the page, minus the backend's own time to first token (the scripted
  reply's delay); p50/p95 of that difference (goal: p95 at most +300 ms);
- the time to open a thread of 200 messages (100 questions and answers): from the click on
  its title in the sidebar until its last answer shows and the page is idle (goal: < 1 s);
- the resident memory of the Streamlit process with 1, then 20 open browser sessions.

The machine's load average is recorded with the figures: other jobs share its cores.
The README's screenshots come from the browser tests (``TIERFLOW_SCREENSHOTS``).

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
TTFT_SAMPLES = 20
BACKEND_TTFT_S = 0.3
SESSIONS = 20


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
def _console(server_url: str) -> Iterator[tuple[str, int]]:
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
        yield url, proc.pid
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


def _fresh(page: Any, url: str) -> None:
    """The console from scratch, on a new thread of the ``chat`` graph."""
    page.goto(url)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.get_by_test_id("stSidebar").get_by_role("button", name="New thread").click()
    page.wait_for_selector(IDLE, timeout=30_000)


# In the page (its own clock, no Playwright round trip in the figure): the time of the
# Enter that submits, and of the first DOM change that puts the answer's first token in it.
_WATCH = """marker => {
  window.__submitted = null; window.__shown = null;
  if (!window.__keys) {
    window.__keys = true;
    document.addEventListener('keydown', e => {
      if (e.key === 'Enter' && window.__submitted === null) window.__submitted = performance.now();
    }, true);
  }
  if (window.__observer) window.__observer.disconnect();
  window.__observer = new MutationObserver(() => {
    if (window.__shown === null && document.body.textContent.includes(marker)) {
      window.__shown = performance.now();
    }
  });
  window.__observer.observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def _first_token(page: Any, url: str, backend: Any) -> dict[str, list[float]]:
    """Per question (ms): submit -> first token shown minus the backend's own time to first
    token (``extra``), split into submit -> the model request at the backend (``before``)
    and the backend's first token -> shown (``after``)."""
    from tierflow.testing import Reply

    _fresh(page, url)
    out: dict[str, list[float]] = {"extra": [], "before": [], "after": []}
    for i in range(TTFT_SAMPLES + 1):  # the first one warms the thread up: dropped
        marker = f"tokenmark{i:03d}"
        arrived: list[float] = []

        def respond(body: Any, marker: str = marker, arrived: list[float] = arrived) -> Any:
            arrived.append(time.time() * 1000)
            return Reply.text(f"{marker} is the first token of this answer", delay=BACKEND_TTFT_S)

        backend.enqueue(respond)
        page.evaluate(_WATCH, marker)
        page.get_by_test_id("stChatInputTextArea").fill(f"question {i}")
        page.keyboard.press("Enter")
        page.wait_for_function("window.__shown !== null", timeout=30_000)
        submitted, shown = page.evaluate(
            "[window.__submitted, window.__shown].map(t => performance.timeOrigin + t)"
        )
        page.wait_for_selector(IDLE, timeout=30_000)
        if i and arrived:
            first_token = arrived[0] + BACKEND_TTFT_S * 1000
            out["extra"].append(shown - submitted - BACKEND_TTFT_S * 1000)
            out["before"].append(arrived[0] - submitted)
            out["after"].append(shown - first_token)
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _memory(browser: Any, url: str, pid: int) -> dict[str, float]:
    """The Streamlit process's RSS with one session open, then with ``SESSIONS``."""
    pages = []
    for n in range(SESSIONS):
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        page.wait_for_selector(IDLE, timeout=60_000)
        page.get_by_test_id("stSidebar").get_by_role("button", name="A short thread").click()
        page.wait_for_selector(IDLE, timeout=60_000)
        pages.append(page)
        if n == 0:
            one = _rss_mb(pid)
    time.sleep(2)  # let the last sessions' reruns settle
    many = _rss_mb(pid)
    for page in pages:
        page.close()
    return {
        "rss_1_session_mb": round(one, 1),
        f"rss_{SESSIONS}_sessions_mb": round(many, 1),
        "per_extra_session_mb": round((many - one) / (SESSIONS - 1), 2),
    }


def _pct(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


def run() -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not on PATH (make sysdeps installs Debian's)")
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as state,
        _server(Path(state)) as (server_url, backend),
        _console(server_url) as (url, pid),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        _thread(server_url, backend, "A long thread", MESSAGES)
        _thread(server_url, backend, "A short thread", 2)
        ttft = _first_token(page, url, backend)
        times = _open_times(page, url, "A long thread", MESSAGES)
        short = _open_times(page, url, "A short thread", 2)
        page.close()
        memory = _memory(browser, url, pid)
        browser.close()
    extra = ttft["extra"]
    return {
        "first_token_extra_ms": {
            "p50": _pct(extra, 50),
            "p95": _pct(extra, 95),
            "max": round(max(extra), 1),
            "samples": len(extra),
            "submit_to_backend_request_p50": _pct(ttft["before"], 50),
            "backend_first_token_to_shown_p50": _pct(ttft["after"], 50),
            "backend_ttft_ms": BACKEND_TTFT_S * 1000,
            "goal_p95_ms": 300,
            "goal_met": _pct(extra, 95) <= 300,
            "note": "Enter in the chat input -> the first token in the page's DOM (in-page "
            "performance.now()), minus the scripted backend's delay before its first token",
        },
        "thread_messages": MESSAGES,
        "open_thread_ms": {
            "median": round(statistics.median(times), 1),
            "min": round(min(times), 1),
            "max": round(max(times), 1),
            "all": [round(t, 1) for t in times],
            "goal_ms": 1000,
            "goal_met": max(times) < 1000,
            "note": "click on the thread title -> its last answer shown and the script idle",
        },
        "open_2_message_thread_ms": {
            "median": round(statistics.median(short), 1),
            "max": round(max(short), 1),
        },
        "memory": {
            **memory,
            "note": "VmRSS of the `streamlit run` process, each session "
            "a Chromium page showing a 2-message thread",
        },
        # the machine is shared: 2 cores, other helpers' jobs running
        "load_average_1m": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "setting": "headless Chromium, console, server and scripted backend on one 2-core machine",
    }


def main() -> None:
    from tierflow.bench.record import record_results

    argparse.ArgumentParser(description=__doc__).parse_args()
    record_results("ui", run(), Path("bench/results"), command="python -m tierflow.bench.ui")


if __name__ == "__main__":
    main()
