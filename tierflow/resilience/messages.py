"""A conversation in the shape every provider accepts (private; see :mod:`tierflow.resilience`).

Agents store tool-call ids of 9 alphanumerics (``agents/_recover.new_call_id``), which both
OpenAI and Mistral accept. A conversation can still hold other ids: one begun by a graph
node of the builder's own, a history carried in from elsewhere, OpenAI's ``call_...`` ids.
Mistral's API refuses those (HTTP 422), and so does vLLM serving a Mistral model, so
before each request the tier rewrites every non-conforming id, deterministically, so a
call and its result keep matching across requests and providers. ChatMistralAI does a
similar rewrite, but the OpenAI client (used for vLLM) sends ids as they are.

Tool results whose content is not a string (content blocks, objects) become text, which
every provider takes in a ``tool`` message.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

_NEUTRAL_ID = re.compile(r"^[A-Za-z0-9]{9}$")
_ALNUM = string.ascii_letters + string.digits


def neutral_call_id(call_id: str) -> str:
    """``call_id`` itself if it is 9 alphanumerics, else a stable 9-character digest."""
    if _NEUTRAL_ID.match(call_id):
        return call_id
    n = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, rem = divmod(n, 62)
        out.append(_ALNUM[rem])
    return "".join(out)


def _neutral(call_id: str | None) -> str | None:
    return neutral_call_id(call_id) if call_id else call_id


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text") for b in content
    ):
        return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)
    return json.dumps(content, default=str)


def _needs_rewrite(message: BaseMessage) -> bool:
    if isinstance(message, ToolMessage):
        return not _NEUTRAL_ID.match(message.tool_call_id) or not isinstance(message.content, str)
    if isinstance(message, AIMessage):
        ids = [c.get("id") or "" for c in message.tool_calls]
        ids += [c.get("id") or "" for c in message.invalid_tool_calls]
        raw = message.additional_kwargs.get("tool_calls") or []
        ids += [str(c.get("id") or "") for c in raw if isinstance(c, dict)]
        return any(i and not _NEUTRAL_ID.match(i) for i in ids)
    return False


def _rewrite(message: BaseMessage) -> BaseMessage:
    if isinstance(message, ToolMessage):
        return message.model_copy(
            update={
                "tool_call_id": neutral_call_id(message.tool_call_id),
                "content": _text(message.content),
            }
        )
    assert isinstance(message, AIMessage)
    update: dict[str, Any] = {
        "tool_calls": [{**c, "id": _neutral(c.get("id"))} for c in message.tool_calls],
        "invalid_tool_calls": [
            {**c, "id": _neutral(c.get("id"))} for c in message.invalid_tool_calls
        ],
    }
    raw = message.additional_kwargs.get("tool_calls")
    if isinstance(raw, list):
        fixed = [
            {**c, "id": neutral_call_id(str(c["id"]))} if isinstance(c, dict) and c.get("id") else c
            for c in raw
        ]
        update["additional_kwargs"] = {**message.additional_kwargs, "tool_calls": fixed}
    return message.model_copy(update=update)


def normalise_messages(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` with provider-neutral tool-call ids and text tool results."""
    return [_rewrite(m) if _needs_rewrite(m) else m for m in messages]
