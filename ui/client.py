"""The console's one door to the server: ``langgraph-sdk`` for the Agent Protocol, plain
httpx for ``/console`` (tierflow's extension routes). Every failure becomes one of two
exceptions with a one-line message, so no page ever shows a traceback."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.errors import APIStatusError
from langgraph_sdk.schema import StreamMode

SERVER_ENV = "TIERFLOW_SERVER_URL"
KEY_ENV = "TIERFLOW_API_KEY"
STREAM_MODES: list[StreamMode] = ["messages", "updates"]
#: The end of a run's event stream (put on the queue by the reader thread).
END = object()


class ServerDown(Exception):
    """The server does not answer (down, restarting, unreachable)."""


class RequestFailed(Exception):
    """The server answered with an error; the message is its one-line reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return str(detail) if isinstance(detail, str) else str(body)[:200]


@contextlib.contextmanager
def _calls(url: str) -> Iterator[None]:
    try:
        yield
    except APIStatusError as exc:
        raise RequestFailed(_reason(exc.response), exc.response.status_code) from None
    except httpx.HTTPStatusError as exc:
        raise RequestFailed(_reason(exc.response), exc.response.status_code) from None
    except httpx.TransportError:  # refused, reset, timed out (the SDK's errors are these)
        raise ServerDown(f"the tierflow server at {url} does not answer") from None


class Console:
    """A client of one ``tierflow serve`` with one API key (None: no authentication)."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key or None
        headers = {"x-api-key": self.api_key} if self.api_key else {}
        # One retry on a refused connection, not the SDK's default five with backoff
        # (about 8 s): a console says "server down" at once and offers Retry.
        self.http = httpx.Client(
            base_url=self.url,
            headers=headers,
            transport=httpx.HTTPTransport(retries=1),
            timeout=httpx.Timeout(connect=3.0, read=300.0, write=30.0, pool=5.0),
        )
        self.sdk = SyncLangGraphClient(self.http)

    @classmethod
    def from_env(cls, api_key: str | None = None) -> Console:
        url = os.environ.get(SERVER_ENV) or "http://127.0.0.1:8123"
        return cls(url, api_key or os.environ.get(KEY_ENV))

    def _get(self, path: str) -> Any:
        with _calls(self.url):
            response = self.http.get(path)
            response.raise_for_status()
            return response.json()

    def _post(self, path: str, **kwargs: Any) -> Any:
        with _calls(self.url):
            response = self.http.post(path, **kwargs)
            response.raise_for_status()
            return response.json()

    # threads

    def threads(self, search: str = "") -> list[dict[str, Any]]:
        """The caller's threads, newest first, each with its ``title``."""
        with _calls(self.url):
            found = self.sdk.threads.search(limit=200)
        shown: list[dict[str, Any]] = [{**t, "title": title(dict(t))} for t in found]
        shown.sort(key=lambda t: str(t["updated_at"]), reverse=True)
        needle = search.strip().lower()
        return [t for t in shown if needle in str(t["title"]).lower()] if needle else shown

    def thread(self, thread_id: str) -> dict[str, Any]:
        with _calls(self.url):
            return dict(self.sdk.threads.get(thread_id))

    def create_thread(self, graph: str, question: str) -> str:
        with _calls(self.url):
            made = self.sdk.threads.create(metadata={"title": question[:80], "graph": graph})
        return str(made["thread_id"])

    def rename(self, thread_id: str, new_title: str) -> None:
        with _calls(self.url):
            self.sdk.threads.update(thread_id, metadata={"title": new_title})

    def delete(self, thread_id: str) -> None:
        with _calls(self.url):
            self.sdk.threads.delete(thread_id)

    def graphs(self) -> list[str]:
        with _calls(self.url):
            return [str(a["graph_id"]) for a in self.sdk.assistants.search(limit=100)]

    # runs

    def runs(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's runs, oldest first (each with ``kwargs.record`` once finished)."""
        with _calls(self.url):
            found = self.sdk.runs.list(thread_id, limit=1000)
        return sorted((dict(r) for r in found), key=lambda r: str(r["created_at"]))

    def run(self, thread_id: str, run_id: str) -> dict[str, Any]:
        with _calls(self.url):
            return dict(self.sdk.runs.get(thread_id, run_id))

    def cancel(self, thread_id: str, run_id: str) -> bool:
        """Cancel the run on the server; False if it had ended already."""
        try:
            with _calls(self.url):
                self.sdk.runs.cancel(thread_id, run_id, wait=True)
        except RequestFailed as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def stream(
        self, thread_id: str, graph: str, *, question: str | None = None, resume: Any = None
    ) -> queue.Queue[Any]:
        """Start a run and read its events on a thread: the queue gets each
        ``(event, data)``, then an exception if the stream failed, then :data:`END`.

        A reader thread, so the page stays responsive (and its Stop button works) while the
        server is quiet, e.g. waiting on a slow model."""
        events: queue.Queue[Any] = queue.Queue()
        body: dict[str, Any] = (
            {"input": {"messages": [{"role": "user", "content": question}]}}
            if question is not None
            else {"command": {"resume": resume}}
        )

        def read() -> None:
            try:
                with _calls(self.url):
                    parts = self.sdk.runs.stream(thread_id, graph, stream_mode=STREAM_MODES, **body)
                    for part in parts:
                        events.put((part.event, part.data))
            except (ServerDown, RequestFailed) as exc:
                events.put(exc)
            finally:
                events.put(END)

        threading.Thread(target=read, daemon=True, name="tierflow-ui-stream").start()
        return events

    # /console

    def info(self) -> dict[str, Any]:
        return dict(self._get("/console/info"))

    def feedback(self, thread_id: str, run_id: str, score: str, comment: str | None) -> Any:
        body = {"score": score, "comment": comment or None}
        return self._post(f"/console/threads/{thread_id}/runs/{run_id}/feedback", json=body)

    def backends(self) -> dict[str, Any]:
        return dict(self._get("/console/backends"))

    def guard(self, text: str, stage: str) -> dict[str, Any]:
        return dict(self._post("/console/guard", json={"text": text, "stage": stage}))

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        return dict(self._post("/console/documents", params={"name": name}, content=data))


def title(thread: dict[str, Any]) -> str:
    """A thread's title: the one it was given, else its first question."""
    meta = thread.get("metadata") or {}
    if meta.get("title"):
        return str(meta["title"])
    for m in (thread.get("values") or {}).get("messages") or []:
        if m.get("type") == "human":
            return str(m.get("content"))[:80]
    return "New thread"
