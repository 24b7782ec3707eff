"""The FastAPI application: ``create_app(runner)`` wires the store, the worker and the
routes, and the guards every request passes (body size, errors as one-line JSON)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierflow import database
from tierflow.errors import UserError
from tierflow.runner import Runner
from tierflow.server.auth import load_api_keys, require_key, use_api_keys
from tierflow.server.deps import caller
from tierflow.server.routes import assistants, console, runs, system, threads
from tierflow.server.service import Server
from tierflow.server.store import SqliteStore, Store
from tierflow.server.worker import Worker
from tierflow.settings import TierflowSettings

log = logging.getLogger("tierflow.server")


_FROM_ENV: Any = object()


def create_app(
    runner: Runner, *, worker: Worker | None = None, api_keys: Any = _FROM_ENV
) -> FastAPI:
    """The API over ``runner``'s graphs, tiers and checkpointer (opened by the app).

    Threads and runs live in ``<state_dir>/server.sqlite``, or in PostgreSQL with
    ``[state] database_url`` (checkpoints too, migrated at start); runs execute on ``worker``
    (default: in this process). ``api_keys`` (default: ``TIERFLOW_API_KEYS``; ``None``: no
    authentication) are the keys a request must send as ``x-api-key``; each thread then
    belongs to the key that created it.
    """
    runner.require_checkpoints("the server (its threads and runs)")
    keys: frozenset[str] | None = load_api_keys() if api_keys is _FROM_ENV else api_keys
    settings = runner.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_store(settings) as store:
            # Worker processes own their runs and outlive the API; in-process runs died with
            # the server that ran them.
            if worker is None and settings.server.worker == "inprocess":
                left = await store.abandon_unfinished()
                if left:
                    log.warning("%d run(s) left unfinished by a stopped server marked error", left)
            async with runner:
                srv = Server(runner, store, worker)
                await srv.worker.open()
                app.state.server = srv
                try:
                    yield
                finally:
                    await srv.worker.close()

    app = FastAPI(
        title="tierflow",
        summary="Agent Protocol / LangGraph Server API over tierflow graphs",
        lifespan=lifespan,
    )
    use_api_keys(app, keys)
    app.dependency_overrides[caller] = require_key
    for module in (system, assistants, threads, runs):
        app.include_router(module.router)
    app.include_router(console.router)  # what `tierflow ui` needs beyond the Agent Protocol
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimit, limit=settings.server.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse(
            {"message": message, "detail": _jsonable_errors(errors)}, status_code=422
        )

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        status = 404 if type(exc).__name__ == "UnknownGraph" else 409
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500
        )

    return app


@asynccontextmanager
async def open_store(settings: TierflowSettings) -> AsyncIterator[Store]:
    """The server's store: PostgreSQL (migrated) with ``[state] database_url``, else
    ``<state_dir>/server.sqlite``."""
    store: Store
    if settings.state.url:
        database.drivers()  # a one-line error naming the extra, before psycopg's import
        from tierflow.server.postgres import PostgresStore

        store = await PostgresStore.connect(settings.state)
    else:
        sqlite = SqliteStore(settings.state_dir / "server.sqlite")
        await sqlite.open()
        store = sqlite
    try:
        yield store
    finally:
        await store.close()


def _field(loc: Any) -> str:
    """``("body", "assistant_id")`` -> ``assistant_id``; a whole-body error -> ``body``."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": str(e["msg"]), "type": e["type"]} for e in errors]


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        # Read the body here (it is small by definition) so an undeclared one that runs
        # over is a 413 too, not a parse error further in.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, for streaming responses

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = b'{"detail": "request body too large (limit %d bytes)"}' % limit
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
