"""What went wrong with one request to a backend, in one classifier (private).

Import these names from :mod:`tierflow.resilience`.

The errors come from three HTTP stacks: langchain-openai wraps the ``openai`` SDK (which
runs on ``httpx2``, a copy of httpx with its own exception classes) and raises
``openai.APIStatusError`` / ``APIConnectionError`` / ``APITimeoutError`` subclasses whose
``__cause__`` chain ends at the transport error; langchain-mistralai raises plain
``httpx.HTTPStatusError`` for a status and lets ``httpx`` transport errors through.
Transport errors are therefore matched by class *name* within the httpx family (httpx and
httpx2 share the names), and the openai classes only when ``openai`` is already imported
(if it is not, no error can be one of its classes), so this module imports no SDK.
"""

from __future__ import annotations

import email.utils
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from typing import Any


class FailureKind(StrEnum):
    """The classes of failure the resilience layers act on differently."""

    CONNECT = "connect"  # refused, unreachable, DNS, connect timeout: nothing is listening
    TIMEOUT = "timeout"  # connected, but no answer in time (read/write/pool, the deadline)
    DROPPED = "dropped"  # the connection closed or reset mid-answer, a truncated stream
    RATE_LIMITED = "rate_limited"  # HTTP 429
    SERVER = "server"  # HTTP 5xx, 408, 409
    AUTH = "auth"  # HTTP 401, 403: a wrong or revoked key
    CLIENT = "client"  # other 4xx: this request is wrong, the backend is fine
    INVALID_RESPONSE = "invalid_response"  # malformed JSON, no choices, bad tool-call JSON
    ERROR = "error"  # anything else


#: Worth another request to the same backend.
RETRYABLE = frozenset(
    {
        FailureKind.CONNECT,
        FailureKind.TIMEOUT,
        FailureKind.DROPPED,
        FailureKind.RATE_LIMITED,
        FailureKind.SERVER,
    }
)
#: Says nothing about the backend's health (the request itself was wrong).
NEUTRAL = frozenset({FailureKind.CLIENT})

_RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True, kw_only=True)
class Failure:
    """One failed request, classified."""

    kind: FailureKind
    reason: str  # "<ErrorType>: <first line of the message>", for records and traces
    error_type: str
    status_code: int | None = None
    retry_after_s: float | None = None  # what the server asked for (Retry-After)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    @property
    def counts_against_backend(self) -> bool:
        """Whether the circuit breaker counts it as a failure of the backend."""
        return self.kind not in NEUTRAL


class InvalidResponse(ValueError):
    """A backend answered 200 with something that is not a usable chat completion."""


class StreamCut(ConnectionError):
    """A streamed answer ended cleanly at the HTTP level but without its finish reason:
    the stream was cut (a proxy timing out, a server restarting). Classified ``dropped``."""


def check_response(message: Any, *, streamed: bool, can_fall_back: bool) -> None:
    """Raise if a 200 answer is not usable (then it is a failure of that backend).

    - no content, no tool call and no finish reason: an empty choice list read as a
      usage-only message (langchain-openai does so when streaming);
    - streamed text without a finish reason: a stream cut short (:class:`StreamCut`);
    - tool calls whose arguments are not valid JSON, while another backend can take the
      call. On the last backend they go to the agent, which tells the model (a turn the
      model can repair beats no turn).
    """
    meta = getattr(message, "response_metadata", None) or {}
    finished = bool(meta.get("finish_reason") or meta.get("stop_reason"))
    calls = getattr(message, "tool_calls", None) or []
    invalid = getattr(message, "invalid_tool_calls", None) or []
    text = getattr(message, "text", "")
    if not finished and not text and not calls and not invalid:
        raise InvalidResponse("empty response: no choices, no content, no tool call")
    if streamed and not finished:
        raise StreamCut("the stream ended without a finish reason (cut off)")
    if invalid and can_fall_back:
        names = ", ".join(str(c.get("name")) for c in invalid)
        raise InvalidResponse(f"invalid tool-call JSON from the model ({names})")


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """``Type: first line`` (at most 200 characters of it), plus the root cause when an SDK
    wrapped it (``OpenAIConnectionError: Connection error.`` alone says little)."""
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    if root is exc or type(root) is type(exc) or str(root) == str(exc):
        return _line(exc)
    return f"{_line(exc)} ({_line(root)})"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date.

    Returns ``None`` for a missing or unreadable value; a date in the past is ``0``.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT ("-0000" parses as naive)
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_from(headers: Mapping[str, str] | Any, *, now: float | None = None) -> float | None:
    """The wait a response asks for: ``retry-after-ms`` (OpenAI) or ``Retry-After``."""
    try:
        millis = headers.get("retry-after-ms")
        plain = headers.get("retry-after")
    except AttributeError:
        return None
    if millis is not None:
        try:
            value = float(millis)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value / 1000)
    return parse_retry_after(plain, now=now)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        # As Python shows a traceback: the explicit cause, else the implicit context.
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause


