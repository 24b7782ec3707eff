"""web_search against real HTTP servers on 127.0.0.1 serving saved result pages.

ddgs talks HTTP through a Rust client (primp) that Python-level mocks cannot intercept, so
the DuckDuckGo engine's ``search_url`` (a class attribute of ddgs's engine) is pointed at a
local server that answers with a page in the shape html.duckduckgo.com sends. SearxNG is a
local server answering its JSON API. Only the engines' addresses are changed, never our code.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from ddgs.engines.duckduckgo import Duckduckgo

from tierflow.settings import TierflowSettings, load_settings
from tierflow.tools.tool import ToolOutcome
from tierflow.tools.web_search import (
    _MAX_WORKERS,
    DdgsBackend,
    SearchResult,
    make_web_search_tool,
)

FIXTURES = Path(__file__).parent / "fixtures" / "web_search"
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

# What both backends make of the saved pages: tags and entities gone, whitespace collapsed,
# the #anchor duplicate, the URL-less and the non-web results dropped, long snippets capped.
STACKOVERFLOW = {
    "title": "How to set a timeout on an asyncio task?",
    "url": "https://stackoverflow.com/questions/28609534/python-asyncio-force-timeout",
    "snippet": (
        "I have a coroutine that talks to a slow server and I want to give up after five "
        "seconds. In older versions of Python the usual answer was asyncio.wait_for(coro, "
        "timeout=5), which cancels the inner task when the time is up and raises TimeoutError "
        "in the caller. Since 3.11 the recommended way is the…"
    ),
}
TRIO = {
    "title": "Trio: a friendly library for async concurrency",
    "url": "https://trio.readthedocs.io/en/stable/",
    "snippet": "Trio's cancel scopes predate asyncio's task groups.",
}


@dataclass
class Reply:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    stall: bool = False  # hold the request until the test ends, never answer


class LocalServer:
    """A real HTTP server on 127.0.0.1 answering every request with one :class:`Reply`."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[tuple[str, str, bytes]] = []  # method, path with query, body
        self.received = threading.Event()
        self.done = threading.Event()  # a request was handled to its end (a stall: released)
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append((self.command, self.path, self.rfile.read(length)))
                server.received.set()
                try:
                    if server.reply.stall:
                        server.release.wait(timeout=60)  # bounded: a broken test cannot hang
                        return
                    self.send_response(server.reply.status)
                    self.send_header("Content-Type", server.reply.content_type)
                    self.send_header("Content-Length", str(len(server.reply.body)))
                    self.end_headers()
                    self.wfile.write(server.reply.body)
                finally:
                    server.done.set()

            do_GET = answer
            do_POST = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # primp and httpx both honour proxy variables, even for 127.0.0.1 (checked for primp).
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], LocalServer]]:
    servers: list[LocalServer] = []

    def start(reply: Reply) -> LocalServer:
        servers.append(LocalServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def duckduckgo(
    serve: Callable[[Reply], LocalServer], monkeypatch: pytest.MonkeyPatch
) -> Callable[[Reply], LocalServer]:
    """Point ddgs's DuckDuckGo HTML engine at a local server."""

    def start(reply: Reply) -> LocalServer:
        server = serve(reply)
        monkeypatch.setattr(Duckduckgo, "search_url", f"{server.url}/html/")
        return server

    return start


def _settings(tmp_path: Path, **web_search: Any) -> TierflowSettings:
    return load_settings(state_dir=tmp_path / "state", tools={"web_search": web_search})


def _page(name: str, content_type: str = "text/html; charset=UTF-8") -> Reply:
    return Reply(body=(FIXTURES / name).read_bytes(), content_type=content_type)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _error(outcome: ToolOutcome) -> tuple[str, str]:
    assert not outcome.ok, outcome
    assert outcome.error is not None
    return outcome.error.type, outcome.error.message


# --- ddgs ---------------------------------------------------------------------------------


async def test_ddgs_result_page_is_normalised(
    tmp_path: Path, duckduckgo: Callable[[Reply], LocalServer]
) -> None:
    server = duckduckgo(_page("ddg_html_results.html"))
    tool = make_web_search_tool(_settings(tmp_path))

    outcome = await tool.run({"query": "  python   asyncio timeout "})

    assert outcome.ok, outcome
    # ddgs drops the ad and ranks Wikipedia first, then title+snippet matches.
    assert outcome.output == {
        "results": [
            {
                "title": "Async/await - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Async/await",
                "snippet": "In computer programming, the async/await pattern is a syntactic "
                "feature of many programming languages.",
            },
            {
                "title": "Coroutines and Tasks — Python 3.13.1 documentation",
                "url": "https://docs.python.org/3/library/asyncio-task.html",
                "snippet": "Use asyncio.timeout() to limit how long a coroutine may run — on "
                "expiry it cancels the task & raises TimeoutError.",
            },
            STACKOVERFLOW,
            TRIO,
        ],
        "backend": "ddgs",
    }
    [(method, path, body)] = server.requests
    assert (method, path) == ("POST", "/html/")
    assert parse_qs(body.decode())["q"] == ["python asyncio timeout"]


async def test_ddgs_max_results_trims(
    tmp_path: Path, duckduckgo: Callable[[Reply], LocalServer]
) -> None:
    duckduckgo(_page("ddg_html_results.html"))
    outcome = await make_web_search_tool(_settings(tmp_path)).run(
        {"query": "python asyncio timeout", "max_results": 2}
    )
    assert outcome.ok, outcome
    assert [r["url"] for r in outcome.output["results"]] == [
        "https://en.wikipedia.org/wiki/Async/await",
        "https://docs.python.org/3/library/asyncio-task.html",
    ]


async def test_ddgs_page_without_results_is_an_empty_success(
    tmp_path: Path, duckduckgo: Callable[[Reply], LocalServer]
) -> None:
    server = duckduckgo(_page("ddg_html_no_results.html"))
    outcome = await make_web_search_tool(_settings(tmp_path)).run({"query": "xqzvkjw plorbt"})
    assert outcome.ok, outcome
    assert outcome.output == {"results": [], "backend": "ddgs"}
    assert len(server.requests) == 1


async def test_ddgs_refused_connection_is_search_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Duckduckgo, "search_url", f"http://127.0.0.1:{_closed_port()}/html/")
    outcome = await make_web_search_tool(_settings(tmp_path)).run({"query": "python"})
    kind, message = _error(outcome)
    assert kind == "search_unavailable"
    assert "ddgs (duckduckgo)" in message  # ddgs's own error: the refusal, not our deadline
    assert "no answer within" not in message


