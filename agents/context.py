"""Fitting a request into the answering model's context window.

Each backend knows its window (``Backend.context_window``: the embedded model's
``n_ctx``, the configured vLLM window, known values for hosted models). Before a request,
older history and tool results are dropped, oldest first, with
``langchain_core.messages.trim_messages``; the system prompt, the current question and
the latest tool result (with the call that asked for it) are never dropped. A request
whose pinned messages alone do not fit raises :class:`ContextOverflow`, one clear line,
instead of a 400 from the server.

Tokens are estimated, not counted: one token per 3 characters plus 4 per message. A real
count needs each model's tokenizer (the embedded server's ``/tokenize`` is a request per
message); the estimate errs on the large side for English and JSON, so a trimmed request
fits.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)

from tierflow.errors import RunError
from tierflow.models.backends import Backend

__all__ = ["ContextOverflow", "estimate_tokens", "fit_messages", "window_of"]

#: Room kept for what the request adds to the messages (a tool catalogue, a schema).
OVERHEAD_TOKENS = 300


class ContextOverflow(RunError):
    """The request does not fit the model's context window even after trimming."""


def estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    total = 0
    for m in messages:
        text = m.content if isinstance(m.content, str) else str(m.content)
        if isinstance(m, AIMessage) and m.tool_calls:
            text += str(m.tool_calls)
        total += (len(text) + 2) // 3 + 4
    return total


def window_of(backend: Backend | None) -> int | None:
    """The token budget of a request to ``backend`` (its window less its reply cap)."""
    if backend is None or backend.context_window is None:
        return None
    return max(backend.context_window - backend.reply_tokens - OVERHEAD_TOKENS, 0)


def _pinned(messages: Sequence[BaseMessage]) -> set[int]:
    """Indexes never dropped: the system prompt, the current question (the last human
    turn), the latest tool result and the turn that called it."""
    keep: set[int] = set()
    if messages and isinstance(messages[0], SystemMessage):
        keep.add(0)
    humans = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
    if humans:
        keep.add(humans[-1])
    tools = [i for i, m in enumerate(messages) if isinstance(m, ToolMessage)]
    if tools:
        last = messages[tools[-1]]
        assert isinstance(last, ToolMessage)
        keep.add(tools[-1])
        for i in range(tools[-1] - 1, -1, -1):
            m = messages[i]
            if isinstance(m, AIMessage) and any(c["id"] == last.tool_call_id for c in m.tool_calls):
                keep.add(i)
                # its other results belong with it (a provider rejects a call without one)
                ids = {c["id"] for c in m.tool_calls}
                keep |= {
                    j
                    for j, t in enumerate(messages)
                    if isinstance(t, ToolMessage) and t.tool_call_id in ids
                }
                break
    return keep


def _consistent(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Drop tool results whose call was trimmed, and calls whose results were."""
    calls = {c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    results = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    out: list[BaseMessage] = []
    for m in messages:
        if isinstance(m, ToolMessage) and m.tool_call_id not in calls:
            continue
        if isinstance(m, AIMessage) and any(c["id"] not in results for c in m.tool_calls):
            continue
        out.append(m)
    return out


def fit_messages(messages: Sequence[BaseMessage], budget: int | None) -> list[BaseMessage]:
    """``messages`` trimmed, oldest first, to ``budget`` tokens (``None``: unchanged)."""
    messages = list(messages)
    if budget is None or estimate_tokens(messages) <= budget:
        return messages
    keep = _pinned(messages)
    pinned_tokens = estimate_tokens([messages[i] for i in sorted(keep)])
    if pinned_tokens > budget:
        raise ContextOverflow(
            f"the request needs about {pinned_tokens} tokens for the instructions, the "
            f"question and the latest tool result, more than the model's window allows "
            f"({budget} after room for the reply): ask a shorter question, or use a model "
            "with a larger window"
        )
    rest = [m for i, m in enumerate(messages) if i not in keep]
    kept = trim_messages(
        rest,
        max_tokens=budget - pinned_tokens,
        token_counter=estimate_tokens,
        strategy="last",
        allow_partial=False,
    )
    kept_ids = {id(m) for m in kept}
    return _consistent([m for i, m in enumerate(messages) if i in keep or id(m) in kept_ids])
