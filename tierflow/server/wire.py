"""What goes on the wire: JSON for graph values (LangChain messages, interrupts, pydantic
and dataclass values) and the SSE framing ``langgraph-sdk`` parses (``event:``, ``data:``,
``id:``, a blank line)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel


class Deferred:
    """An event's data encoded on first use: a run's ``values`` and ``updates`` are kept
    for clients that may join its stream, but most runs (``runs.wait``) are never
    streamed, so encoding each chunk up front was work thrown away (measured in
    ``bench serve``'s profile of the API)."""

    __slots__ = ("_args", "_fn", "_value")

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._fn, self._args = fn, args
        self._value: Any = _UNSET

    def value(self) -> Any:
        if self._value is _UNSET:
            self._value, self._args = self._fn(*self._args), ()
        return self._value


_UNSET: Any = object()


def resolved(data: Any) -> Any:
    """``data``, with a :class:`Deferred` encoded."""
    return data.value() if isinstance(data, Deferred) else data


def _default(obj: Any) -> Any:
    if isinstance(obj, Deferred):
        return obj.value()
    if isinstance(obj, BaseModel):  # LangChain messages are pydantic models
        return obj.model_dump()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    return str(obj)  # anything else is shown, never a 500


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_default, ensure_ascii=False)


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (for FastAPI responses)."""
    return json.loads(dumps(obj))


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One server-sent event. Data is one line: JSON never holds a raw newline."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {dumps(data)}\n\n".encode()


def interrupts(values: Any) -> list[dict[str, Any]]:
    """The interrupts a LangGraph ``__interrupt__`` entry holds, as ``{value, id}``."""
    return [{"value": jsonable(i.value), "id": i.id} for i in values or ()]


#: State keys never sent: the placeholder vault maps ``<EMAIL_1>`` back to the value a
#: guardrail redacted, which is what the redaction keeps out of every other output.
WITHHELD = frozenset({"guard_vault"})


def update_values(update: Any) -> Any:
    """A node update (``updates`` mode, a task's result) without the withheld keys."""
    if not isinstance(update, Mapping):
        return jsonable(update)
    return {
        k: update_values(v) if k != "__interrupt__" else interrupts(v)
        for k, v in update.items()
        if k not in WITHHELD
    }


def state_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A graph state as the API shows it (``__interrupt__`` as ``{value, id}`` dicts,
    without the withheld keys)."""
    shown = {k: v for k, v in values.items() if k != "__interrupt__" and k not in WITHHELD}
    out = dict(jsonable(shown))
    if values.get("__interrupt__"):
        out["__interrupt__"] = interrupts(values["__interrupt__"])
    return out


def event_data(mode: str, chunk: Any) -> Any:
    """A ``values``, ``updates`` or ``custom`` chunk of the graph's stream as sent."""
    if mode == "values":
        return state_values(chunk)
    if mode == "updates":
        return update_values(chunk)
    return jsonable(chunk)
