"""One run, executed: the compiled graph (``Runner.compile``) streamed with the modes the
client asked for, its events published as SSE events, its status and run record stored.

The same steps as ``Runner.ask`` (a run ticket in the config, the thread check, the
runner's durability, ``sync`` by default, the record from the final state), with
LangGraph's stream modes passed through instead of tierflow's progress events.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from typing import Any, Protocol

from langchain_core.messages import AIMessage, BaseMessage, BaseMessageChunk, ToolMessage

from tierflow.budget import BudgetExceeded
from tierflow.errors import TierflowError, UserError
from tierflow.runner.control import check_thread, read_thread
from tierflow.runner.decisions import resume_command
from tierflow.runner.runner import Runner
from tierflow.server.metrics import ServerMetrics
from tierflow.server.schemas import RunCreate
from tierflow.server.store import RunRow, Store
from tierflow.server.wire import Deferred, event_data, jsonable
from tierflow.telemetry import finish_workflow, format_trace_id, workflow_span


class Host(Protocol):
    """What a run needs of the server (``service.Server`` is one; a worker process of
    ``tierflow worker`` is another)."""

    runner: Runner
    store: Store
    metrics: ServerMetrics


class Sink(Protocol):
    """Where a run's events go: a ``RunStream`` in this process, or the store's
    ``run_events`` for a run executed by a worker process."""

    async def publish(self, event: str, data: Any) -> None: ...

    async def close(self) -> None: ...


def run_body(run: RunRow) -> RunCreate:
    """The run's request body again, from what the store kept of it (a worker process
    executes runs it did not receive)."""
    kept = {k: run.kwargs.get(k) for k in ("input", "command", "stream_mode")}
    return RunCreate.model_validate(
        {"assistant_id": run.assistant_id, **{k: v for k, v in kept.items() if v is not None}}
    )


def graph_modes(modes: list[str]) -> list[str]:
    """LangGraph's stream modes for the API's: values always (the final state)."""
    out = ["values"]
    if "updates" in modes:
        out.append("updates")
    if "custom" in modes:
        out.append("custom")
    if "messages" in modes or "messages-tuple" in modes:
        out.append("messages")
    return out


def graph_inputs(body: RunCreate, interrupts: Any) -> Any:
    """What to pass to ``astream``: the input, or a ``Command`` resuming the interrupts
    (``resume_command``: one decision per tool call, per interrupt, or for all)."""
    if body.command is None:
        return body.input
    return resume_command(interrupts, body.command.resume)


def close_dangling(messages: list[Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` preceded by an error result for each tool call of the conversation that
    has none (its run was cancelled mid-call), so no provider sees a call without result."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    closing = [
        ToolMessage(
            content="ERROR (cancelled): the run was interrupted before this call finished",
            tool_call_id=call["id"],
            name=call["name"],
            status="error",
            artifact={"ok": False, "error": {"type": "cancelled", "message": "run interrupted"}},
        )
        for m in messages
        if isinstance(m, AIMessage)
        for call in m.tool_calls
        if call["id"] not in answered
    ]
    if not closing:
        return inputs
    return {**inputs, "messages": [*closing, *(inputs.get("messages") or [])]}


def api_message(message: str) -> str:
    """The thread check's advice, told in API terms rather than CLI flags."""
    message = message.replace("--approve or --reject", "a run whose command is a resume")
    cli = message.find("continue it first with: tierflow ask")
    if cli >= 0:
        message = message[:cli] + "continue it first with a run whose input is null"
    return message.replace("ask a question", "give an input")


class _Messages:
    """LangGraph ``messages`` chunks as the SDK's ``messages`` mode (metadata, then the
    message so far) and ``messages-tuple`` mode (``[message, metadata]``)."""

    def __init__(self, modes: list[str]) -> None:
        self.tuples = "messages-tuple" in modes
        self.partial = "messages" in modes
        self._sofar: dict[str, BaseMessage] = {}

    async def publish(self, stream: Sink, chunk: Any) -> None:
        message, meta = chunk
        if self.tuples:
            await stream.publish("messages", jsonable([message, meta]))
        if not self.partial:
            return
        key = str(message.id)
        if key not in self._sofar:
            await stream.publish("messages/metadata", {key: {"metadata": jsonable(meta)}})
        if isinstance(message, BaseMessageChunk):
            before = self._sofar.get(key)
            merged = before + message if isinstance(before, BaseMessageChunk) else message
            self._sofar[key] = merged
            await stream.publish("messages/partial", jsonable([merged]))
        else:
            self._sofar[key] = message
            await stream.publish("messages/complete", jsonable([message]))


