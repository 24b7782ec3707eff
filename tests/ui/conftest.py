"""One real ``tierflow serve`` app (uvicorn on 127.0.0.1, scripted backends) and one
Streamlit console (``streamlit run ui/app.py``, a real subprocess) per test module, and
a headless Chromium (Debian's, via Playwright) to drive it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from langgraph.graph import START, StateGraph

from tests.server.conftest import CLERK, _one_agent, free_port
from tierflow import Agent, Runner
from tierflow.agents.node import add_agent
from tierflow.graphs.context import BuildContext
from tierflow.server import create_app
from tierflow.settings import load_settings
from tierflow.state import GraphState
from tierflow.testing import ScriptedServer

CHAT = Agent(name="chat", instructions="Answer.", tier="t")
UI_APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


def librarian(ctx: BuildContext) -> StateGraph[GraphState]:
    """One agent with the ``retrieve`` tool (over ``tools.retrieval.docs_dir``)."""
    agent = Agent(name="librarian", instructions="Cite.", tier="t", tools=ctx.tools("retrieve"))
    builder: StateGraph[GraphState] = StateGraph(GraphState)
    builder.add_edge(START, add_agent(builder, agent, ctx.tiers))
    return builder


@dataclass
class UiServer:
    """The API server, which a test may stop and start again on the same port."""

    state: Path
    backend: ScriptedServer
    port: int
    api_keys: frozenset[str] | None
    telemetry: bool = False
    _uv: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        settings = load_settings(
            False,
            state_dir=self.state,
            tiers={"t": {"backends": ["vllm:scripted-model"]}},
            backends={
                "vllm": {"base_url": self.backend.base_url, "tool_calling": "native"},
                # the default tiers' `local` answers here too: no embedded model starts
                "local": {"base_url": self.backend.base_url},
            },
            telemetry={"enabled": self.telemetry},
            guardrails={"graphs": {"clerk": {"input": ["size", "pii"]}}},
            tools={"retrieval": {"docs_dir": str(self.state / "docs")}},
        )
        graphs = {"chat": _one_agent(CHAT), "clerk": _one_agent(CLERK), "librarian": librarian}
        runner = Runner(settings, graphs=graphs)
        app = create_app(runner, api_keys=self.api_keys)
        self._uv = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                timeout_graceful_shutdown=1,  # open streams of the console end at once
            )
        )
        self._thread = threading.Thread(target=self._uv.run, daemon=True)
        self._thread.start()
        for _ in range(1000):
            if self._uv.started:
                return
            self._thread.join(0.01)  # bounded wait for uvicorn's own start flag
        raise AssertionError("uvicorn did not start")

    def stop(self) -> None:
        if self._uv is not None and self._thread is not None:
            self._uv.should_exit = True
            self._thread.join(10)
            self._uv = None


@contextlib.contextmanager
def ui_server(
    state: Path, api_keys: frozenset[str] | None = None, telemetry: bool = False
) -> Iterator[UiServer]:
    with ScriptedServer() as backend:
        srv = UiServer(state, backend, free_port(), api_keys, telemetry)
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


@contextlib.contextmanager
def streamlit_console(server_url: str, api_key: str | None = None) -> Iterator[str]:
    """``streamlit run ui/app.py`` on a free loopback port; its URL once it answers."""
    port = free_port()
    env = {**os.environ, "TIERFLOW_SERVER_URL": server_url}
    env.pop("TIERFLOW_API_KEY", None)
    if api_key:
        env["TIERFLOW_API_KEY"] = api_key
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(UI_APP),
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"streamlit exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)  # polling a port that is not open yet
        else:
            raise AssertionError("streamlit did not answer")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="package")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """One keyless server for the AppTest and browser modules (each start costs seconds)."""
    with ui_server(tmp_path_factory.mktemp("ui-state")) as srv:
        yield srv


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Debian's chromium is not on PATH: the console's browser tests need it "
            "(`make sysdeps` installs it as root: apt-get install chromium)"
        )
    return path


Screenshot = Callable[[Any, str], Path]


@pytest.fixture(scope="session")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Screenshot:
    """``screenshot(page, name)`` saves the page as ``name.png`` where the browser tests keep
    the main views: ``$TIERFLOW_SCREENSHOTS`` (the README's pictures:
    ``TIERFLOW_SCREENSHOTS=docs/images``, relative to where pytest starts), else a temporary
    folder, so a default run never rewrites tracked files. (Read here, once per session:
    each test runs in its own folder with ``TIERFLOW_*`` scrubbed.)"""
    chosen = os.environ.get("TIERFLOW_SCREENSHOTS")
    folder = Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def save(page: Any, name: str) -> Path:
        if chosen:  # the README's pictures: let expanders open and data grids draw first
            page.wait_for_timeout(1000)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    return save


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
