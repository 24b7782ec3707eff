"""Wire-format builders for the scripted server (private).

Kept apart from the HTTP plumbing so the exact JSON shapes the real providers emit
live in one place: when OpenAI or Mistral change a field, only this file moves. Every
function here is pure (no sockets, no locks) and returns plain JSON-ready dicts.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Flavor = Literal["openai", "mistral"]
"""Which provider's response shape to imitate."""

JSONDict = dict[str, Any]

_ALNUM = string.ascii_letters + string.digits
MISTRAL_TOOL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
"""The real Mistral API rejects any other tool-call id; clients must normalise."""

SYSTEM_FINGERPRINT = "fp_scripted"


@dataclass(frozen=True, kw_only=True)
class WireToolCall:
    """A tool call with its id already chosen, ready to serialise."""

    id: str
    name: str
    arguments: str


def _random_alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def new_tool_call_id(flavor: Flavor) -> str:
    """Ids shaped like the real provider's, so id-normalisation code gets realistic input."""
    return _random_alnum(9) if flavor == "mistral" else "call_" + _random_alnum(24)


def new_completion_id(flavor: Flavor) -> str:
    """Completion ids as each provider formats them (Mistral: 32 hex chars)."""
    return secrets.token_hex(16) if flavor == "mistral" else "chatcmpl-" + _random_alnum(29)


def usage(prompt_tokens: int, completion_tokens: int) -> JSONDict:
    """The `usage` object both providers share; clients map it to `usage_metadata`."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def split_text(text: str, pieces: int = 4) -> list[str]:
    """Split into at most `pieces` word-aligned parts that concatenate back to `text`.

    Several pieces (rather than one) make clients exercise their chunk-merging code.
    """
    words = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    if len(words) <= pieces:
        return words
    size = -(-len(words) // pieces)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _envelope(flavor: Flavor, cid: str, obj: str, model: str, created: int) -> JSONDict:
    body: JSONDict = {"id": cid, "object": obj, "created": created, "model": model}
    if flavor == "openai":
        body["system_fingerprint"] = SYSTEM_FINGERPRINT
    return body


def _tool_call_json(flavor: Flavor, index: int, call: WireToolCall) -> JSONDict:
    out: JSONDict = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    if flavor == "mistral":
        out["index"] = index
    return out


def completion(
    flavor: Flavor,
    *,
    model: str,
    content: str | None,
    tool_calls: Sequence[WireToolCall],
    usage_obj: JSONDict,
    empty_choices: bool = False,
) -> JSONDict:
    """A non-streaming `chat.completion` body."""
    body = _envelope(flavor, new_completion_id(flavor), "chat.completion", model, int(time.time()))
    message: JSONDict = {
        "role": "assistant",
        "content": content,
        "tool_calls": [_tool_call_json(flavor, i, c) for i, c in enumerate(tool_calls)] or None,
    }
    if flavor == "openai":
        message["refusal"] = None
    choice: JSONDict = {
        "index": 0,
        "message": message,
        "finish_reason": "tool_calls" if tool_calls else "stop",
    }
    if flavor == "openai":
        choice["logprobs"] = None
    body["choices"] = [] if empty_choices else [choice]
    body["usage"] = usage_obj
    return body


def _chunker(flavor: Flavor, model: str) -> Callable[[JSONDict], JSONDict]:
    """A factory of chunks sharing one id and timestamp, as one real stream does."""
    cid, created = new_completion_id(flavor), int(time.time())

    def chunk(delta: JSONDict) -> JSONDict:
        body = _envelope(flavor, cid, "chat.completion.chunk", model, created)
        choice: JSONDict = {"index": 0, "delta": delta, "finish_reason": None}
        if flavor == "openai":
            choice["logprobs"] = None
        body["choices"] = [choice]
        return body

    return chunk


def stream_chunks(
    flavor: Flavor,
    *,
    model: str,
    content: str | None,
    tool_calls: Sequence[WireToolCall],
    usage_obj: JSONDict,
    include_usage: bool,
) -> list[JSONDict]:
    """The `chat.completion.chunk` objects of one streamed answer, without `[DONE]`.

    OpenAI streams each tool call as a header delta (index, id, name) followed by
    argument fragments, and sends usage in a trailing chunk with `choices: []`.
    Mistral sends each tool call whole in one delta and puts usage on the final
    chunk (langchain-mistralai skips chunks without choices, as the real API never
    sends them).
    """
    chunk = _chunker(flavor, model)
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in split_text(content or "")]
    for i, call in enumerate(tool_calls):
        if flavor == "mistral":
            chunks.append(chunk({"tool_calls": [_tool_call_json(flavor, i, call)]}))
            continue
        head = {"index": i, "id": call.id, "type": "function"}
        head["function"] = {"name": call.name, "arguments": ""}
        chunks.append(chunk({"tool_calls": [head]}))
        for frag in split_text(call.arguments, pieces=3):
            chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}))
    final = chunk({} if flavor == "openai" else {"content": ""})
    final["choices"][0]["finish_reason"] = "tool_calls" if tool_calls else "stop"
    chunks.append(final)
    if flavor == "mistral":
        final["usage"] = usage_obj
    elif include_usage:
        tail = chunk({})
        tail["choices"] = []
        tail["usage"] = usage_obj
        chunks.append(tail)
    return chunks


def truncated_chunks(flavor: Flavor, *, model: str, text: str, after_chunks: int) -> list[JSONDict]:
    """The start of a stream that gets cut off: a role chunk, then `after_chunks` words."""
    words = re.findall(r"\S+\s*", text) or ["x "]
    chunk = _chunker(flavor, model)
    pieces = [words[i % len(words)] for i in range(after_chunks)]
    return [chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in pieces]


def error(flavor: Flavor, message: str, *, kind: str = "invalid_request_error") -> JSONDict:
    """An error body in the provider's own shape."""
    if flavor == "mistral":
        return {"object": "error", "message": message, "type": kind, "param": None, "code": None}
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def unauthorized(flavor: Flavor) -> JSONDict:
    """The 401 body each provider returns for a wrong or missing API key."""
    if flavor == "mistral":
        return {"message": "Unauthorized", "request_id": secrets.token_hex(16)}
    return {
        "error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }


def bad_mistral_tool_ids(body: Any) -> list[str]:
    """Tool-call ids in a request's messages that the real Mistral API would refuse."""
    bad: list[str] = []
    messages = body.get("messages") if isinstance(body, dict) else None
    for msg in messages if isinstance(messages, list) else []:
        if not isinstance(msg, dict):
            continue
        ids = [tc.get("id") for tc in msg.get("tool_calls") or [] if isinstance(tc, dict)]
        if msg.get("role") == "tool":
            ids.append(msg.get("tool_call_id"))
        bad += [str(i) for i in ids if i is not None and not MISTRAL_TOOL_ID.match(str(i))]
    return bad


def models_list(names: Sequence[str]) -> JSONDict:
    """The `GET /models` body."""
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "scripted"} for n in names]
    return {"object": "list", "data": data}
