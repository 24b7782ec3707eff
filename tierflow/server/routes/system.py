"""Health and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from tierflow.server.deps import ServerDep
from tierflow.server.metrics import CONTENT_TYPE

router = APIRouter(tags=["system"])


@router.get("/ok")
async def ok() -> dict[str, bool]:
    return {"ok": True}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(srv: ServerDep) -> PlainTextResponse:
    """The server's OpenTelemetry metrics in the Prometheus text format."""
    return PlainTextResponse(srv.metrics.render(), media_type=CONTENT_TYPE)