async def test_ddgs_stall_is_cut_at_the_deadline_not_at_ddgs_timeout(
    tmp_path: Path, duckduckgo: Callable[[Reply], LocalServer]
) -> None:
    server = duckduckgo(Reply(stall=True))
    # ddgs would wait 30 s for this request; the tool's 0.5 s deadline must win.
    backend = DdgsBackend(engines="duckduckgo", request_timeout_s=30)
    tool = make_web_search_tool(_settings(tmp_path, timeout_s=0.5), backend=backend)

    outcome = await tool.run({"query": "python"})

    assert _error(outcome) == (
        "search_unavailable",
        "web search is unavailable: no answer within 0.5s",
    )
    # it really was waiting on the server, and gave up while the server still held the
    # request: the tool's deadline answered, not the end of the request
    assert server.received.is_set() and not server.done.is_set()


async def test_ddgs_without_network_fails_fast(tmp_path: Path) -> None:
    """The real path on a machine without internet: ddgs's own engines, DNS failing."""
    try:
        socket.getaddrinfo("html.duckduckgo.com", 443)
    except OSError:
        pass  # no DNS: nothing below can reach the internet
    else:
        pytest.skip("DNS resolves here: this test would reach the real DuckDuckGo")
    settings = _settings(tmp_path)  # defaults: ddgs, 8 s deadline

    outcome = await make_web_search_tool(settings).run({"query": "python asyncio timeout"})

    kind, message = _error(outcome)
    assert kind == "search_unavailable"
    assert "DNS" in message  # the resolver's failure, not the tool's deadline running out
    assert "no answer within" not in message


