"""``tierflow batch --server URL``: each question through a ``tierflow serve`` (or any
server speaking the same API) with ``langgraph-sdk``.

Each line is one ``runs.wait`` on a new thread (or the line's ``thread_id``, created if
missing) with the graph name as the assistant; its tierflow record comes from
``GET /threads/{id}/runs/{run_id}/record``. A 429 (a full queue) waits for its
``Retry-After`` and asks again; the run was never created, so nothing runs twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import httpx

from tierflow.errors import RunError, UserError
from tierflow.runner.batch.items import (
    BatchItem,
    BatchOptions,
    OnResult,
    Result,
    failed_result,
    record_result,
)
from tierflow.runner.batch.local import bounded

#: The longest a 429's Retry-After is honoured; a missing one waits a second.
MAX_RETRY_AFTER_S = 60.0


def retry_after(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return 1.0
        seconds = when - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


async def run_remote(items: Sequence[BatchItem], options: BatchOptions, write: OnResult) -> None:
    try:
        from langgraph_sdk import get_client
    except ImportError:
        raise UserError(
            "tierflow batch --server needs langgraph-sdk: pip install langgraph-sdk"
        ) from None
    assert options.server is not None
    async with get_client(url=options.server, api_key=options.api_key) as client:
        try:
            await client.http.get("/ok")
        except httpx.HTTPError as exc:
            raise RunError(f"cannot reach the server at {options.server}: {_why(exc)}") from None
        await bounded(items, options.concurrency, partial(_one, client, options), write)


async def _polite(call: Any) -> Any:
    """``call()``, again after each 429's Retry-After (the run was not created)."""
    while True:
        try:
            return await call()
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 429:
                raise
            await asyncio.sleep(retry_after(exc.response.headers.get("retry-after")))


async def _one(client: Any, options: BatchOptions, item: BatchItem) -> Result:
    """One line: a thread, a run waited for, and the run's record."""
    try:
        if item.thread_id is None:
            thread = await _polite(lambda: client.threads.create())
        else:
            thread = await _polite(
                lambda: client.threads.create(thread_id=item.thread_id, if_exists="do_nothing")
            )
        thread_id = str(thread["thread_id"])
        created: dict[str, str] = {}
        question: dict[str, Any] = {"messages": [{"role": "user", "content": item.question}]}
        values = await _polite(
            lambda: client.runs.wait(
                thread_id,
                item.graph or options.graph,
                input=question,
                raise_error=False,
                on_run_created=lambda meta: created.update(run_id=str(meta["run_id"])),
            )
        )
        error = values.get("__error__") if isinstance(values, dict) else None
        if error:
            return failed_result(item, f"line {item.line}: {error.get('message', error)}")
        if "run_id" not in created:
            return failed_result(item, f"line {item.line}: the server named no run")
        path = f"/threads/{thread_id}/runs/{created['run_id']}/record"
        record = await _polite(lambda: client.http.get(path))
    except httpx.HTTPError as exc:
        return failed_result(item, f"line {item.line}: {_why(exc)}")
    return record_result(item, record, options.full)


def _why(exc: httpx.HTTPError) -> str:
    """One line for an HTTP failure: the status and the server's message."""
    if isinstance(exc, httpx.HTTPStatusError):
        message = getattr(exc, "message", None) or exc.response.text[:200]
        return f"HTTP {exc.response.status_code}: {message}"
    return f"{type(exc).__name__}: {exc}".strip()
