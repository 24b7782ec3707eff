"""Typed run events: what :meth:`tierflow.Runner.stream` yields.

Each is a pydantic model with a ``type`` literal, so a consumer can ``match`` on the class
or serialise it as JSON (the server streams the same shapes)::

    async for event in runner.stream("How many orders came from France?"):
        match event:
            case NodeStarted(node=node, tier=tier):
                print(f"{node} on {tier}")
            case Token(text=text):
                print(text, end="")
            case RunFinished(record=record):
                print(record.status)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tierflow.budget import BudgetExceeded
from tierflow.record import RunRecord


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NodeStarted(_Event):
    type: Literal["node_started"] = "node_started"
    node: str
    tier: str


class NodeFinished(_Event):
    type: Literal["node_finished"] = "node_finished"
    node: str
    tier: str
    backend: str | None = None
    route: str | None = None  # a routing node's decision
    plan: list[str] | None = None  # a planner's steps


class ToolCallEvent(_Event):
    type: Literal["tool_call"] = "tool_call"
    node: str
    tool: str
    id: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)


class ToolResultEvent(_Event):
    type: Literal["tool_result"] = "tool_result"
    node: str
    tool: str
    id: str | None = None
    ok: bool


class Token(_Event):
    type: Literal["token"] = "token"
    node: str | None = None
    text: str


class Blocked(_Event):
    type: Literal["blocked"] = "blocked"
    stage: str
    reason: str | None = None


class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    record: RunRecord


RunEvent = Annotated[
    NodeStarted | NodeFinished | ToolCallEvent | ToolResultEvent | Token | Blocked | RunFinished,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)


def parse_event(raw: dict[str, Any]) -> RunEvent | None:
    """The typed event for a progress dict (``{"event": ..., ...}``); None if unknown."""
    kind = raw.get("event")
    try:
        return _ADAPTER.validate_python({**raw, "type": kind})
    except ValueError:
        return None


#: Receives a run's raw progress events (``Runner.ask(on_event=...)``).
EventHandler = Callable[[dict[str, Any]], None]


async def consume(stream: Any, on_event: EventHandler | None) -> tuple[dict[str, Any], str | None]:
    """Drain a graph stream: forward events; the last full state, and why a budget
    stopped the run (None if none did: the state is then the final one)."""
    state: dict[str, Any] = {}
    try:
        async for mode, chunk in stream:
            if mode == "values":
                state = chunk
            elif on_event is None:
                continue
            elif mode == "custom":
                on_event(chunk)
            else:
                message, meta = chunk
                # Only what a model produced (it carries ls_model_type), not the copies
                # nodes write to the state.
                from_model = "ls_model_type" in meta
                if from_model and isinstance(message, AIMessage) and message.content:
                    node = meta.get("langgraph_node")
                    on_event({"event": "token", "node": node, "text": message.content})
    except BudgetExceeded as exc:
        return state, str(exc)
    return state, None


async def events_of(run: Callable[[EventHandler], Awaitable[RunRecord]]) -> AsyncIterator[RunEvent]:
    """The typed events of ``run(on_event)`` as they happen, then :class:`RunFinished`
    with its record (``Runner.stream``). Leaving the loop early cancels the run."""
    queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()

    def forward(raw: dict[str, Any]) -> None:
        event = parse_event(raw)
        if event is not None:
            queue.put_nowait(event)

    async def drive() -> RunRecord:
        try:
            return await run(forward)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(drive())
    try:
        while (event := await queue.get()) is not None:
            yield event
        yield RunFinished(record=await task)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
