"""What the Streamlit console (``tierflow ui``) needs beyond the Agent Protocol, under
``/console``: answer feedback (kept with the run, and sent to its trace), the backends
table of ``tierflow doctor``, the guardrail playground, document upload into the
retrieval index, and the settings the console shows (trace links, run budget).

Every route takes the caller (API keys): a thread of another key is a 404, as elsewhere.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from tierflow.server.deps import Caller, ServerDep
from tierflow.server.service import not_found
from tierflow.telemetry import tracer

router = APIRouter(prefix="/console", tags=["console"])

#: Where feedback lives: the thread's metadata, one entry per run id (a thread's metadata
#: is kept by every store, SQLite and PostgreSQL, with no schema change).
FEEDBACK_KEY = "feedback"
#: Upload types the retrieval loaders read.
DOCUMENT_TYPES = (".md", ".markdown", ".txt", ".pdf")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Feedback(_Body):
    score: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class GuardCheck(_Body):
    text: str = Field(max_length=50_000)
    stage: Literal["input", "tool_call", "tool_result", "output"]


@router.get("/info")
async def info(srv: ServerDep, owner: Caller) -> dict[str, Any]:
    """What the console shows beside answers: the trace UI and the run budget."""
    settings = srv.runner.settings
    return {
        "jaeger_ui_url": settings.telemetry.jaeger_ui_url,
        "budget": settings.budget.model_dump(),
        "graphs": srv.runner.graph_names(),
    }


@router.post("/threads/{thread_id}/runs/{run_id}/feedback")
async def feedback(
    thread_id: str, run_id: str, body: Feedback, srv: ServerDep, owner: Caller
) -> dict[str, Any]:
    """Thumbs up/down (and a comment) on a run's answer: kept in the thread's metadata
    under ``feedback.<run_id>``, and sent to the run's trace as a ``feedback`` span event."""
    row = await srv.thread(thread_id, owner)
    run = await srv.store.get_run(thread_id, run_id)
    if run is None:
        raise not_found(f"run '{run_id}'")
    entry = {"score": body.score, "comment": body.comment, "at": time.time()}
    kept = dict(row.metadata.get(FEEDBACK_KEY) or {})
    kept[run_id] = entry
    await srv.store.update_thread(thread_id, {FEEDBACK_KEY: kept})
    trace_id = str((run.record or {}).get("trace_id") or "")
    traced = (
        _trace_event(trace_id, run_id, body) if srv.runner.settings.telemetry.enabled else False
    )
    return {**entry, "run_id": run_id, "traced": traced}


def _trace_event(trace_id: str, run_id: str, body: Feedback) -> bool:
    """A ``tierflow.feedback`` span in the run's trace, holding a ``feedback`` event.

    The run's spans ended with the run, so the event goes on a new span whose parent is
    the trace (a remote context with the run's trace id): Jaeger shows it in that trace."""
    try:
        tid = int(trace_id, 16)
    except ValueError:
        return False
    if tid == 0:
        return False
    parent = trace.SpanContext(
        trace_id=tid,
        span_id=secrets.randbits(64) or 1,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    with tracer().start_as_current_span("tierflow.feedback", context=context) as span:
        if not span.is_recording():
            return False
        attributes: dict[str, str] = {"tierflow.run_id": run_id, "feedback.score": body.score}
        if body.comment:
            attributes["feedback.comment"] = body.comment
        span.add_event("feedback", attributes)
    return True


@router.get("/backends")
async def backends(srv: ServerDep, owner: Caller) -> dict[str, Any]:
    """``tierflow doctor --json``, live: each backend's state, its tiers, its breaker."""
    from tierflow.models.probe import backend_table

    return await backend_table(srv.runner.settings, srv.runner.tiers)


@router.post("/guard")
async def guard(body: GuardCheck, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    """The guardrail playground: ``text`` through every guardrail ``stage`` runs here, one
    verdict per guardrail (``tierflow guard`` prints their combined result)."""
    from tierflow.guardrails.base import GuardContext, PlaceholderVault, run_stage
    from tierflow.guardrails.builtin import guardrails_for_stage

    cfg = srv.runner.settings.guardrails
    names = list(getattr(cfg.stages, body.stage)) if cfg.enabled else []
    vault = PlaceholderVault()
    verdicts = []
    for g in guardrails_for_stage(names, cfg):
        one = await run_stage([g], body.text, GuardContext(stage=body.stage, vault=vault))
        verdicts.append({"name": g.name, **_shown(one.as_dict())})
    combined = await run_stage(
        guardrails_for_stage(names, cfg), body.text, GuardContext(stage=body.stage)
    )
    return {"stage": body.stage, "verdicts": verdicts, "result": _shown(combined.as_dict())}


def _shown(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k in ("action", "reason", "text", "findings")}


@router.post("/documents")
async def upload(
    request: Request,
    srv: ServerDep,
    owner: Caller,
    name: Annotated[str, Query(min_length=1, max_length=200)],
) -> dict[str, Any]:
    """One document (the raw request body; ``name`` gives its type) into the retrieval
    index the ``retrieve`` tool searches. It is read and chunked before anything is
    written, so a bad file leaves the index as it was."""
    from tierflow.tools.retrieval.loaders import UnreadableDocument, chunk_document

    filename = Path(name).name
    if Path(filename).suffix.lower() not in DOCUMENT_TYPES:
        raise HTTPException(415, f"'{filename}': expected one of {', '.join(DOCUMENT_TYPES)}")
    data = await request.body()
    if not data:
        raise HTTPException(422, f"'{filename}' is empty")
    try:
        chunks = await asyncio.to_thread(chunk_document, filename, data)
    except UnreadableDocument as exc:
        raise HTTPException(422, f"'{filename}' cannot be read: {exc}") from None
    if not chunks:
        raise HTTPException(422, f"'{filename}' holds no text")
    folder = srv.runner.settings.tools.retrieval.docs_dir
    if folder is None:
        raise HTTPException(
            409, "uploads need a document folder: set tools.retrieval.docs_dir (TIERFLOW_DOCS_DIR)"
        )
    await asyncio.to_thread(_store, Path(folder), filename, data)
    return {"name": filename, "chunks": len(chunks), "folder": str(folder)}


def _store(folder: Path, filename: str, data: bytes) -> None:
    """Write the file whole or not at all (a temp file renamed): ``retrieve`` indexes the
    folder before each search, so it never sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, delete=False, prefix=".upload-") as tmp:
        tmp.write(data)
    Path(tmp.name).replace(folder / filename)
