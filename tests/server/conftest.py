"""The real server (uvicorn on 127.0.0.1, a free port) over scripted backends speaking HTTP
(``ScriptedServer`` as a ``vllm:`` backend with native tool calls), for ``langgraph-sdk``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from langgraph.graph import START, StateGraph
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tierflow import Agent, Runner, tool
from tierflow.agents.node import add_agent
from tierflow.graphs.context import BuildContext
from tierflow.server import create_app
from tierflow.settings import load_settings
from tierflow.state import GraphState
from tierflow.testing import Reply, ScriptedServer

#: The question every test asks.
QUESTION = {"messages": [{"role": "user", "content": "hello"}]}
REFUNDED: list[str] = []
#: What the ``hold`` tool waits for: a run that stays running until the test lets it go.
RELEASE = threading.Event()
HOLDING = threading.Event()


@tool(requires_approval=True)
def refund(order_id: str) -> str:
    """Refund an order.

    Args:
        order_id: The order.
    """
    REFUNDED.append(order_id)
    return f"refunded {order_id}"


@tool
async def hold(label: str) -> str:
    """Wait until released.

    Args:
        label: Anything.
    """
    HOLDING.set()
    released = await asyncio.to_thread(RELEASE.wait, 30)
    return f"released {label}" if released else "timed out"


CLERK = Agent(name="clerk", instructions="Refund what is asked.", tier="t", tools=[refund])
WAITER = Agent(name="waiter", instructions="Hold when asked.", tier="t", tools=[hold])


def _one_agent(agent: Agent):  # type: ignore[no-untyped-def]
    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        """A one-agent graph."""
        builder: StateGraph[GraphState] = StateGraph(GraphState)
        builder.add_edge(START, add_agent(builder, agent, ctx.tiers))
        return builder

    return factory


@dataclass
class Served:
    url: str
    backend: ScriptedServer
    state_dir: Path
    threads: list[str] = field(default_factory=list)
    database_url: str | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(
    state: Path,
    api_keys: frozenset[str] | None = None,
    database_url: str | None = None,
    backend: ScriptedServer | None = None,
    settings: dict[str, Any] | None = None,
    **server: Any,
) -> Iterator[Served]:
    """The app on uvicorn in a thread, over ``backend`` (default: a fresh ScriptedServer);
    ``server`` overrides the ``[server]`` settings, ``settings`` any other section;
    ``api_keys`` turn authentication on; ``database_url`` keeps the state in PostgreSQL."""
    with contextlib.ExitStack() as stack:
        if backend is None:
            backend = stack.enter_context(ScriptedServer())
        sections: dict[str, Any] = {
            "tiers": {"t": {"backends": ["vllm:scripted-model"]}},
            "backends": {"vllm": {"base_url": backend.base_url, "tool_calling": "native"}},
            "telemetry": {"enabled": False},
            "guardrails": {"graphs": {"clerk": {"input": ["size", "pii"]}}},
            "server": {"max_body_bytes": 65_536, "max_queue": 8, **server},
            "state": {"database_url": database_url},
        }
        settings_ = load_settings(False, state_dir=state, **{**sections, **(settings or {})})
        graphs = {"clerk": _one_agent(CLERK), "waiter": _one_agent(WAITER)}
        runner = Runner(settings_, graphs=graphs)
        port = free_port()
        uv = uvicorn.Server(
            uvicorn.Config(
                create_app(runner, api_keys=api_keys),
                host="127.0.0.1",
                port=port,
                log_level="warning",
            )
        )
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        try:
            for _ in range(500):
                if uv.started:
                    break
                thread.join(0.01)  # bounded wait for uvicorn's own start flag
            assert uv.started, "uvicorn did not start"
            yield Served(f"http://127.0.0.1:{port}", backend, state, database_url=database_url)
        finally:
            RELEASE.set()
            uv.should_exit = True
            thread.join(10)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The server of a test module, once with its state in SQLite files and once in a
    fresh PostgreSQL database (the session's ``postgres`` cluster)."""
    url = (
        request.getfixturevalue("postgres").new_database("server")
        if request.param == "postgres"
        else None
    )
    with serving(tmp_path_factory.mktemp("server-state"), database_url=url) as srv:
        yield srv


def client(served: Served) -> LangGraphClient:
    return get_client(url=served.url, api_key=None)


async def new_thread(c: LangGraphClient, **metadata: Any) -> str:
    thread = await c.threads.create(metadata=metadata or None)
    return str(thread["thread_id"])


async def until(c: LangGraphClient, thread_id: str, run_id: str, *statuses: str) -> str:
    """Poll the run's status (bounded) until it is one of ``statuses``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = str((await c.runs.get(thread_id, run_id))["status"])
        if status in statuses:
            return status
    raise AssertionError(f"run {run_id} never reached {statuses}")


async def hold_run(c: LangGraphClient, served: Served, thread_id: str) -> dict[str, Any]:
    """A run on ``waiter`` that stays running (in its ``hold`` tool) until RELEASE."""
    HOLDING.clear()
    RELEASE.clear()
    served.backend.enqueue(Reply.tool_calls([("hold", {"label": "x"})]))
    run = await c.runs.create(thread_id, "waiter", input=QUESTION)
    assert HOLDING.wait(15), "the run never reached its tool"
    return dict(run)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


async def until_true(check: Any, what: str, limit_s: float = 40) -> Any:
    """Poll ``check()`` (bounded) until it returns something true; return that."""
    deadline = time.monotonic() + limit_s
    while not (found := check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)
    return found


def start_cli(
    args: list[str], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """``tierflow ARGS`` in a subprocess, its output in ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "tierflow", *args],
        env=env,
        cwd=cwd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