async def execute(
    server: Host,
    run: RunRow,
    body: RunCreate,
    stream: Sink,
    *,
    after_interrupt: bool,
    attempt: int = 1,
) -> None:
    """Run ``run`` to its end, publishing on ``stream``; never raises but cancellation.

    ``attempt`` > 1 is the same run again after its worker died (``tierflow worker``): the
    question was given already, so an unfinished thread is continued from its last
    checkpoint (completed steps, tool calls included, are not repeated), and a graph
    that had finished only gets its record.
    """
    runner = server.runner
    graph, thread_id = run.assistant_id, run.thread_id
    started = time.monotonic()
    status, record, error = "error", None, None
    try:
        await server.store.set_run_status(run.run_id, "running")
        await stream.publish("metadata", {"run_id": run.run_id, "attempt": attempt})
        with server.metrics.metering(), workflow_span(graph, thread_id, runner.settings) as span:
            # The thread's lease, as the Runner and the CLI take it: a run of another
            # process (a `tierflow ask --thread`, another server or worker) on this
            # thread goes first; a dead worker's lease expires after [state] lease_ttl_s.
            async with runner.hold(thread_id, "wait"):
                app = runner.compile(graph, runner.checkpointer)
                config = runner.run_config(thread_id, run_id=run.run_id)
                saved = await runner.checkpointer.aget_tuple(config)
                thread = await read_thread(app, config, saved)
                snapshot = await app.aget_state(config) if thread.status == "paused" else None
                inputs = graph_inputs(body, snapshot.interrupts if snapshot else ())
                done = False
                if attempt > 1 and thread.status == "unfinished":
                    inputs = None  # continue the run the dead worker left
                elif attempt > 1 and thread.status == "idle":
                    values = (await app.aget_state(config)).values
                    done = values.get("run_id") == run.run_id  # it finished, then the worker died
                # The interrupt strategy cancelled the thread's run on purpose: its question
                # may start over rather than refuse the cut-off run.
                if after_interrupt and thread.status == "unfinished" and isinstance(inputs, dict):
                    values = (await app.aget_state(config)).values
                    inputs = close_dangling(values.get("messages") or [], inputs)
                elif not done:
                    check_thread(thread_id, thread, inputs)
                stopped: str | None = None
                if done:
                    state: dict[str, Any] | None = (await app.aget_state(config)).values
                else:
                    state, stopped = await _drive(app, inputs, config, body, stream, runner)
                result = await runner.finish(
                    graph, app, config, state, trace_id=format_trace_id(span), stopped=stopped
                )
                finish_workflow(span, result)
        status, record = "success", result.model_dump(mode="json")
    except asyncio.CancelledError:
        status, error = "interrupted", "cancelled"
        raise
    except UserError as exc:
        error = api_message(str(exc))
    except TierflowError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a run's failure is the run's, never the server's
        error = f"internal error: {type(exc).__name__}: {exc}"
    finally:
        await asyncio.shield(
            _settle(server, run, stream, status, record, error, time.monotonic() - started)
        )


async def _drive(
    app: Any, inputs: Any, config: Any, body: RunCreate, stream: Sink, runner: Runner
) -> tuple[dict[str, Any] | None, str | None]:
    """Stream the graph (at the runner's durability), publishing the modes asked; the
    final state, and why a budget stopped it (None if none did)."""
    messages = _Messages(body.modes)
    state: dict[str, Any] | None = None
    modes = graph_modes(body.modes)
    try:
        chunks = app.astream(inputs, config, stream_mode=modes, durability=runner.durability)
        async with aclosing(chunks):
            async for mode, chunk in chunks:
                if mode == "values":
                    state = chunk
                if mode == "messages":
                    await messages.publish(stream, chunk)
                elif mode in body.modes:
                    await stream.publish(mode, Deferred(event_data, mode, chunk))
    except BudgetExceeded as exc:
        return state, str(exc)
    return state, None


async def _settle(
    server: Host,
    run: RunRow,
    stream: Sink,
    status: str,
    record: dict[str, Any] | None,
    error: str | None,
    seconds: float,
) -> None:
    await server.store.set_run_status(run.run_id, status, record=record, error=error)
    await server.store.touch_thread(run.thread_id)
    server.metrics.run_finished(status, seconds)
    if status == "error":
        await stream.publish("error", {"error": "RunError", "message": error or "failed"})
    await stream.close()