# --- SearxNG ------------------------------------------------------------------------------


async def test_searxng_results_are_normalised(
    tmp_path: Path, serve: Callable[[Reply], LocalServer]
) -> None:
    server = serve(_page("searxng_results.json", "application/json"))
    # A base URL with a path prefix and a trailing slash, as behind a reverse proxy.
    settings = _settings(tmp_path, backend="searxng", searxng_url=f"{server.url}/searx/")

    outcome = await make_web_search_tool(settings).run(
        {"query": "python asyncio timeout", "max_results": 10}
    )

    assert outcome.ok, outcome
    assert outcome.output == {
        "results": [
            {
                "title": "Coroutines and Tasks — Python 3.13.1 documentation",
                "url": "https://docs.python.org/3/library/asyncio-task.html",
                "snippet": "Use asyncio.timeout() to limit how long a coroutine may run & "
                "cancel it on expiry.",
            },
            STACKOVERFLOW,
            {  # no title: the URL stands in
                "title": "https://peps.python.org/pep-0492/",
                "url": "https://peps.python.org/pep-0492/",
                "snippet": "",
            },
            TRIO,
        ],
        "backend": "searxng",
    }
    [(method, path, _)] = server.requests
    parts = urlsplit(path)
    assert (method, parts.path) == ("GET", "/searx/search")
    assert parse_qs(parts.query) == {"q": ["python asyncio timeout"], "format": ["json"]}


async def test_settings_max_results_caps_the_argument(
    tmp_path: Path, serve: Callable[[Reply], LocalServer]
) -> None:
    server = serve(_page("searxng_results.json", "application/json"))
    settings = _settings(tmp_path, backend="searxng", searxng_url=server.url, max_results=2)
    outcome = await make_web_search_tool(settings).run({"query": "asyncio", "max_results": 10})
    assert outcome.ok, outcome
    assert [r["url"] for r in outcome.output["results"]] == [
        "https://docs.python.org/3/library/asyncio-task.html",
        STACKOVERFLOW["url"],
    ]


async def test_searxng_empty_result_list_is_an_empty_success(
    tmp_path: Path, serve: Callable[[Reply], LocalServer]
) -> None:
    server = serve(_page("searxng_empty.json", "application/json"))
    settings = _settings(tmp_path, backend="searxng", searxng_url=server.url)
    outcome = await make_web_search_tool(settings).run({"query": "xqzvkjw plorbt"})
    assert outcome.ok, outcome
    assert outcome.output == {"results": [], "backend": "searxng"}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(status=500, body=b"Internal Server Error"), "answered HTTP 500"),
        (Reply(status=403, body=b"Forbidden"), "refused format=json (HTTP 403)"),
        (Reply(body=b'{"query": "python", "results": [{"url": "https://a.example"'), "malformed"),
        (Reply(body=b'{"query": "python", "results": "none"}'), "malformed"),
        (Reply(body=b"<html>SearxNG</html>", content_type="text/html"), "malformed"),
        (
            _page("searxng_engines_down.json", "application/json"),
            "engines did not answer: duckduckgo (timeout), brave (Suspended: too many requests)",
        ),
    ],
    ids=["http-500", "http-403", "truncated-json", "wrong-shape", "html", "engines-down"],
)
async def test_searxng_failures_are_search_unavailable(
    tmp_path: Path, serve: Callable[[Reply], LocalServer], reply: Reply, expected: str
) -> None:
    server = serve(reply)
    settings = _settings(tmp_path, backend="searxng", searxng_url=server.url)
    outcome = await make_web_search_tool(settings).run({"query": "python"})
    kind, message = _error(outcome)
    assert kind == "search_unavailable"
    assert expected in message
    assert len(server.requests) == 1


