"""Runs on a thread: create (background), wait, stream, get, list, cancel, join, join the
stream, and the tierflow run record (``GET .../runs/{run_id}/record``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.responses import StreamingResponse

from tierflow.server.deps import Caller, ServerDep
from tierflow.server.schemas import STREAM_MODES, RunCreate
from tierflow.server.service import Server, not_found
from tierflow.server.store import RunRow
from tierflow.server.stream import RunStream
from tierflow.server.wire import sse

router = APIRouter(prefix="/threads/{thread_id}/runs", tags=["runs"])


def _where(run: RunRow, then: str = "") -> dict[str, str]:
    """The SDK reads the run id from Content-Location (``on_run_created``) and, when a
    response is cut off, reconnects to Location (``join`` for wait, the run's stream with
    ``Last-Event-ID`` for a stream)."""
    at = f"/threads/{run.thread_id}/runs/{run.run_id}"
    return {"Content-Location": at, **({"Location": f"{at}/{then}"} if then else {})}


async def _run(srv: Server, thread_id: str, run_id: str, owner: str | None) -> RunRow:
    await srv.thread(thread_id, owner)
    run = await srv.store.get_run(thread_id, run_id)
    if run is None:
        raise not_found(f"run '{run_id}'")
    return run


async def _final(srv: Server, run: RunRow) -> dict[str, Any]:
    """What ``runs.wait`` and ``runs.join`` return: the thread's values after the run
    (with ``__interrupt__`` when it waits for approval), or ``__error__``."""
    fresh = await srv.store.get_run(run.thread_id, run.run_id)
    if fresh is not None and fresh.status == "error":
        return {"__error__": {"error": "RunError", "message": fresh.error}}
    return await srv.final_values(run.assistant_id, run.thread_id)


#: Seconds without an event before a heartbeat comment (which the SDK skips).
HEARTBEAT_S = 10.0


def _frames(stream: RunStream, modes: list[str] | None, after: int = 0) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        async for event in stream.follow(modes, after, idle=HEARTBEAT_S):
            yield b": heartbeat\n\n" if event is None else sse(event.event, event.data, event.id)

    return frames()


def _sse(stream: RunStream, modes: list[str] | None, after: int = 0) -> StreamingResponse:
    return StreamingResponse(
        _frames(stream, modes, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


@router.post("")
async def create_run(
    thread_id: str, body: RunCreate, srv: ServerDep, owner: Caller, response: Response
) -> dict[str, Any]:
    run = await srv.create_run(thread_id, body, owner)
    response.headers.update(_where(run))
    return run.to_api()


@router.post("/wait")
async def wait_run(
    thread_id: str, body: RunCreate, srv: ServerDep, owner: Caller, response: Response
) -> dict[str, Any]:
    run = await srv.create_run(thread_id, body, owner)
    response.headers.update(_where(run, "join"))
    await srv.join(run.run_id)
    return await _final(srv, run)


@router.post("/stream")
async def stream_run(
    thread_id: str, body: RunCreate, srv: ServerDep, owner: Caller
) -> StreamingResponse:
    run = await srv.create_run(thread_id, body, owner)
    stream = srv.worker.stream(run.run_id)
    assert stream is not None  # just submitted
    if body.on_disconnect == "cancel":
        return _cancel_on_disconnect(srv, run, stream, body.modes)
    response = _sse(stream, body.modes)
    response.headers.update(_where(run, "stream"))
    return response


def _cancel_on_disconnect(
    srv: Server, run: RunRow, stream: RunStream, modes: list[str]
) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for frame in _frames(stream, modes):
                yield frame
            finished = True
        finally:
            if not finished:  # the client went away first
                await srv.worker.cancel(run.run_id)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", **_where(run, "stream")},
    )


@router.get("")
async def list_runs(
    thread_id: str,
    srv: ServerDep,
    owner: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: str | None = None,
) -> list[dict[str, Any]]:
    await srv.thread(thread_id, owner)
    return [r.to_api() for r in await srv.store.list_runs(thread_id, limit, offset, status)]


@router.get("/{run_id}")
async def get_run(thread_id: str, run_id: str, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    return (await _run(srv, thread_id, run_id, owner)).to_api()


@router.get("/{run_id}/record")
async def get_record(thread_id: str, run_id: str, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    """The tierflow run record (``tierflow ask --json``'s contract) of a finished run."""
    run = await _run(srv, thread_id, run_id, owner)
    if run.record is None:
        why = run.error or f"the run is {run.status}"
        raise HTTPException(409, f"run '{run_id}' has no record ({why})")
    return run.record


@router.post("/{run_id}/cancel", status_code=202)
async def cancel_run(
    thread_id: str,
    run_id: str,
    srv: ServerDep,
    owner: Caller,
    wait: bool = False,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> Response:
    """Cancel a pending or running run; its completed steps stay checkpointed (``rollback``
    is accepted and does the same: checkpoints are never deleted by a cancel)."""
    run = await _run(srv, thread_id, run_id, owner)
    if not await srv.worker.cancel(run.run_id, wait=wait):
        raise HTTPException(409, f"run '{run_id}' is not pending or running ({run.status})")
    return Response(status_code=204 if wait else 202)


@router.get("/{run_id}/join")
async def join_run(thread_id: str, run_id: str, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    run = await _run(srv, thread_id, run_id, owner)
    await srv.join(run.run_id)
    return await _final(srv, run)


@router.get("/{run_id}/stream")
async def join_stream(
    thread_id: str,
    run_id: str,
    srv: ServerDep,
    owner: Caller,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The run's events from its start (or after ``Last-Event-ID``) until it ends, in the
    modes asked (default: those the run was created with)."""
    run = await _run(srv, thread_id, run_id, owner)
    stream = srv.worker.stream(run.run_id)
    if stream is None:
        raise HTTPException(409, f"run '{run_id}' has no stream left ({run.status})")
    modes = [m for m in stream_mode or [] if m] or list(_modes(run))
    for mode in modes:
        if mode not in STREAM_MODES:
            raise HTTPException(422, f"stream_mode: '{mode}' is not supported")
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return _sse(stream, modes, after)


def _modes(run: RunRow) -> list[str]:
    asked = run.kwargs.get("stream_mode") or "values"
    return [asked] if isinstance(asked, str) else [str(m) for m in asked]
