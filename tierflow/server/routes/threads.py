"""Threads: create, get, search, update metadata, delete, state, history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from tierflow.server.deps import Caller, ServerDep
from tierflow.server.schemas import HistoryRequest, ThreadCreate, ThreadPatch, ThreadSearch

router = APIRouter(prefix="/threads", tags=["threads"])


@router.post("")
async def create_thread(body: ThreadCreate, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    row = await srv.store.create_thread(body.thread_id, body.metadata, owner)
    if row is None:  # the id exists
        if body.if_exists == "raise":
            raise HTTPException(409, f"thread '{body.thread_id}' already exists")
        row = await srv.thread(str(body.thread_id), owner)
    return await srv.thread_view(row)


@router.post("/search")
async def search_threads(body: ThreadSearch, srv: ServerDep, owner: Caller) -> list[dict[str, Any]]:
    metadata = body.metadata or {}
    rows = await srv.store.search_threads(metadata, body.ids, body.limit + body.offset, 0)
    views = [await srv.thread_view(r) for r in rows if owner is None or r.owner == owner]
    if body.status:
        views = [v for v in views if v["status"] == body.status]
    return views[body.offset : body.offset + body.limit]


@router.get("/{thread_id}")
async def get_thread(thread_id: str, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    return await srv.thread_view(await srv.thread(thread_id, owner))


@router.patch("/{thread_id}")
async def update_thread(
    thread_id: str, body: ThreadPatch, srv: ServerDep, owner: Caller
) -> dict[str, Any]:
    await srv.thread(thread_id, owner)
    await srv.store.update_thread(thread_id, body.metadata)
    return await srv.thread_view(await srv.thread(thread_id, owner))


@router.delete("/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, srv: ServerDep, owner: Caller) -> Response:
    await srv.thread(thread_id, owner)
    if await srv.thread_busy(thread_id):
        raise HTTPException(409, f"thread '{thread_id}' has a run in progress; cancel it first")
    # The row first: a crash in between leaves unreachable checkpoints, never a thread
    # that lost its conversation.
    await srv.store.delete_thread(thread_id)
    await srv.runner.checkpointer.adelete_thread(thread_id)
    return Response(status_code=204)


@router.get("/{thread_id}/state")
async def get_state(thread_id: str, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    return await srv.state_view(await srv.thread(thread_id, owner))


@router.post("/{thread_id}/history")
async def get_history(
    thread_id: str, body: HistoryRequest, srv: ServerDep, owner: Caller
) -> list[dict[str, Any]]:
    return await srv.history(await srv.thread(thread_id, owner), body.limit, body.before)
