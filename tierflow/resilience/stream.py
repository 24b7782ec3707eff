"""Streams that break mid-answer (private; import from :mod:`tierflow.resilience`).

When a run streams tokens (LangGraph ``stream_mode="messages"``), a chat model's
``ainvoke`` streams under the hood and every token reaches the listener as it arrives.
If the stream then breaks, the tier retries or falls back, and the new answer streams
from its start: the listener must be told to drop what it has shown for this call, or
the text would silently appear twice. :class:`StreamWatch` counts (and keeps) the text
each request streamed, so the tier can announce a ``stream_restarted`` event before the
next request and, when no backend is left, end with the text received, marked partial.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, merge_configs
from langgraph.config import get_stream_writer

#: Appended to an answer that ends with what a broken stream delivered.
PARTIAL_MARK = "\n\n[partial: the answer was cut off when the stream from {backend} broke]"


class StreamWatch(BaseCallbackHandler):
    """Collects the tokens the current request streamed (a LangChain callback)."""

    run_inline = True  # called in order, on the event loop, like LangGraph's own handler

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.backend: str | None = None
        #: (backend, text) of the last stream that broke: what the listener holds now
        self.broken: tuple[str, str] | None = None
        self._restart: tuple[str, int, str] | None = None

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        if isinstance(token, str):  # content blocks (lists) carry no plain text here
            self.parts.append(token)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def config(self, extra: RunnableConfig | None = None) -> RunnableConfig:
        """The current run's config plus this watcher (keeps LangGraph's callbacks)."""
        return merge_configs(ensure_config(extra), {"callbacks": [self]})

    def begin(self, backend: str, tier: str) -> None:
        """Before a request: announce a restart if the previous one had streamed text."""
        if self._restart is not None:
            failed, chars, reason = self._restart
            self._restart = None
            _emit(
                "stream_restarted",
                tier=tier,
                from_backend=failed,
                to_backend=backend,
                discarded_chars=chars,
                reason=reason,
            )
        self.backend = backend
        self.parts = []

    def broke(self, reason: str, *, partial: bool = True) -> None:
        """After a failed request: remember what it streamed, if anything. ``partial``:
        the text may end the call if no backend is left (not so for a whole answer that
        was merely unusable)."""
        text = self.text
        if not text or self.backend is None:
            return
        self._restart = (self.backend, len(text), reason)
        # After the restart the listener shows this text: only it may end the call.
        self.broken = (self.backend, text) if partial else None


def _emit(event: str, **data: Any) -> None:
    try:
        writer = get_stream_writer()
    except RuntimeError:  # not inside a LangGraph run: nobody listens
        return
    config = ensure_config()
    node = (config.get("metadata") or {}).get("langgraph_node")
    writer({"event": event, "node": node, **data})
