"""A run's event stream: every SSE event it produced, kept for the run's lifetime so any
number of clients can follow it (the creating request, ``join_stream``, a reconnect with
``Last-Event-ID``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    id: int
    event: str  # "values", "updates", "messages", "messages/partial", "custom", ...
    data: Any


#: The SDK's stream modes to the event names each produces.
MODE_EVENTS = {
    "values": ("values",),
    "updates": ("updates",),
    "custom": ("custom",),
    "messages-tuple": ("messages",),
    "messages": ("messages/metadata", "messages/partial", "messages/complete"),
}
ALWAYS = ("metadata", "error", "end")


class RunStream:
    """Append-only events plus a condition that wakes each follower."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._closed = False
        self._changed = asyncio.Condition()

    @property
    def closed(self) -> bool:
        return self._closed

    async def publish(self, event: str, data: Any) -> None:
        async with self._changed:
            self._events.append(Event(len(self._events) + 1, event, data))
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def follow(
        self, modes: Collection[str] | None = None, after: int = 0, *, idle: float | None = None
    ) -> AsyncIterator[Event | None]:
        """Events after id ``after`` until the run ends; only those of ``modes`` (None:
        all). With ``idle``, ``None`` after each ``idle`` seconds without an event: the
        caller sends a heartbeat, so proxies keep a long model call's stream open."""
        wanted = None if modes is None else {e for m in modes for e in MODE_EVENTS.get(m, ())}
        seen = after
        while True:
            quiet = False
            async with self._changed:
                try:
                    async with asyncio.timeout(idle):
                        while len(self._events) <= seen and not self._closed:
                            await self._changed.wait()
                except TimeoutError:
                    quiet = True
                fresh, done = self._events[seen:], self._closed
            if quiet and not fresh:
                yield None
                continue
            for event in fresh:
                seen = event.id
                if wanted is None or event.event in wanted or event.event in ALWAYS:
                    yield event
            if done and seen >= len(self._events):
                return
