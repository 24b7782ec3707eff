"""The scripts a ScriptedServer replays: replies, faults, and what it recorded (private).

Split from scripted_server.py only to keep each module short; import these names from
`tierflow.testing.scripted_server`, which re-exports them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

_CUT_TEXT = "this answer is cut off before it ends"


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A successful chat completion to replay, streamed or not as the request asks.

    `input_tokens`/`output_tokens` of None are estimated (~4 characters a token) so
    usage is always present and non-zero, as with the real APIs. `model` of None
    echoes the request's model. `ids` pins tool-call ids; otherwise ids are drawn in
    the flavor's real shape.
    """

    content: str | None = None
    calls: tuple[tuple[str, str], ...] = ()
    ids: tuple[str, ...] | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    delay: float = 0.0
    #: Hold the reply until this event is set (or the server stops): a test decides
    #: when a model call ends instead of guessing a delay.
    until: threading.Event | None = field(default=None, compare=False, repr=False)

    @classmethod
    def text(
        cls,
        content: str,
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        delay: float = 0.0,
        until: threading.Event | None = None,
    ) -> Reply:
        """A plain assistant message (sent once ``until`` is set, if given)."""
        return cls(
            content=content,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            delay=delay,
            until=until,
        )

    @classmethod
    def tool_calls(
        cls,
        calls: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        ids: Sequence[str] | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        delay: float = 0.0,
    ) -> Reply:
        """One or several tool calls as `(name, arguments)`; arguments become JSON text."""
        if ids is not None and len(ids) != len(calls):
            raise ValueError(f"{len(ids)} ids for {len(calls)} tool calls")
        return cls(
            calls=tuple((name, json.dumps(dict(args))) for name, args in calls),
            ids=tuple(ids) if ids is not None else None,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            delay=delay,
        )

    @classmethod
    def json(
        cls,
        obj: Any,
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        delay: float = 0.0,
    ) -> Reply:
        """Content that is `json.dumps(obj)`: the answer to a JSON-mode/structured call."""
        return cls.text(
            json.dumps(obj),
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            delay=delay,
        )


FaultKind = Literal[
    "status",
    "stall",
    "drop",
    "malformed",
    "empty_choices",
    "truncated_stream",
    "invalid_tool_json",
    "reset",
    "unfinished_stream",
]


@dataclass(frozen=True, kw_only=True)
class Fault:
    """A failure to inject into one chat-completions exchange.

    Build with the classmethods; the fields only matter for their own kind.
    """

    kind: FaultKind
    status_code: int = 500
    body: Mapping[str, Any] | str | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    after_chunks: int = 0
    text: str = _CUT_TEXT
    tool_name: str = "get_weather"

    @classmethod
    def status(
        cls,
        code: int,
        *,
        body: Mapping[str, Any] | str | None = None,
        retry_after: float | None = None,
    ) -> Fault:
        """An HTTP error; `retry_after` (seconds) becomes a Retry-After header."""
        return cls(kind="status", status_code=code, body=body, retry_after=retry_after)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Read the request, then send nothing; close after `seconds` or on stop()."""
        return cls(kind="stall", seconds=seconds)

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the socket without any response."""
        return cls(kind="drop")

    @classmethod
    def malformed(cls) -> Fault:
        """200 with Content-Type application/json and a body that is not JSON."""
        return cls(kind="malformed")

    @classmethod
    def empty_choices(cls) -> Fault:
        """200 with `"choices": []` (streamed: one chunk with no choices, then [DONE])."""
        return cls(kind="empty_choices")

    @classmethod
    def truncated_stream(cls, after_chunks: int, *, text: str | None = None) -> Fault:
        """Stream a role chunk and `after_chunks` content chunks, then cut the connection.

        The body is chunk-encoded and the closing chunk is never sent, so the client
        sees a protocol-level truncation, as when a proxy or the provider dies mid-
        answer. A non-streaming request gets a drop.
        """
        return cls(kind="truncated_stream", after_chunks=after_chunks, text=text or _CUT_TEXT)

    @classmethod
    def reset(cls, after_chunks: int = 0, *, text: str | None = None) -> Fault:
        """Reset the TCP connection (RST, not a clean close), after streaming a role chunk
        and `after_chunks` content chunks when the request streams (else at once).

        Clients see a connection *reset* (ECONNRESET) rather than a closed stream, as when
        a load balancer or a crashed server process drops the connection.
        """
        return cls(kind="reset", after_chunks=after_chunks, text=text or _CUT_TEXT)

    @classmethod
    def unfinished_stream(cls, after_chunks: int, *, text: str | None = None) -> Fault:
        """Stream a role chunk and `after_chunks` content chunks, then end the response
        *cleanly* (closing chunk sent) with no finish reason and no `[DONE]`.

        Nothing fails at the HTTP level: only the missing finish reason shows the answer
        was cut (a proxy ending a long response, a server restarting). A non-streaming
        request gets a drop.
        """
        return cls(kind="unfinished_stream", after_chunks=after_chunks, text=text or _CUT_TEXT)

    @classmethod
    def invalid_tool_json(cls, *, name: str = "get_weather") -> Fault:
        """A tool call whose `arguments` string is not valid JSON (small models do this)."""
        return cls(kind="invalid_tool_json", tool_name=name)


@dataclass(frozen=True, kw_only=True)
class RecordedRequest:
    """One request as it arrived: headers lower-cased, body parsed if it was JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


Responder = Callable[[dict[str, Any]], "Reply | Fault"]
"""A reply computed from the request body (the parsed JSON of one chat completion): a
scripted *server* that behaves by rule rather than from a list, e.g. one that answers
``response_format`` requests with JSON and others with text."""

Script = Reply | Fault | Responder
"""One queued item: each chat-completions request consumes one."""
