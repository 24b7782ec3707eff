"""The ``web_search`` tool: the top web results as ``{title, url, snippet}``, from a swappable
backend.

Two backends implement :class:`SearchBackend`: :class:`DdgsBackend` (the ``ddgs`` package,
no key, no server) and :class:`SearxngBackend` (a SearxNG instance's JSON API).
``settings.tools.web_search.backend`` picks one.

Whatever the backend does, a search answers within ``settings.tools.web_search.timeout_s``:
the blocking call runs in a small shared thread pool and the tool stops waiting at the
deadline. ddgs's own ``timeout`` is per HTTP request, not per search, and its Rust client
cannot be interrupted from Python, so this is the only way to bound it. A call given up on
keeps its worker until its own client times out (each backend sets that near the deadline);
the pool has four workers for the whole process, so at most four abandoned calls linger, and
a call that finds them all busy waits for one only until its own deadline, then reports
"busy". A backend that cannot answer becomes ``ToolError(type="search_unavailable")``; no
results is a success with ``results: []``.

::

    tool = make_web_search_tool(load_settings())
    outcome = await tool.run({"query": "python asyncio timeout", "max_results": 3})
    # outcome.output == {"results": [{"title": ..., "url": ..., "snippet": ...}], "backend": "ddgs"}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Annotated, Any, ClassVar, Protocol
from urllib.parse import urldefrag, urlsplit

import httpx
from ddgs import DDGS
from ddgs.exceptions import DDGSException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierflow.settings import TierflowSettings, WebSearchToolSettings
from tierflow.tools.tool import Tool, ToolError, tool

__all__ = [
    "DdgsBackend",
    "SearchBackend",
    "SearchResult",
    "SearchUnavailable",
    "SearxngBackend",
    "make_web_search_tool",
]

_MAX_WORKERS = 4  # searches running at once, abandoned ones included: the bound on lingering
_TITLE_CHARS = 200
_SNIPPET_CHARS = 300
_ERROR_CHARS = 400
# ddgs raises this exact message when no engine failed and none found anything (a non-200
# answer counts as "nothing found" there); it is an empty result, not a failure.
_DDGS_NO_RESULTS = "No results found."
_DDGS_SPARE = 5

_POOL = ThreadPoolExecutor(max_workers=_MAX_WORKERS, thread_name_prefix="tierflow-web-search")


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """One hit as a backend reports it; the tool cleans and caps it before the model sees it."""

    title: str
    url: str
    snippet: str = ""


class SearchUnavailable(Exception):
    """The backend could not answer (unreachable, refused, timed out, malformed reply)."""


class SearchBackend(Protocol):
    """A web search engine. Implement this to plug another engine into the tool.

    ``search`` returns at least ``max_results`` hits when the engine has them (more is fine:
    the tool trims after cleaning) and raises :class:`SearchUnavailable` when it cannot
    answer. It should give up by itself about ``deadline_s`` after it starts, so an
    abandoned call frees its worker; the tool stops waiting at the deadline regardless.
    """

    @property
    def name(self) -> str:
        """Reported to the model as ``backend``."""
        ...

    def search(self, query: str, max_results: int, deadline_s: float) -> list[SearchResult]: ...


class DdgsBackend:
    """Search through ``ddgs`` (DuckDuckGo's HTML endpoint by default; no key, no server).

    Args:
        engines: ddgs's ``backend`` argument: one engine or a comma-separated list
            ("duckduckgo", "brave", "mojeek", ... or "auto"). The default is one engine, one
            request: "auto" walks many engines in batches, each batch waiting up to the
            per-request timeout, and was seen taking 12 s with timeout=3, longer than the
            default deadline. ddgs reports an engine that answers non-200 (DuckDuckGo's
            rate-limit page is an HTTP 202) like one without results, so that case reaches
            the model as an empty result list; several engines make it less likely.
        region: ddgs region code.
        request_timeout_s: ddgs's per-HTTP-request timeout; default: the deadline, rounded up.
    """

    name: ClassVar[str] = "ddgs"

    def __init__(
        self,
        *,
        engines: str = "duckduckgo",
        region: str = "us-en",
        request_timeout_s: int | None = None,
    ) -> None:
        self.engines = engines
        self.region = region
        self.request_timeout_s = request_timeout_s

    def search(self, query: str, max_results: int, deadline_s: float) -> list[SearchResult]:
        timeout = self.request_timeout_s or max(1, math.ceil(deadline_s))
        # A few spare hits: the tool drops duplicates and URL-less ones before trimming, and
        # ddgs cuts its list at max_results; with one engine this costs no extra request.
        wanted = max_results + _DDGS_SPARE
        try:
            hits = DDGS(timeout=timeout).text(
                query, region=self.region, max_results=wanted, backend=self.engines
            )
        except DDGSException as exc:
            if str(exc) == _DDGS_NO_RESULTS:
                return []
            raise SearchUnavailable(f"ddgs ({self.engines}): {exc}") from exc
        return [
            SearchResult(
                title=_as_text(hit.get("title")),
                url=_as_text(hit.get("href")),
                snippet=_as_text(hit.get("body")),
            )
            for hit in hits
        ]


class _SearxngAnswer(BaseModel):
    """The part of SearxNG's ``format=json`` reply we read; hits stay loose dicts so one odd
    engine result cannot void the others."""

    model_config = ConfigDict(extra="ignore")

    results: list[dict[str, Any]]
    unresponsive_engines: list[Any] = []  # [[engine, reason], ...]


class SearxngBackend:
    """Search through a SearxNG instance (``GET {base_url}/search?q=...&format=json``).

    The instance must list ``json`` in ``search.formats`` of its ``settings.yml``; otherwise
    it answers 403, reported as such.
    """

    name: ClassVar[str] = "searxng"

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.search_url = base_url.rstrip("/") + "/search"

    def search(self, query: str, max_results: int, deadline_s: float) -> list[SearchResult]:
        # httpx's timeout is per phase (connect, each read), so a trickling server could
        # exceed it; the tool's deadline covers that, this only frees the worker soon after.
        try:
            with httpx.Client(timeout=deadline_s, follow_redirects=True) as client:
                response = client.get(
                    self.search_url,
                    params={"q": query, "format": "json"},
                    headers={"Accept": "application/json"},
                )
        except httpx.HTTPError as exc:
            raise SearchUnavailable(
                f"SearxNG at {self.search_url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code == 403:
            raise SearchUnavailable(
                f"SearxNG at {self.search_url} refused format=json (HTTP 403): "
                "add json to search.formats in its settings.yml"
            )
        if not response.is_success:
            raise SearchUnavailable(
                f"SearxNG at {self.search_url} answered HTTP {response.status_code}"
            )
        try:
            answer = _SearxngAnswer.model_validate_json(response.content)
        except ValidationError as exc:
            raise SearchUnavailable(
                f"SearxNG sent a malformed answer: {exc.errors()[0]['msg']}"
            ) from exc
        if not answer.results and answer.unresponsive_engines:
            # Every engine failed: "nothing found" would mislead the model.
            failed = ", ".join(_engine_failure(e) for e in answer.unresponsive_engines)
            raise SearchUnavailable(f"SearxNG's engines did not answer: {failed}")
        return [
            SearchResult(
                title=_as_text(hit.get("title")),
                url=_as_text(hit.get("url")),
                snippet=_as_text(hit.get("content")),
            )
            for hit in answer.results
        ]


def make_web_search_tool(
    settings: TierflowSettings, *, backend: SearchBackend | None = None
) -> Tool:
    """The ``web_search`` tool, on the backend ``settings.tools.web_search`` names.

    Args:
        settings: Uses ``tools.web_search``: ``backend``, ``searxng_url``, ``timeout_s`` (the
            overall deadline of one search) and ``max_results`` (a cap on the argument).
        backend: Use this engine instead of the configured one (another engine, or a test's).
    """
    config = settings.tools.web_search
    deadline_s = config.timeout_s
    problem: str | None = None
    if backend is None:
        try:
            backend = _backend_for(config)
        except ValueError as exc:  # reported on each call: the model and `tierflow tool` see it
            problem = str(exc)
    chosen = backend

    def web_search(
        query: Annotated[str, Field(min_length=1, max_length=500)],
        max_results: Annotated[int, Field(ge=1, le=10)] = 5,
    ) -> dict[str, Any]:
        """Search the web; returns the top results as title, URL and a short snippet.

        Args:
            query: What to search for, as you would type it into a search engine.
            max_results: How many results to return (1-10).
        """
        if chosen is None:
            raise ToolError(problem or "no search backend", type="config_error")
        engine = chosen
        text = " ".join(query.split())
        if not text:
            raise ToolError("query is empty", type="invalid_arguments")
        limit = min(max_results, config.max_results)
        try:
            hits = _call_with_deadline(lambda: engine.search(text, limit, deadline_s), deadline_s)
        except SearchUnavailable as exc:
            raise ToolError(
                f"web search is unavailable: {_clip(str(exc), _ERROR_CHARS)}",
                type="search_unavailable",
            ) from None
        return {"results": _normalised(hits, limit), "backend": engine.name}

    # The tool's own timeout is only a backstop: the deadline above answers first, with a
    # reason. Not a decorator: a typed assignment keeps mypy strict even where it cannot
    # resolve tierflow.tools from the source tree (the package-dir mapping).
    built: Tool = tool(name="web_search", timeout_s=deadline_s + 2.0)(web_search)
    return built


def _backend_for(config: WebSearchToolSettings) -> SearchBackend:
    """The configured backend; ValueError says what to fix in the settings."""
    if config.backend == "ddgs":
        return DdgsBackend()
    if not config.searxng_url:
        raise ValueError(
            "tools.web_search.backend is searxng but tools.web_search.searxng_url is not set"
        )
    try:
        return SearxngBackend(config.searxng_url)
    except ValueError as exc:
        raise ValueError(f"tools.web_search.searxng_url: {exc}") from None


def _call_with_deadline(
    call: Callable[[], list[SearchResult]], deadline_s: float
) -> list[SearchResult]:
    future = _POOL.submit(call)
    done, _ = wait([future], timeout=deadline_s)
    if future in done:
        return future.result()
    if future.cancel():  # never started: every worker still holds an abandoned search
        raise SearchUnavailable(
            f"busy: {_MAX_WORKERS} earlier searches are still running; try again later"
        )
    raise SearchUnavailable(f"no answer within {deadline_s:g}s")


def _normalised(hits: Iterable[SearchResult], limit: int) -> list[dict[str, str]]:
    """Plain-text title and snippet, http(s) URLs only, one hit per URL, at most ``limit``."""
    seen: set[str] = set()
    results: list[dict[str, str]] = []
    for hit in hits:
        url = hit.url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            continue
        key = urldefrag(url).url  # the same page with another #anchor is the same result
        if key in seen:
            continue
        seen.add(key)
        title = _clip(_plain_text(hit.title), _TITLE_CHARS) or url
        results.append(
            {"title": title, "url": url, "snippet": _clip(_plain_text(hit.snippet), _SNIPPET_CHARS)}
        )
        if len(results) == limit:
            break
    return results


class _TextOf(HTMLParser):
    """Collects the text of an HTML fragment; the stdlib parser decodes entities and copes
    with broken markup, which a regex does not."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0  # inside <script> or <style>: code, not text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in self.CDATA_CONTENT_ELEMENTS

    def handle_endtag(self, tag: str) -> None:
        if tag in self.CDATA_CONTENT_ELEMENTS and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def _plain_text(fragment: str) -> str:
    if "<" in fragment or "&" in fragment:
        parser = _TextOf()
        parser.feed(fragment)
        parser.close()
        fragment = "".join(parser.parts)
    return " ".join(fragment.split())


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _engine_failure(entry: Any) -> str:
    if isinstance(entry, list | tuple) and len(entry) == 2:
        return f"{entry[0]} ({entry[1]})"
    return str(entry)