async def test_searxng_unreachable_is_search_unavailable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    settings = _settings(tmp_path, backend="searxng", searxng_url=url)
    outcome = await make_web_search_tool(settings).run({"query": "python"})
    kind, message = _error(outcome)
    assert kind == "search_unavailable"
    assert "unreachable: ConnectError" in message


async def test_searxng_stall_is_cut_at_the_deadline(
    tmp_path: Path, serve: Callable[[Reply], LocalServer]
) -> None:
    server = serve(Reply(stall=True))
    settings = _settings(tmp_path, backend="searxng", searxng_url=server.url, timeout_s=0.5)

    outcome = await make_web_search_tool(settings).run({"query": "python"})

    kind, message = _error(outcome)
    assert kind == "search_unavailable"
    # Either our deadline or httpx's read timeout (set to the same budget) fires first.
    assert "no answer within 0.5s" in message or "ReadTimeout" in message
    assert server.received.is_set() and not server.done.is_set()  # still held there


@pytest.mark.parametrize(
    ("searxng_url", "expected"),
    [(None, "searxng_url is not set"), ("searxng.local:8080", "not an http(s) URL")],
)
async def test_searxng_without_a_usable_url_is_a_config_error(
    tmp_path: Path, searxng_url: str | None, expected: str
) -> None:
    settings = _settings(tmp_path, backend="searxng", searxng_url=searxng_url)
    outcome = await make_web_search_tool(settings).run({"query": "python"})
    kind, message = _error(outcome)
    assert kind == "config_error"
    assert expected in message


# --- the tool itself ----------------------------------------------------------------------


def test_schema_bounds_the_arguments(tmp_path: Path) -> None:
    tool = make_web_search_tool(_settings(tmp_path))
    assert tool.name == "web_search"
    props = tool.parameters["properties"]
    assert set(props) == {"query", "max_results"}
    assert (props["max_results"]["minimum"], props["max_results"]["maximum"]) == (1, 10)
    assert props["query"]["minLength"] == 1


@pytest.mark.parametrize("args", [{"query": "   "}, {"query": "python", "max_results": 11}])
async def test_bad_arguments_are_rejected_before_searching(
    tmp_path: Path, duckduckgo: Callable[[Reply], LocalServer], args: dict[str, Any]
) -> None:
    server = duckduckgo(_page("ddg_html_results.html"))
    outcome = await make_web_search_tool(_settings(tmp_path)).run(args)
    assert _error(outcome)[0] == "invalid_arguments"
    assert server.requests == []


class _BlockedBackend:
    """A backend whose searches hang until the test releases them, like a wedged client."""

    name = "blocked"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.finished = 0
        self._lock = threading.Lock()

    def search(self, query: str, max_results: int, deadline_s: float) -> list[SearchResult]:
        with self._lock:
            self.started += 1
        self.release.wait(timeout=60)  # bounded: a broken test cannot hang
        with self._lock:
            self.finished += 1
        return []


async def test_abandoned_searches_cannot_pile_up(tmp_path: Path) -> None:
    backend = _BlockedBackend()
    tool = make_web_search_tool(_settings(tmp_path, timeout_s=0.3), backend=backend)
    try:
        # Fill every worker with a search the tool gives up on.
        first = await asyncio.gather(*(tool.run({"query": "q"}) for _ in range(_MAX_WORKERS)))
        assert {_error(o) for o in first} == {
            ("search_unavailable", "web search is unavailable: no answer within 0.3s")
        }
        assert (backend.started, backend.finished) == (_MAX_WORKERS, 0)

        # One more waits for a worker until its own deadline, then gives up without starting.
        extra = await tool.run({"query": "q"})
        kind, message = _error(extra)
        assert kind == "search_unavailable"
        assert f"busy: {_MAX_WORKERS} earlier searches are still running" in message
        # it gave up while every earlier search was still blocked: it did not wait for one
        assert backend.started == _MAX_WORKERS and backend.finished == 0
        workers = [t for t in threading.enumerate() if t.name.startswith("tierflow-web-search")]
        assert len(workers) <= _MAX_WORKERS
    finally:
        backend.release.set()
