"""Checkpoint retention (``[state] keep_days``, ``keep_threads``): which threads to drop
from a SQLite or PostgreSQL checkpointer, and the background task that drops them.

A thread's age is that of its newest checkpoint. LangGraph's checkpoint ids are UUIDv6,
whose text sorts by creation time, so "idle for N days" is one comparison with an id made
for the cutoff time: no column to add to LangGraph's tables. The threads are deleted with
the saver's own ``adelete_thread`` (its checkpoints, blobs and pending writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from tierflow.errors import UserError
from tierflow.runner.saver import open_saver
from tierflow.runner.sqlite_saver import OneHopSqliteSaver
from tierflow.settings import StateSettings, TierflowSettings

log = logging.getLogger(__name__)

# 100-ns intervals between the Gregorian epoch (UUID time) and the Unix epoch.
_GREGORIAN_OFFSET = 0x01B21DD213814000


def cutoff_id(when: float) -> str:
    """The prefix of a UUIDv6 made at ``when`` (Unix seconds): every checkpoint id made
    earlier sorts below it, every one made later above it (to 0.4 ms)."""
    ticks = int(when * 10_000_000) + _GREGORIAN_OFFSET
    high = f"{(ticks >> 12) & 0xFFFF_FFFF_FFFF:012x}"
    return f"{high[:8]}-{high[8:12]}-"


def retains(state: StateSettings) -> bool:
    """Whether ``[state]`` asks for any retention."""
    return state.keep_days > 0 or state.keep_threads > 0


def _queries(postgres: bool) -> tuple[str, str]:
    table, mark = ("checkpoints", "%s" if postgres else "?")
    old = f"SELECT thread_id FROM {table} GROUP BY thread_id HAVING max(checkpoint_id) < {mark}"
    # SQLite needs a LIMIT before an OFFSET (-1: none); PostgreSQL takes OFFSET alone.
    limit = "" if postgres else " LIMIT -1"
    extra = (
        f"SELECT thread_id FROM {table} GROUP BY thread_id "
        f"ORDER BY max(checkpoint_id) DESC{limit} OFFSET {mark}"
    )
    return old, extra


async def _expired_sqlite(saver: OneHopSqliteSaver, state: StateSettings) -> set[str]:
    old, extra = _queries(postgres=False)
    cutoff = cutoff_id(_cutoff(state))

    def read() -> set[str]:
        found: set[str] = set()
        with saver.cursor(transaction=False) as cur:
            if state.keep_days > 0:
                found.update(str(row[0]) for row in cur.execute(old, (cutoff,)))
            if state.keep_threads > 0:
                found.update(str(row[0]) for row in cur.execute(extra, (state.keep_threads,)))
        return found

    return await saver.call(read)


async def _expired_postgres(saver: Any, state: StateSettings) -> set[str]:
    old, extra = _queries(postgres=True)
    found: set[str] = set()
    async with saver.conn.connection() as conn:  # the saver's pool (dict rows)
        if state.keep_days > 0:
            rows = await (await conn.execute(old, (cutoff_id(_cutoff(state)),))).fetchall()
            found.update(str(row["thread_id"]) for row in rows)
        if state.keep_threads > 0:
            rows = await (await conn.execute(extra, (state.keep_threads,))).fetchall()
            found.update(str(row["thread_id"]) for row in rows)
    return found


def _cutoff(state: StateSettings) -> float:
    return time.time() - state.keep_days * 86_400


def prunable(saver: BaseCheckpointSaver[Any] | None) -> bool:
    """Whether retention applies to ``saver`` (tierflow's SQLite and PostgreSQL savers)."""
    if isinstance(saver, OneHopSqliteSaver):
        return True
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:  # the postgres extra is not installed
        return False
    return isinstance(saver, AsyncPostgresSaver)


async def prune(saver: BaseCheckpointSaver[Any], state: StateSettings) -> int:
    """Delete the threads ``state``'s retention no longer keeps; how many were deleted."""
    if not retains(state) or not prunable(saver):
        return 0
    if isinstance(saver, OneHopSqliteSaver):
        expired = await _expired_sqlite(saver, state)
    else:
        expired = await _expired_postgres(saver, state)
    for thread_id in sorted(expired):
        await saver.adelete_thread(thread_id)
    return len(expired)


async def prune_forever(saver: BaseCheckpointSaver[Any], state: StateSettings) -> None:
    """Prune now, then every ``prune_every_s``, until cancelled (a failed round is
    logged and retried at the next)."""
    while True:
        try:
            deleted = await prune(saver, state)
            if deleted:
                log.info("checkpoint retention: deleted %d threads", deleted)
        except Exception as exc:  # a busy or unreachable database: try again later
            log.warning("checkpoint retention failed: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(state.prune_every_s)


def start_pruning(
    saver: BaseCheckpointSaver[Any] | None, state: StateSettings
) -> asyncio.Task[None] | None:
    """:func:`prune_forever` as a background task, if retention applies (else None).
    A task rather than an async context manager: a runner left open when its loop ends
    must leave no async generator for the loop to finalise."""
    if saver is None or not retains(state) or not prunable(saver):
        return None
    return asyncio.create_task(prune_forever(saver, state), name="tierflow-retention")


async def stop_pruning(task: asyncio.Task[None]) -> None:
    """Cancel the task of :func:`start_pruning` and wait for it."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def prune_store(
    settings: TierflowSettings, keep_days: float | None = None, keep_threads: int | None = None
) -> int:
    """Prune the checkpointer ``settings`` name once (``tierflow state prune``); the
    options override ``[state]``. Threads deleted."""
    state = settings.state.model_copy(
        update={
            k: v
            for k, v in (("keep_days", keep_days), ("keep_threads", keep_threads))
            if v is not None
        }
    )
    if not retains(state):
        raise UserError(
            "no retention to apply: set [state] keep_days or keep_threads (or pass them)"
        )
    kind = state.saver_kind
    if kind not in ("sqlite", "postgres"):
        raise UserError(f'retention applies to the sqlite and postgres checkpointers, not "{kind}"')
    async with open_saver(settings, settings.state_dir / "checkpoints.sqlite") as saver:
        assert saver is not None
        return await prune(saver, state)
