"""Health and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from tierflow.server.deps import ServerDep

router = APIRouter(tags=["system"])


@router.get("/ok")
async def ok() -> dict[str, bool]:
    return {"ok": True}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(srv: ServerDep) -> PlainTextResponse:
    return PlainTextResponse(
        srv.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