def _httpx_names(exc: BaseException) -> set[str]:
    """Class names in ``exc``'s MRO that come from httpx or httpx2."""
    return {
        cls.__name__
        for cls in type(exc).__mro__
        if cls.__module__.split(".")[0].startswith("httpx")
    }


def _status_of(exc: BaseException) -> tuple[int, Any] | None:
    openai = sys.modules.get("openai")
    if openai is not None and isinstance(exc, openai.APIStatusError):
        return int(exc.status_code), exc.response.headers
    if "HTTPStatusError" in _httpx_names(exc):
        response = getattr(exc, "response", None)
        if response is not None:
            return int(response.status_code), response.headers
    return None


def _kind_of_status(code: int) -> FailureKind:
    if code in (401, 403):
        return FailureKind.AUTH
    if code == 429:
        return FailureKind.RATE_LIMITED
    if code >= 500 or code in _RETRYABLE_STATUS:
        return FailureKind.SERVER
    return FailureKind.CLIENT


def _kind_of_transport(exc: BaseException) -> FailureKind | None:
    names = _httpx_names(exc)
    if names & {"ConnectError", "ConnectTimeout", "UnsupportedProtocol", "ProxyError"}:
        return FailureKind.CONNECT
    if "TimeoutException" in names:  # ReadTimeout, WriteTimeout, PoolTimeout
        return FailureKind.TIMEOUT
    if names & {"RemoteProtocolError", "ReadError", "WriteError", "CloseError", "NetworkError"}:
        return FailureKind.DROPPED
    if names & {"DecodingError", "StreamError"}:
        return FailureKind.INVALID_RESPONSE
    if isinstance(exc, StreamCut | ConnectionResetError | BrokenPipeError):
        return FailureKind.DROPPED
    if isinstance(exc, ConnectionRefusedError | ConnectionAbortedError):
        return FailureKind.CONNECT
    if isinstance(exc, ConnectionError):
        return FailureKind.CONNECT
    if isinstance(exc, TimeoutError):
        return FailureKind.TIMEOUT
    return None


def _kind_of_body(exc: BaseException) -> FailureKind | None:
    # Both clients index choices[0] unchecked (IndexError), let the JSON decoder's error
    # escape, and say "No generation chunks were returned" for a stream with no choices;
    # httpx-sse raises SSEError for a JSON body where a stream was expected.
    if isinstance(exc, json.JSONDecodeError | InvalidResponse | IndexError | KeyError):
        return FailureKind.INVALID_RESPONSE
    if type(exc).__module__.split(".")[0] == "httpx_sse":
        return FailureKind.INVALID_RESPONSE
    if isinstance(exc, ValueError) and "No generation chunks" in str(exc):
        return FailureKind.INVALID_RESPONSE
    openai = sys.modules.get("openai")
    if openai is not None and isinstance(exc, openai.APIResponseValidationError):
        return FailureKind.INVALID_RESPONSE
    return None


def classify(exc: BaseException, *, now: float | None = None) -> Failure:
    """Classify an error raised by one request to a backend (any SDK, any transport)."""
    reason, error_type = describe(exc), type(exc).__name__
    status = _status_of(exc)
    if status is not None:
        code, headers = status
        kind = _kind_of_status(code)
        after = retry_after_from(headers, now=now) if kind in RETRYABLE else None
        return Failure(
            kind=kind, reason=reason, error_type=error_type, status_code=code, retry_after_s=after
        )
    found: FailureKind | None = None
    for link in _chain(exc):  # the transport error may sit under SDK wrappers
        found = _kind_of_transport(link) or _kind_of_body(link)
        if found is not None:
            break
    openai = sys.modules.get("openai")
    if found is None and openai is not None and isinstance(exc, openai.APITimeoutError):
        found = FailureKind.TIMEOUT
    elif found is None and openai is not None and isinstance(exc, openai.APIConnectionError):
        found = FailureKind.DROPPED
    return Failure(kind=found or FailureKind.ERROR, reason=reason, error_type=error_type)
